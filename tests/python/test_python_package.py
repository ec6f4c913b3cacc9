"""The Python client as a package: the committed stubs (clients/python/atelier/v1) are what protoc makes of proto/
today, `pip install ./clients/python` installs a typed package that works on its own (outside this checkout), and
its live-preview example writes a job's previews and result from a real daemon."""

import os
import shutil
import subprocess
import sys
import tempfile
import unittest

from daemon_process import DaemonProcess

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PACKAGE = os.path.join(ROOT, "clients", "python")


class PythonPackageTest(unittest.TestCase):
    def test_committed_stubs_match_the_protos(self):
        if not shutil.which("protoc") or not shutil.which("grpc_python_plugin"):
            self.skipTest("protoc / grpc_python_plugin not installed")
        with tempfile.TemporaryDirectory() as out:
            subprocess.run([os.path.join(ROOT, "scripts", "update_python_stubs"), out], check=True)
            generated = sorted(os.listdir(os.path.join(out, "atelier", "v1")))
            committed = sorted(n for n in os.listdir(os.path.join(PACKAGE, "atelier", "v1")) if n.endswith(".py")
                               and n != "__init__.py")
            self.assertEqual(generated, committed)
            for name in generated:
                with open(os.path.join(out, "atelier", "v1", name)) as a, \
                        open(os.path.join(PACKAGE, "atelier", "v1", name)) as b:
                    self.assertEqual(a.read(), b.read(), "%s is stale: run scripts/update_python_stubs" % name)

    def test_pip_installs_a_typed_package_that_runs_on_its_own(self):
        with tempfile.TemporaryDirectory() as tmp:
            target, work = os.path.join(tmp, "site"), os.path.join(tmp, "src")
            # A copy of the sources: pip builds in the tree it is given.
            shutil.copytree(PACKAGE, work, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
            done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-build-isolation",
                                   "--no-deps", "--target", target, work], capture_output=True, text=True)
            self.assertEqual(done.returncode, 0, done.stderr)
            self.assertTrue(os.path.isfile(os.path.join(target, "atelier_client", "py.typed")))
            self.assertTrue(os.path.isfile(os.path.join(target, "atelier", "v1", "options_pb2_grpc.py")))
            env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": target, "HOME": tmp}
            daemon = DaemonProcess()
            try:
                out = os.path.join(tmp, "previews")
                run = subprocess.run([sys.executable, "-m", "atelier_client.live_preview", "--server", daemon.address,
                                      "--out", out, "--steps", "6", "--seed", "3", "a red circle, blue background"],
                                     capture_output=True, text=True, env=env, cwd=tmp, timeout=300)
                self.assertEqual(run.returncode, 0, run.stderr)
                self.assertIn("step 6/6", run.stdout)
                files = sorted(os.listdir(out))
                self.assertIn("result-0.png", files)
                self.assertGreaterEqual(len([f for f in files if f.startswith("step-")]), 5)
                where = subprocess.run([sys.executable, "-c", "import atelier_client; print(atelier_client.__file__)"],
                                       capture_output=True, text=True, env=env, cwd=tmp)
                self.assertTrue(where.stdout.startswith(target), where.stdout + where.stderr)
            finally:
                self.assertEqual(daemon.stop(), 0)


if __name__ == "__main__":
    unittest.main()
