"""A real atelier-web for the Python suites: started on 127.0.0.1:0 in front of a daemon, its base URL read from
its first stdout line, stopped cleanly."""

import os
import subprocess
import tempfile
import time

import requests


class GatewayProcess:
    def __init__(self, daemon_address, extra_args=(), listen="127.0.0.1:0"):
        self.log = tempfile.NamedTemporaryFile("w+", suffix=".log")
        self.process = subprocess.Popen([os.environ["ATELIER_WEB"], "--listen", listen, "--daemon",
                                         daemon_address, *extra_args], stdout=subprocess.PIPE, stderr=self.log,
                                        text=True)
        line = self.process.stdout.readline()
        assert line.startswith("atelier-web listening on "), line + self.log_text()
        self.url = line.split()[-1]

    def wait_reachable(self, timeout=30, auth=None):
        """Until the gateway has seen the daemon (its API answers 503 before)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if requests.get(self.url + "/sdapi/v1/samplers", auth=auth, timeout=10).status_code == 200:
                return
            time.sleep(0.1)
        raise AssertionError("the gateway never reached the daemon: " + self.log_text())

    def log_text(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def stop(self):
        self.process.terminate()
        code = self.process.wait(timeout=30)
        self.process.stdout.close()
        self.log.close()
        return code
