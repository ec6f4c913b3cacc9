"""The Python client against a real atelierd (the embedded tiny model): typed events in order, the PNG and its
infotext, determinism, errors with their status codes, cancel, listings, a WebUI payload, and the example script.

Run by ctest with ATELIER_DAEMON (the atelierd binary) and PYTHONPATH (clients/python) set."""

import os
import struct
import subprocess
import sys
import threading
import unittest

import grpc

from atelier_client import AtelierError, Client, Finished, Progress, Queued, Result, Started
from atelier_client.client import ArtifactJoiner
from daemon_process import DaemonProcess

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")


def png_size(data: bytes):
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", data[16:24])


class ArtifactJoinerTest(unittest.TestCase):
    """Artifacts over the daemon's message limit come in chunks; the client hands over whole files."""

    def event(self, data, offset, total, last):
        from atelier.v1 import generation_pb2
        e = generation_pb2.GenerateEvent(job_id="j")
        e.artifact.name, e.artifact.plugin, e.artifact.mime_type = "a.gif", "export", "image/gif"
        e.artifact.data, e.artifact.offset, e.artifact.total_size, e.artifact.last = data, offset, total, last
        return e

    def test_chunks_are_joined_in_order(self):
        joiner = ArtifactJoiner()
        self.assertIsNone(joiner.add(self.event(b"abc", 0, 7, False)))
        self.assertIsNone(joiner.add(self.event(b"de", 3, 7, False)))
        whole = joiner.add(self.event(b"fg", 5, 7, True))
        self.assertEqual(whole.data, b"abcdefg")
        self.assertEqual(whole.name, "a.gif")
        single = joiner.add(self.event(b"xyz", 0, 3, True))
        self.assertEqual(single.data, b"xyz")
        with self.assertRaises(AtelierError):
            joiner.add(self.event(b"late", 4, 8, False))  # a chunk whose start is missing


class DaemonTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.daemon = DaemonProcess()
        cls.address = cls.daemon.address
        cls.client = Client(cls.address)

    @classmethod
    def tearDownClass(cls):
        cls.client.close()
        assert cls.daemon.stop() == 0

    def small(self, **fields):
        request = dict(steps=3, width=64, height=64, seed=5, sampler_name="Euler",
                       override_settings={"randn_source": "CPU"})
        request.update(fields)
        return request

    def test_txt2img_streams_typed_events_and_a_png_with_its_infotext(self):
        job = self.client.txt2img("a red circle", preview={"method": "PREVIEW_METHOD_APPROX_CHEAP"}, **self.small())
        events = list(job)
        kinds = [type(e) for e in events]
        self.assertIn(Queued, kinds)
        self.assertLess(kinds.index(Started), kinds.index(Result))
        self.assertIs(kinds[-1], Finished)
        started = next(e for e in events if isinstance(e, Started))
        self.assertEqual(started.seeds, [5])
        progress = [e for e in events if isinstance(e, Progress)]
        self.assertEqual(progress[-1].sampling_step, 3)
        self.assertEqual(progress[-1].pass_name, "txt2img")
        self.assertTrue(any(p.preview is not None and p.preview.data[:2] == b"\xff\xd8" for p in progress))
        self.assertEqual(len(job.results), 1)
        result = job.results[0]
        self.assertEqual(png_size(result.image), (64, 64))
        self.assertIn("a red circle\nSteps: 3, Sampler: Euler, Schedule type: Automatic, CFG scale: 7.0, Seed: 5, "
                      "Size: 64x64", result.infotext)
        self.assertIn(b"parameters", result.image)
        self.assertEqual(events[-1].state, "JOB_STATE_SUCCEEDED")
        self.assertIn("sampling", events[-1].timings)
        self.assertEqual(job.id, started.job_id)

    def test_same_request_same_image(self):
        first = self.client.txt2img("a cat", **self.small()).wait()
        second = self.client.txt2img("a cat", **self.small()).wait()
        self.assertEqual(first[0].image, second[0].image)

    def test_errors_carry_status_codes_and_valid_choices(self):
        with self.assertRaises(AtelierError) as caught:
            self.client.txt2img("x", **self.small(sampler_name="Euler z")).wait()
        self.assertEqual(caught.exception.code, grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("DPM++ 2M", caught.exception.details)
        with self.assertRaises(AtelierError) as caught:
            self.client.cancel("no-such-job")
        self.assertEqual(caught.exception.code, grpc.StatusCode.NOT_FOUND)
        with self.assertRaises(ValueError):
            self.client.txt2img("x", no_such_field=1)

    def test_cancel_returns_the_last_prediction(self):
        job = self.client.txt2img("slow", **self.small(steps=1000))
        results = []
        with self.assertRaises(AtelierError) as caught:
            for event in job:
                if isinstance(event, Progress) and event.sampling_step == 2:
                    threading.Thread(target=self.client.cancel, args=(event.job_id,)).start()
                if isinstance(event, Result):
                    results.append(event)
        self.assertEqual(caught.exception.code, grpc.StatusCode.CANCELLED)
        self.assertEqual(len(results), 1)
        self.assertTrue(results[0].interrupted)

    def test_listings(self):
        self.assertIn("atelier-shapes.safetensors", [m.filename for m in self.client.models()])
        self.assertIn("atelier-shapes.safetensors", self.client.status().checkpoint)
        self.assertIn("invert", [p.name for p in self.client.plugins()])
        self.assertEqual(self.client.info().api_version, "atelier.v1")

    def test_invoke_is_a_job_and_names_the_plugins_that_can(self):
        # The daemon's plugins (the template and the C example) work only inside generations.
        with self.assertRaises(AtelierError) as caught:
            self.client.invoke("invert", "detect", {"x": 1}).wait()
        self.assertEqual(caught.exception.code, grpc.StatusCode.FAILED_PRECONDITION)
        self.assertIn("works only inside a generation", caught.exception.details)
        with self.assertRaises(AtelierError) as caught:
            self.client.invoke("nope", "detect").wait()
        self.assertEqual(caught.exception.code, grpc.StatusCode.NOT_FOUND)

    def test_webui_payload_with_base64_image(self):
        png = self.client.txt2img("a dog", **self.small()).wait()[0].image
        import base64
        payload = {"prompt": "a dog", "steps": 3, "width": 64, "height": 64, "seed": 6, "sampler_index": "Euler a",
                   "denoising_strength": 0.5, "send_images": True, "negative_prompt": None,
                   "init_images": ["data:image/png;base64," + base64.b64encode(png).decode()]}
        results = self.client.webui(payload, img2img=True).wait()
        self.assertIn("Sampler: Euler a", results[0].infotext)
        self.assertIn("Denoising strength: 0.5", results[0].infotext)


if __name__ == "__main__":
    unittest.main()
