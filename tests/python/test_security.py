"""Security of a real atelierd: bearer tokens (--auth-tokens) checked on every call, TLS and mutual TLS, the refusal
to listen beyond loopback unprotected, per-token quotas and who may cancel whose job; the CLI and the Python client
with --token / --tls-ca and their environment variables. Tokens and secret paths never show in errors or logs.
Also the operator's request limits (--max-*), reported by GetInfo and enforced with errors naming the flag.

Run by ctest with ATELIER_DAEMON (the atelierd binary) and PYTHONPATH (clients/python) set."""

import os
import subprocess
import tempfile
import threading
import time
import unittest

import grpc

from atelier_client import AtelierError, Client, Queued
from daemon_process import DaemonProcess

CLI = os.path.join(os.path.dirname(os.environ["ATELIER_DAEMON"]), "atelier")
ALICE = "alice-7f3a9c2e1b5d4f608a9b"
BOB = "bob-0c4e8a2f6b1d9e3c5a7f"
OPS = "ops-5e1b9d3f7a2c6e0b8d4f"
CAROL = "carol-2d6f0a4c8e1b3d5f7a9c"
SECRETS = (ALICE, BOB, OPS, CAROL)


def write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return path


def slow_job(client, steps=400):
    """A job that runs long enough to be seen queued or running; its id once the daemon answered."""
    job = client.txt2img("a red circle", steps=steps, seed=1)
    events = iter(job)
    first = next(events)
    assert isinstance(first, Queued), first
    return job, events


def cancel_and_wait(client, job, events):
    """Cancels a job and reads its stream to the end (the job has left the daemon when it returns)."""
    client.cancel(job.id)
    try:
        for _ in events:
            pass
    except AtelierError as error:
        assert error.code == grpc.StatusCode.CANCELLED, error


def start_daemon(*args, listen="127.0.0.1:0"):
    """atelierd that is expected to refuse to start: (exit code, stderr)."""
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run([os.environ["ATELIER_DAEMON"], "--listen", listen, "--models-dir",
                               os.path.join(tmp, "none"), *args], capture_output=True, text=True, timeout=60)
    return done.returncode, done.stderr


class TokenTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.tokens = write(os.path.join(cls.tmp.name, "tokens"),
                           "# token name limits\n"
                           f"{ALICE} alice jobs=1 work_per_job=2\n"
                           f"{BOB}   bob   work_per_minute=0.5\n"
                           f"{OPS}   ops   admin\n"
                           f"{CAROL} carol job_seconds=1\n")
        cls.daemon = DaemonProcess(extra_args=("--auth-tokens", cls.tokens))

    @classmethod
    def tearDownClass(cls):
        assert cls.daemon.stop() == 0
        cls.tmp.cleanup()

    def client(self, token=None):
        return Client(self.daemon.address, token=token)

    def assertRefused(self, submit, code, *parts):
        """`submit()` fails with `code` and a message holding every one of `parts`."""
        with self.assertRaises(AtelierError) as raised:
            submit()
        self.assertEqual(raised.exception.code, code)
        for part in parts:
            self.assertIn(part, raised.exception.details)
        return raised.exception

    def assertNoSecrets(self, text):
        for secret in SECRETS:
            self.assertNotIn(secret, text)
        self.assertNotIn(self.tokens, text)

    def test_calls_without_a_valid_token_are_refused(self):
        for token in (None, "not-a-token-at-all-000", ALICE[:-1], ALICE + "x"):
            with self.client(token) as c, self.assertRaises(AtelierError) as raised:
                c.models()
            self.assertEqual(raised.exception.code, grpc.StatusCode.UNAUTHENTICATED)
            self.assertIn("token", raised.exception.details)
            self.assertNoSecrets(raised.exception.details)
        # A streaming call is refused before it makes a job.
        with self.client() as c, self.assertRaises(AtelierError) as raised:
            c.txt2img("a red circle", steps=2).wait()
        self.assertEqual(raised.exception.code, grpc.StatusCode.UNAUTHENTICATED)
        with self.client(OPS) as c:
            self.assertEqual(len(c.jobs()), 0)

    def test_a_valid_token_works_and_names_the_client(self):
        with self.client(OPS) as c:
            results = c.txt2img("a blue square", steps=2, seed=3).wait()
            self.assertEqual(len(results), 1)
        with self.client(ALICE) as c:
            job, events = slow_job(c)
            listing = c.jobs()
            self.assertEqual([j.client_id for j in listing], ["alice/atelier-python"])
            cancel_and_wait(c, job, events)
        self.assertNoSecrets(self.daemon.log_text())

    def test_health_is_open_and_reflection_is_not(self):
        done = subprocess.run([CLI, "--server", self.daemon.address, "health"], capture_output=True, text=True)
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertIn("SERVING", done.stdout)
        with grpc.insecure_channel(self.daemon.address) as channel:
            reflection = channel.stream_stream("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                                               request_serializer=lambda b: b, response_deserializer=lambda b: b)
            with self.assertRaises(grpc.RpcError) as raised:
                list(reflection(iter([b""]), timeout=10))
            self.assertEqual(raised.exception.code(), grpc.StatusCode.UNAUTHENTICATED)

    def test_quota_jobs_and_work_per_job(self):
        with self.client(ALICE) as c:
            job, events = slow_job(c)
            self.assertRefused(lambda: c.txt2img("a red circle", steps=2).wait(),
                               grpc.StatusCode.RESOURCE_EXHAUSTED, "jobs=1")
            cancel_and_wait(c, job, events)
            # 64x64 x 600 steps = 2.46 megapixel-steps, over alice's 2.
            self.assertRefused(lambda: c.txt2img("a red circle", steps=600).wait(),
                               grpc.StatusCode.RESOURCE_EXHAUSTED, "work_per_job", "2.0")

    def test_quota_work_per_minute(self):
        # bob may submit 0.5 megapixel-steps a minute: 64x64 x 60 steps = 0.25 each, so two jobs and no third.
        with self.client(BOB) as c:
            for _ in range(2):
                self.assertEqual(len(c.txt2img("a red circle", steps=60, seed=1).wait()), 1)
            self.assertRefused(lambda: c.txt2img("a red circle", steps=60).wait(),
                               grpc.StatusCode.RESOURCE_EXHAUSTED, "work_per_minute", "retry in")

    def test_token_wall_time_limit(self):
        # Stopped after 1 s, or refused at once once the daemon can estimate the job's time.
        with self.client(CAROL) as c, self.assertRaises(AtelierError) as raised:
            c.txt2img("a red circle", steps=1000).wait()
        self.assertIn(raised.exception.code, (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED))
        self.assertIn("token's limit of 1", raised.exception.details)
        self.assertIn("job_seconds", raised.exception.details)

    def test_only_the_owner_or_an_admin_cancels(self):
        with self.client(ALICE) as alice, self.client(BOB) as bob, self.client(OPS) as ops:
            job, events = slow_job(alice)
            with self.assertRaises(AtelierError) as raised:
                bob.cancel(job.id)
            self.assertEqual(raised.exception.code, grpc.StatusCode.PERMISSION_DENIED)
            ops.cancel(job.id)
            with self.assertRaises(AtelierError) as raised:
                for _ in events:
                    pass
            self.assertEqual(raised.exception.code, grpc.StatusCode.CANCELLED)

    def test_cli_token_flag_and_environment(self):
        base = [CLI, "--server", self.daemon.address]
        done = subprocess.run(base + ["models"], capture_output=True, text=True)
        self.assertNotEqual(done.returncode, 0)
        self.assertIn("UNAUTHENTICATED", done.stderr)
        done = subprocess.run(base + ["--token", OPS, "models"], capture_output=True, text=True)
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertIn("atelier-shapes", done.stdout)
        done = subprocess.run(base + ["jobs"], capture_output=True, text=True, env=dict(os.environ, ATELIER_TOKEN=OPS))
        self.assertEqual(done.returncode, 0, done.stderr)


class RequestLimitsTest(unittest.TestCase):
    def test_flags_lower_the_limits(self):
        daemon = DaemonProcess(extra_args=("--max-steps", "12", "--max-image-side", "128", "--max-prompt-tokens", "80",
                                           "--max-images-per-job", "2", "--max-concurrent-streams", "8"))
        try:
            with Client(daemon.address) as c:
                limits = c.info().limits
                self.assertEqual((limits.max_steps, limits.max_image_side, limits.max_prompt_tokens,
                                  limits.max_images_per_job), (12, 128, 80, 2))
                self.assertEqual(len(c.txt2img("a red circle", steps=12, width=128, height=64).wait()), 1)
                for fields, flag in (({"steps": 13}, "--max-steps"), ({"width": 136}, "--max-image-side"),
                                     ({"prompt": "red " * 81}, "--max-prompt-tokens"),
                                     ({"batch_size": 3}, "--max-images-per-job")):
                    fields = dict({"prompt": "a red circle", "steps": 2}, **fields)
                    with self.assertRaises(AtelierError) as raised:
                        c.txt2img(**fields).wait()
                    self.assertEqual(raised.exception.code, grpc.StatusCode.INVALID_ARGUMENT, flag)
                    self.assertIn(flag, raised.exception.details)
            done = subprocess.run([CLI, "--server", daemon.address, "version"], capture_output=True, text=True)
            self.assertIn("steps <= 12", done.stdout)
        finally:
            self.assertEqual(daemon.stop(), 0)


class FolderEscapeTest(unittest.TestCase):
    """Every name a request gives (checkpoint, VAE, LoRA, ControlNet and motion models, styles) stays inside the
    operator's folders: "..", absolute paths, NUL bytes and over-long names are refused or not found, never read,
    and the daemon keeps serving."""

    def test_names_cannot_leave_the_models_folders(self):
        daemon = DaemonProcess()
        try:
            outside = os.path.join(daemon.tmp.name, "secret.safetensors")
            write(outside, "not a model")
            hostile = ["../secret.safetensors", "../../secret", outside, "/etc/passwd", "a\x00../../secret",
                       "x" * 5000, "..", "Stable-diffusion/../../secret.safetensors"]
            with Client(daemon.address) as c:
                for name in hostile:
                    cases = [
                        {"override_settings": {"sd_model_checkpoint": name}},
                        {"override_settings": {"sd_vae": name}},
                        {"prompt": f"a red circle <lora:{name}:1>"},
                        {"alwayson_scripts": {"controlnet": {"args": [{"enabled": True, "model": name,
                                                                         "module": "none"}]}}},
                        {"alwayson_scripts": {"AnimateDiff": {"args": [{"enable": True, "model": name,
                                                                          "video_length": 2}]}}},
                    ]
                    for fields in cases:
                        fields = dict({"prompt": "a red circle", "steps": 2}, **fields)
                        with self.assertRaises(AtelierError, msg=f"{name[:40]!r} in {list(fields)}") as raised:
                            c.txt2img(**fields).wait()
                        self.assertIn(raised.exception.code, (grpc.StatusCode.INVALID_ARGUMENT,
                                                              grpc.StatusCode.NOT_FOUND), (name[:40], fields.keys()))
                        self.assertLess(len(raised.exception.details), 2000)
                        self.assertNotIn("not a model", raised.exception.details)
                    with self.assertRaises(AtelierError) as raised:
                        c.load(name)
                    self.assertIn(raised.exception.code, (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND))
                self.assertEqual(len(c.txt2img("a red circle", steps=2).wait()), 1)
        finally:
            self.assertEqual(daemon.stop(), 0)


class StartupRefusalTest(unittest.TestCase):
    def test_beyond_loopback_needs_authentication_or_insecure(self):
        code, err = start_daemon(listen="0.0.0.0:0")
        self.assertEqual(code, 2)
        self.assertIn("--insecure", err)
        self.assertIn("--auth-tokens", err)
        daemon = DaemonProcess(listen="0.0.0.0:0", extra_args=("--insecure",))
        try:
            port = daemon.address.rsplit(":", 1)[1]
            with Client(f"127.0.0.1:{port}") as c:
                self.assertTrue(c.models())
        finally:
            self.assertEqual(daemon.stop(), 0)

    def test_tokens_beyond_loopback_need_tls(self):
        with tempfile.TemporaryDirectory() as tmp:
            tokens = write(os.path.join(tmp, "t"), ALICE + "\n")
            code, err = start_daemon("--auth-tokens", tokens, listen="0.0.0.0:0")
        self.assertEqual(code, 2)
        self.assertIn("--tls-cert", err)

    def test_bad_token_files_name_the_line_not_the_token(self):
        with tempfile.TemporaryDirectory() as tmp:
            cases = {"short": ("# c\nshort-token\n", "line 2"),
                     "unknown": (ALICE + " alice jobz=2\n", "valid: jobs"),
                     "twice": (ALICE + "\n" + ALICE + "\n", "twice"),
                     "empty": ("# nothing\n", "no tokens"),
                     "bad value": (ALICE + " alice jobs=-1\n", "whole number")}
            for name, (text, expected) in cases.items():
                path = write(os.path.join(tmp, "tokens"), text)
                code, err = start_daemon("--auth-tokens", path)
                self.assertEqual(code, 2, name)
                self.assertIn(expected, err, name)
                self.assertNotIn(ALICE, err, name)
                self.assertNotIn("short-token", err, name)
                self.assertNotIn(path, err, name)
            code, err = start_daemon("--auth-tokens", os.path.join(tmp, "missing"))
            self.assertEqual(code, 2)
            self.assertNotIn(tmp, err)


def make_pki(directory):
    """A CA, a server certificate for 127.0.0.1 / localhost and a client certificate, with openssl(1)."""
    def run(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=directory)
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=atelier test CA")
    write(os.path.join(directory, "server.ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name, extra in (("server", ["-extfile", "server.ext"]), ("client", [])):
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj",
            f"/CN=atelier-{name}")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out",
            f"{name}.pem", "-days", "2", *extra)
    return {n: os.path.join(directory, n) for n in os.listdir(directory)}


class TlsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.pki = make_pki(cls.tmp.name)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def test_tls_with_a_token(self):
        tokens = write(os.path.join(self.tmp.name, "tokens"), OPS + " ops\n")
        daemon = DaemonProcess(extra_args=("--tls-cert", self.pki["server.pem"], "--tls-key", self.pki["server.key"],
                                           "--auth-tokens", tokens))
        try:
            with Client(daemon.address, token=OPS, tls_ca=self.pki["ca.pem"]) as c:
                self.assertEqual(len(c.txt2img("a red circle", steps=2).wait()), 1)
            # Plain text to a TLS port, or TLS without the token, gets nothing.
            with Client(daemon.address, token=OPS) as c, self.assertRaises(AtelierError) as raised:
                c.models()
            self.assertEqual(raised.exception.code, grpc.StatusCode.UNAVAILABLE)
            with Client(daemon.address, tls_ca=self.pki["ca.pem"]) as c, self.assertRaises(AtelierError) as raised:
                c.models()
            self.assertEqual(raised.exception.code, grpc.StatusCode.UNAUTHENTICATED)
            done = subprocess.run([CLI, "--server", daemon.address, "--token", OPS, "--tls-ca", self.pki["ca.pem"],
                                   "jobs"], capture_output=True, text=True)
            self.assertEqual(done.returncode, 0, done.stderr)
            env = dict(os.environ, ATELIER_TOKEN=OPS, ATELIER_TLS_CA=self.pki["ca.pem"])
            done = subprocess.run([CLI, "--server", daemon.address, "models"], capture_output=True, text=True, env=env)
            self.assertEqual(done.returncode, 0, done.stderr)
            log = daemon.log_text()
            self.assertIn("security: TLS", log)
            self.assertNotIn(OPS, log)
            self.assertNotIn(self.pki["server.key"], log)
        finally:
            self.assertEqual(daemon.stop(), 0)

    def test_mutual_tls(self):
        daemon = DaemonProcess(listen="0.0.0.0:0", extra_args=(
            "--tls-cert", self.pki["server.pem"], "--tls-key", self.pki["server.key"],
            "--tls-client-ca", self.pki["ca.pem"]))
        address = "127.0.0.1:" + daemon.address.rsplit(":", 1)[1]
        try:
            # Without an atelier-client header, the client is its certificate's name.
            with Client(address, client_id="", tls_ca=self.pki["ca.pem"], tls_cert=self.pki["client.pem"],
                        tls_key=self.pki["client.key"]) as c:
                job, events = slow_job(c)
                self.assertEqual([j.client_id for j in c.jobs()], ["cert:atelier-client"])
                cancel_and_wait(c, job, events)
            with Client(address, tls_ca=self.pki["ca.pem"]) as c, self.assertRaises(AtelierError) as raised:
                c.models()
            self.assertEqual(raised.exception.code, grpc.StatusCode.UNAVAILABLE)
            self.assertIn("security: mutual TLS", daemon.log_text())
        finally:
            self.assertEqual(daemon.stop(), 0)

    def test_half_a_tls_configuration_is_refused(self):
        code, err = start_daemon("--tls-cert", self.pki["server.pem"])
        self.assertEqual(code, 2)
        self.assertIn("--tls-key", err)
        code, err = start_daemon("--tls-cert", self.pki["server.pem"], "--tls-key", self.pki["ca.srl"])
        self.assertEqual(code, 2)
        self.assertIn("not PEM", err)
        self.assertNotIn(self.tmp.name, err)


if __name__ == "__main__":
    unittest.main()
