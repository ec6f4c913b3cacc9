"""examples/node: a Node client on @grpc/grpc-js that only loads the .proto files streams a job's previews and
result to files from a real daemon. Runs where node and npm are (scripts/setup installs Debian's); the packages come
from the npm registry (package-lock.json), installed into a temporary copy, so the test skips where the registry
cannot be reached."""

import os
import shutil
import subprocess
import tempfile
import unittest

from daemon_process import DaemonProcess

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
EXAMPLE = os.path.join(ROOT, "examples", "node")


@unittest.skipUnless(shutil.which("node") and shutil.which("npm"), "node and npm are not installed")
class NodeExampleTest(unittest.TestCase):
    def test_streams_previews_to_files(self):
        with tempfile.TemporaryDirectory() as tmp:
            work = os.path.join(tmp, "node")
            os.makedirs(work)
            for name in ("package.json", "package-lock.json", "preview_to_files.js"):
                shutil.copy(os.path.join(EXAMPLE, name), work)
            if os.path.isdir(os.path.join(EXAMPLE, "node_modules")):
                shutil.copytree(os.path.join(EXAMPLE, "node_modules"), os.path.join(work, "node_modules"))
            else:
                installed = subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=work,
                                           capture_output=True, text=True, timeout=300)
                if installed.returncode != 0:
                    self.skipTest("npm could not install @grpc/grpc-js: " + installed.stderr[-300:])
            daemon = DaemonProcess()
            try:
                out = os.path.join(tmp, "previews")
                run = subprocess.run(["node", os.path.join(work, "preview_to_files.js"), "--server", daemon.address,
                                      "--proto", os.path.join(ROOT, "proto"), "--out", out, "--steps", "5",
                                      "--seed", "9", "a red circle, blue background"],
                                     capture_output=True, text=True, timeout=120)
                self.assertEqual(run.returncode, 0, run.stderr)
                self.assertIn("step 5/5", run.stdout)
                self.assertIn("Seed: 9", run.stdout)
                files = sorted(os.listdir(out))
                self.assertIn("result-0.png", files)
                self.assertEqual(len([f for f in files if f.startswith("step-")]), 5)
                with open(os.path.join(out, "result-0.png"), "rb") as f:
                    self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")
                # A bad request comes back as the daemon's status, named.
                bad = subprocess.run(["node", os.path.join(work, "preview_to_files.js"), "--server", daemon.address,
                                      "--proto", os.path.join(ROOT, "proto"), "--out", out, "--steps", "0", "x"],
                                     capture_output=True, text=True, timeout=60)
                self.assertEqual(bad.returncode, 1)
                self.assertIn("INVALID_ARGUMENT", bad.stderr)
            finally:
                self.assertEqual(daemon.stop(), 0)


if __name__ == "__main__":
    unittest.main()
