"""Scale-out on a real proxy: three atelierd daemons (--instance-name d1..d3) behind nginx (examples/scale-out's
nginx.conf, grpc_pass over HTTP/2), the same behind HAProxy (haproxy.cfg), and, without a proxy, gRPC's own round_robin from the Python client and the CLI.
New jobs spread over the daemons; Watch and Cancel of a job reach the daemon that owns it (the job id names it);
a daemon killed mid-job fails only its own job, and new jobs go to the others.

Run by ctest with ATELIER_DAEMON (the atelierd binary) and PYTHONPATH (clients/python) set."""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest

import grpc

from atelier_client import AtelierError, Client, Queued
from daemon_process import DaemonProcess

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
CLI = os.path.join(os.path.dirname(os.environ["ATELIER_DAEMON"]), "atelier")
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
HAPROXY = shutil.which("haproxy") or ("/usr/sbin/haproxy" if os.path.exists("/usr/sbin/haproxy") else None)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on {port}")


def served(address):
    """Jobs a daemon finished, from its GetInfo."""
    with Client(address) as c:
        stats = c.info().stats
        return stats.jobs_succeeded + stats.jobs_failed + stats.jobs_cancelled


class ProxyScaleOut:
    """Three daemons behind a proxy started from examples/scale-out/<CONF> with the placeholders filled in."""
    CONF = ""

    @classmethod
    def proxy_command(cls, conf_path, prefix):
        raise NotImplementedError

    @classmethod
    def setUpClass(cls):
        cls.daemons = [DaemonProcess(extra_args=("--instance-name", f"d{i}")) for i in (1, 2, 3)]
        cls.prefix = tempfile.TemporaryDirectory()
        cls.port = free_port()
        with open(os.path.join(SOURCE, "examples", "scale-out", cls.CONF)) as f:
            conf = f.read()
        values = {"PROXY_PORT": cls.port, "PREFIX": cls.prefix.name}
        for i, daemon in enumerate(cls.daemons, 1):
            values[f"D{i}_PORT"] = daemon.address.rsplit(":", 1)[1]
        for key, value in values.items():
            conf = conf.replace("${%s}" % key, str(value))
        path = os.path.join(cls.prefix.name, cls.CONF)
        with open(path, "w") as f:
            f.write(conf)
        cls.proxy = subprocess.Popen(cls.proxy_command(path, cls.prefix.name), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        wait_for_port(cls.port)
        cls.address = f"127.0.0.1:{cls.port}"

    @classmethod
    def tearDownClass(cls):
        cls.proxy.terminate()
        cls.proxy.wait(timeout=30)
        for daemon in cls.daemons:
            if daemon.process.poll() is None:
                daemon.stop()
        cls.prefix.cleanup()

    def test_1_jobs_spread_and_calls_about_a_job_reach_its_daemon(self):
        before = [served(d.address) for d in self.daemons]
        # Separate connections, as separate users have: nginx balances requests, whichever connection they use.
        for i in range(6):
            with Client(self.address, retry_interrupted=False) as c:
                self.assertEqual(len(c.txt2img("a red circle", steps=2, seed=i).wait()), 1)
        spread = [served(d.address) - b for d, b in zip(self.daemons, before)]
        self.assertEqual(sum(spread), 6)
        self.assertGreaterEqual(sum(1 for n in spread if n > 0), 2, spread)

        with Client(self.address) as submitter, Client(self.address) as other:
            job = submitter.txt2img("a red circle", steps=400, seed=1)
            events = iter(job)
            self.assertIsInstance(next(events), Queued)
            owner = job.id.split("-")[0]
            self.assertIn(owner, ("d1", "d2", "d3"))
            watched = other.watch(job.id)  # through the proxy, to the owner (any other daemon: NOT_FOUND)
            watch_events = iter(watched)
            self.assertIsInstance(next(watch_events), Queued)
            other.cancel(job.id)
            for stream in (events, watch_events):
                with self.assertRaises(AtelierError) as raised:
                    for _ in stream:
                        pass
                self.assertEqual(raised.exception.code, grpc.StatusCode.CANCELLED)
            done = subprocess.run([CLI, "--server", self.address, "--instance", owner, "jobs"], capture_output=True,
                                  text=True)
            self.assertEqual(done.returncode, 0, done.stderr)
            done = subprocess.run([CLI, "--server", self.address, "cancel", f"{owner}-{'0' * 32}"],
                                  capture_output=True, text=True)
            self.assertIn("NOT_FOUND", done.stderr)

    def test_2_a_killed_daemon_fails_only_its_own_jobs(self):
        with Client(self.address, retry_interrupted=False) as c:
            job = c.txt2img("a red circle", steps=400, seed=2)
            events = iter(job)
            self.assertIsInstance(next(events), Queued)
            victim = self.daemons[int(job.id[1]) - 1]
            victim.process.send_signal(signal.SIGKILL)
            victim.process.wait(timeout=30)
            with self.assertRaises(AtelierError) as raised:
                for _ in events:
                    pass
            # A proxy ends the stream of a dead upstream without a status: nginx with RST_STREAM (INTERNAL), HAProxy
            # without trailers (UNKNOWN "Stream removed"); direct, it is UNAVAILABLE.
            self.assertIn(raised.exception.code, (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL,
                                                  grpc.StatusCode.UNKNOWN))
        dead = {job.id.split("-")[0]}
        # A client that retries (the default) gets its image from another daemon, with the same seed.
        with Client(self.address) as c:
            job = c.txt2img("a green triangle", steps=40, seed=3)  # runs again in full after the kill
            events = iter(job)
            self.assertIsInstance(next(events), Queued)
            first_owner = job.id.split("-")[0]
            victim = self.daemons[int(first_owner[1]) - 1]
            victim.process.send_signal(signal.SIGKILL)
            victim.process.wait(timeout=30)
            dead.add(first_owner)
            results = [e for e in events if hasattr(e, "seed") and hasattr(e, "image")]
            self.assertTrue(job.retried)
            self.assertEqual([r.seed for r in results], [3])
            self.assertNotIn(job.id.split("-")[0], dead)
        owners = set()
        for i in range(4):
            with Client(self.address, retry_interrupted=False) as c:
                new = c.txt2img("a blue square", steps=2, seed=i)
                self.assertEqual(len(new.wait()), 1)
                owners.add(new.id.split("-")[0])
        self.assertEqual(len(owners), 1)
        self.assertFalse(owners & dead)


@unittest.skipIf(NGINX is None, "nginx is not installed (scripts/setup installs it)")
class NginxScaleOutTest(ProxyScaleOut, unittest.TestCase):
    CONF = "nginx.conf"

    @classmethod
    def proxy_command(cls, conf_path, prefix):
        return [NGINX, "-p", prefix, "-c", conf_path]


@unittest.skipIf(HAPROXY is None, "haproxy is not installed (scripts/setup installs it)")
class HaproxyScaleOutTest(ProxyScaleOut, unittest.TestCase):
    CONF = "haproxy.cfg"

    @classmethod
    def proxy_command(cls, conf_path, prefix):
        return [HAPROXY, "-db", "-f", conf_path]


class ClientRoundRobinTest(unittest.TestCase):
    def test_round_robin_over_several_addresses(self):
        daemons = [DaemonProcess(extra_args=("--instance-name", f"r{i}")) for i in (1, 2, 3)]
        try:
            addresses = ",".join(d.address for d in daemons)
            with Client(addresses) as c:
                grpc.channel_ready_future(c._channel).result(timeout=30)
                for i in range(3):  # until every subchannel is connected, round_robin uses the ready ones
                    c.txt2img("a red circle", steps=2, seed=i).wait()
                ids = []
                for i in range(6):
                    job = c.txt2img("a red circle", steps=2, seed=i)
                    job.wait()
                    ids.append(job.id.split("-")[0])
            self.assertEqual(len(set(ids)), 3, ids)
            out = tempfile.mkdtemp()
            for i in range(3):
                done = subprocess.run([CLI, "--server", addresses, "txt2img", "-p", "a red circle", "--steps", "2",
                                       "-o", out, "-q"], capture_output=True, text=True, timeout=120)
                self.assertEqual(done.returncode, 0, done.stderr)
            self.assertEqual(len(os.listdir(out)), 3)
            shutil.rmtree(out)
        finally:
            for d in daemons:
                self.assertEqual(d.stop(), 0)


if __name__ == "__main__":
    unittest.main()
