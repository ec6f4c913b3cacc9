"""Operability of a real atelierd: the Prometheus endpoint (--metrics-listen), Daemon.GetInfo's stats and JSON
logs (--log-format json) with job ids, all agreeing with the jobs the test ran: succeeded, cancelled, refused.

Run by ctest with ATELIER_DAEMON (the atelierd binary) and PYTHONPATH (clients/python) set."""

import json
import re
import time
import unittest
import urllib.request

import grpc

from atelier_client import AtelierError, Client, Queued
from daemon_process import DaemonProcess


def scrape(url):
    """{(name, labels): value} from the Prometheus text format; checks every sample line parses."""
    samples = {}
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = response.read().decode()
    for line in text.splitlines():
        if not line or line.startswith("#"):
            assert line.startswith("# HELP ") or line.startswith("# TYPE ") or not line, line
            continue
        match = re.fullmatch(r'([a-z_]+)(\{[^}]*\})? (\S+)', line)
        assert match, line
        samples[(match.group(1), match.group(2) or "")] = float(match.group(3))
    return samples


class OperabilityTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.daemon = DaemonProcess(extra_args=("--metrics-listen", "127.0.0.1:0", "--log-format", "json",
                                               "--max-steps", "100"))
        cls.client = Client(cls.daemon.address, client_id="ops-test")
        log = cls.daemon.log_text()
        port = re.search(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", log).group(1)
        cls.url = f"http://127.0.0.1:{port}/metrics"

    @classmethod
    def tearDownClass(cls):
        cls.client.close()
        assert cls.daemon.stop() == 0

    def test_metrics_stats_and_logs_count_the_same_jobs(self):
        before = scrape(self.url)
        self.assertEqual(before[("atelier_queue_depth", "")], 0)
        ok = self.client.txt2img("a red circle", steps=3, seed=1)
        ok.wait()
        job = self.client.txt2img("a red circle", steps=100, seed=2)
        events = iter(job)
        self.assertIsInstance(next(events), Queued)
        self.client.cancel(job.id)
        with self.assertRaises(AtelierError):
            for _ in events:
                pass
        with self.assertRaises(AtelierError) as refused:
            self.client.txt2img("a red circle", steps=101).wait()
        self.assertEqual(refused.exception.code, grpc.StatusCode.INVALID_ARGUMENT)

        after = scrape(self.url)

        def delta(name, labels=""):
            return after.get((name, labels), 0) - before.get((name, labels), 0)
        self.assertEqual(delta("atelier_jobs_total", '{state="succeeded"}'), 1)
        self.assertEqual(delta("atelier_jobs_total", '{state="cancelled"}'), 1)
        self.assertEqual(delta("atelier_requests_refused_total", '{code="INVALID_ARGUMENT"}'), 1)
        self.assertEqual(delta("atelier_job_run_seconds_count"), 2)
        self.assertEqual(after[("atelier_job_run_seconds_bucket", '{le="+Inf"}')],
                         after[("atelier_job_run_seconds_count", "")])
        self.assertGreater(delta("atelier_stage_seconds_total", '{stage="sampling"}'), 0)
        self.assertGreater(delta("atelier_bytes_sent_total", '{kind="result"}'), 1000)
        self.assertGreater(after[("atelier_process_resident_bytes", "")], 10e6)
        self.assertGreater(after[("atelier_uptime_seconds", "")], 0)

        stats = self.client.info().stats
        self.assertEqual(stats.jobs_succeeded, after[("atelier_jobs_total", '{state="succeeded"}')])
        self.assertEqual(stats.jobs_cancelled, after[("atelier_jobs_total", '{state="cancelled"}')])
        self.assertGreaterEqual(stats.requests_refused, 1)
        self.assertEqual(stats.queue_depth, 0)
        self.assertGreater(stats.stage_seconds["sampling"], 0)
        self.assertGreater(stats.preview_bytes_sent, 0)

        lines = [json.loads(line) for line in self.daemon.log_text().splitlines() if line.startswith("{")]
        self.assertTrue(all({"time", "level", "msg"} <= set(line) for line in lines))
        ended = {line["job"]: line for line in lines if line["msg"] == "job finished"}
        self.assertEqual(ended[job.id]["state"], "cancelled")
        self.assertEqual(ended[ok.id]["state"], "succeeded")
        self.assertEqual(ended[ok.id]["client"], "ops-test")
        queued = [line for line in lines if line["msg"] == "job queued" and line["job"] == ok.id]
        self.assertEqual(len(queued), 1)

    def test_only_get_metrics_is_served(self):
        with self.assertRaises(urllib.error.HTTPError) as raised:
            urllib.request.urlopen(self.url.replace("/metrics", "/"), timeout=10)
        self.assertEqual(raised.exception.code, 404)


if __name__ == "__main__":
    unittest.main()
