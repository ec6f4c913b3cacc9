"""Faults a real atelierd survives, with a plugin that fails on request (tests/plugins/fault.c): an error fails only
its job, naming the plugin; a hang past --plugin-hook-timeout fails the job naming the plugin and hook, ends queued
jobs UNAVAILABLE and exits 70 for the supervisor; a crash names the plugin in the log before the process dies; under
a supervisor that restarts the daemon (as examples/systemd's Restart=on-failure does), the Python client and the
CLI resubmit the interrupted job once with the same seed and get their image.

Run by ctest with ATELIER_DAEMON (the atelierd binary) and PYTHONPATH (clients/python) set."""

import os
import resource
import signal
import socket
import subprocess
import tempfile
import threading
import time
import unittest

import grpc

from atelier_client import AtelierError, Artifact, Client, Finished, Queued
from daemon_process import DaemonProcess

BUILD = os.path.dirname(os.environ["ATELIER_DAEMON"])
CLI = os.path.join(BUILD, "atelier")
FAULT_PLUGIN = os.path.join(BUILD, "tests", "plugins", "test_fault.so")
THROWS_PLUGIN = os.path.join(BUILD, "tests", "plugins", "test_throws.so")


def fault_args(mode, marker=""):
    return {"fault": {"args": [{"mode": mode, "marker": marker}]}}


class PluginsDir:
    """A plugins folder holding only the fault plugin and the one that throws."""

    def __init__(self):
        self.tmp = tempfile.TemporaryDirectory()
        os.symlink(FAULT_PLUGIN, os.path.join(self.tmp.name, "fault.so"))
        os.symlink(THROWS_PLUGIN, os.path.join(self.tmp.name, "throws.so"))
        self.path = self.tmp.name


class Supervisor:
    """Runs atelierd on a fixed port and starts it again whenever it exits abnormally, like systemd's
    Restart=on-failure; counts the starts."""

    def __init__(self, plugins, models):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self.args = [os.environ["ATELIER_DAEMON"], "--listen", self.address, "--models-dir", models,
                     "--plugins-dir", plugins, "--dtype", "float32"]
        self.tmp = tempfile.TemporaryDirectory()
        self.log_path = os.path.join(self.tmp.name, "log")
        self.starts, self.exits = 0, []
        self.stopping = False
        self.process = None
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()

    def loop(self):
        with open(self.log_path, "a") as log:
            while not self.stopping:
                self.process = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=log)
                self.starts += 1
                code = self.process.wait()
                self.exits.append(code)
                if code == 0:
                    return
                time.sleep(0.5)

    def log(self):
        with open(self.log_path) as f:
            return f.read()

    def stop(self):
        self.stopping = True
        self.process.terminate()
        self.thread.join(timeout=60)
        self.tmp.cleanup()


class DiskFullTest(unittest.TestCase):
    def test_a_full_outputs_dir_loses_nothing(self):
        """--outputs-dir on a full disk (RLIMIT_FSIZE: writes past 1 KiB fail as they would with ENOSPC): the client
        still gets every file, hears that saving failed, and no half-written file is left."""
        with tempfile.TemporaryDirectory() as tmp:
            outputs = os.path.join(tmp, "outputs")

            def limit_file_size():
                resource.setrlimit(resource.RLIMIT_FSIZE, (1024, 1024))
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            process = subprocess.Popen([os.environ["ATELIER_DAEMON"], "--listen", "127.0.0.1:0", "--models-dir",
                                        os.path.join(tmp, "none"), "--cache-dir", os.path.join(tmp, "cache"),
                                        "--outputs-dir", outputs, "--dtype", "float32"], stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, text=True, preexec_fn=limit_file_size)
            log = []
            threading.Thread(target=lambda: log.extend(process.stderr), daemon=True).start()
            try:
                address = process.stdout.readline().split()[-1]
                with Client(address) as c:
                    job = c.txt2img("a red circle", steps=3, seed=5, batch_size=2,
                                    alwayson_scripts={"export": {"args": [{"enabled": True, "formats": ["GIF", "TXT"]}]}})
                    events = list(job)
                artifacts = {e.name: e for e in events if isinstance(e, Artifact)}
                self.assertEqual(sorted(artifacts), ["5.gif", "5.txt"])
                self.assertGreater(len(artifacts["5.gif"].data), 1024)
                finished = [e for e in events if isinstance(e, Finished)][0]
                self.assertTrue(any("'5.gif' was not saved" in w and "sent to you" in w for w in finished.warnings),
                                finished.warnings)
                self.assertFalse(any(tmp in w for w in finished.warnings))  # the daemon's paths stay in its log
                day_dirs = os.path.join(outputs, "txt2img-images", "AnimateDiff")
                saved = [n for d in os.listdir(day_dirs) for n in os.listdir(os.path.join(day_dirs, d))]
                self.assertEqual(saved, ["00000-5.txt"])
            finally:
                process.terminate()
                self.assertEqual(process.wait(timeout=30), 0)
            self.assertTrue(any("cannot write" in line and "5.gif" in line for line in log))


class PluginFaultTest(unittest.TestCase):
    def setUp(self):
        self.plugins = PluginsDir()

    def test_an_error_fails_only_its_job(self):
        daemon = DaemonProcess(extra_args=("--plugins-dir", self.plugins.path))
        try:
            with Client(daemon.address) as c:
                with self.assertRaises(AtelierError) as raised:
                    c.txt2img("a red circle", steps=2, alwayson_scripts=fault_args("error")).wait()
                self.assertIn("fault", raised.exception.details)
                self.assertIn("asked to fail", raised.exception.details)
                self.assertEqual(len(c.txt2img("a red circle", steps=2).wait()), 1)
                # A C++ exception thrown across the C ABI: the job fails naming the plugin, the daemon serves on.
                with self.assertRaises(AtelierError) as raised:
                    c.txt2img("a red circle", steps=2, alwayson_scripts={"throws": {"args": []}}).wait()
                self.assertIn("throws", raised.exception.details)
                self.assertIn("the throws plugin threw", raised.exception.details)
                self.assertEqual(len(c.txt2img("a red circle", steps=2).wait()), 1)
        finally:
            self.assertEqual(daemon.stop(), 0)

    def test_a_hang_fails_the_job_naming_the_plugin_and_exits_for_a_restart(self):
        daemon = DaemonProcess(extra_args=("--plugins-dir", self.plugins.path, "--plugin-hook-timeout", "2"))
        with Client(daemon.address, retry_interrupted=False) as c:
            hung = c.txt2img("a red circle", steps=2, alwayson_scripts=fault_args("hang"))
            events = iter(hung)
            self.assertIsInstance(next(events), Queued)
            behind = c.txt2img("a blue square", steps=2)
            started = time.time()
            with self.assertRaises(AtelierError) as raised:
                for _ in events:
                    pass
            self.assertEqual(raised.exception.code, grpc.StatusCode.DEADLINE_EXCEEDED)
            self.assertIn("plugin 'fault' did not return from its 'process' hook in 2 s", raised.exception.details)
            self.assertLess(time.time() - started, 30)
            with self.assertRaises(AtelierError) as raised:
                behind.wait()
            self.assertEqual(raised.exception.code, grpc.StatusCode.UNAVAILABLE)
        self.assertEqual(daemon.process.wait(timeout=30), 70)
        self.assertIn("--plugin-hook-timeout", daemon.log_text())
        daemon.tmp.cleanup()

    def test_a_crash_is_named_in_the_log(self):
        daemon = DaemonProcess(extra_args=("--plugins-dir", self.plugins.path))
        with Client(daemon.address, retry_interrupted=False) as c, self.assertRaises(AtelierError) as raised:
            c.txt2img("a red circle", steps=2, alwayson_scripts=fault_args("crash")).wait()
        self.assertEqual(raised.exception.code, grpc.StatusCode.UNAVAILABLE)
        self.assertEqual(daemon.process.wait(timeout=30), -11)
        self.assertIn("plugin 'fault' crashed (SIGSEGV) in its 'process' hook", daemon.log_text())
        daemon.tmp.cleanup()

    def test_clients_retry_a_job_interrupted_by_a_crash_once_with_its_seed(self):
        models = tempfile.TemporaryDirectory()
        supervisor = Supervisor(self.plugins.path, models.name)
        try:
            marker = os.path.join(models.name, "crashed-once")
            with Client(supervisor.address) as c:
                grpc.channel_ready_future(c._channel).result(timeout=60)
                job = c.txt2img("a red circle", steps=3, seed=1234, alwayson_scripts=fault_args("crash_once", marker))
                results = job.wait()
                self.assertTrue(job.retried)
                self.assertEqual([r.seed for r in results], [1234])
                # The same seed without the fault gives the same image: nothing was lost.
                again = c.txt2img("a red circle", steps=3, seed=1234).wait()
                self.assertEqual(again[0].image, results[0].image)
            self.assertEqual(supervisor.starts, 2)
            self.assertIn("plugin 'fault' crashed (SIGSEGV)", supervisor.log())

            marker_cli = os.path.join(models.name, "crashed-once-cli")
            out = os.path.join(models.name, "out")
            done = subprocess.run([CLI, "--server", supervisor.address, "txt2img", "-p", "a red circle", "--steps", "3",
                                   "--seed", "77", "--script",
                                   'fault={"args": [{"mode": "crash_once", "marker": "%s"}]}' % marker_cli,
                                   "-o", out, "-q"], capture_output=True, text=True, timeout=300)
            self.assertEqual(done.returncode, 0, done.stderr)
            self.assertIn("resubmitting it once with seed 77", done.stderr)
            self.assertEqual(len(os.listdir(out)), 1)
            self.assertEqual(supervisor.starts, 3)
        finally:
            supervisor.stop()
            models.cleanup()


if __name__ == "__main__":
    unittest.main()
