"""A real atelierd for the Python suites: started on 127.0.0.1:0 with an empty models folder (so it serves the
embedded model), its address read from its first stdout line, its log kept beside it, stopped cleanly."""

import os
import subprocess
import tempfile


class DaemonProcess:
    def __init__(self, prepare_models=None, extra_args=(), env=None, listen="127.0.0.1:0"):
        """`prepare_models(path)` may fill the models folder first (checkpoints, ControlNets). The suites compare
        with float32 goldens, so the daemon computes in float32 unless `extra_args` name a --dtype (auto would pick
        bfloat16 on CPUs with AVX512_BF16 or AMX)."""
        if "--dtype" not in extra_args:
            extra_args = ("--dtype", "float32", *extra_args)
        self.tmp = tempfile.TemporaryDirectory()
        models = os.path.join(self.tmp.name, "models")
        os.makedirs(models)
        if prepare_models is not None:
            prepare_models(models)
        self.models = models
        self.log = open(os.path.join(self.tmp.name, "atelierd.log"), "w")
        self.process = subprocess.Popen(
            [os.environ["ATELIER_DAEMON"], "--listen", listen, "--models-dir", models, "--cache-dir",
             os.path.join(self.tmp.name, "cache"), *extra_args], stdout=subprocess.PIPE, stderr=self.log, text=True,
            env=None if env is None else dict(os.environ, **env))
        line = self.process.stdout.readline()
        assert line.startswith("atelierd listening on "), line
        self.address = line.split()[-1]
        self.log_path = self.log.name

    def log_text(self):
        self.log.flush()
        with open(self.log_path) as f:
            return f.read()

    def stop(self):
        """Terminates the daemon; its exit code (0 after a clean drain)."""
        self.process.terminate()
        code = self.process.wait(timeout=30)
        self.process.stdout.close()
        self.log.close()
        self.tmp.cleanup()
        return code
