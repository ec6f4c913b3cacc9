"""The RIFE plugin through a real atelierd (the embedded model) with the rife-v4 fixture's weights as
models/RIFE/flownet-v46.safetensors (and rife-v4.25's): after a batch, stand-alone through Plugins.Invoke, the CLI's
`atelier interpolate` and the Python client's interpolate(); bad input as clear errors, the daemon serving on.

Fixtures from ATELIER_FIXTURES (default ../shared/fixtures); run by ctest with ATELIER_DAEMON and PYTHONPATH."""

import io
import json
import os
import shutil
import subprocess
import tempfile
import unittest

import grpc
import numpy as np
from PIL import Image

from atelier_client import AtelierError, Client, Finished, Result
from daemon_process import DaemonProcess

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
FIXTURES = os.environ.get("ATELIER_FIXTURES", os.path.join(SOURCE, "..", "shared", "fixtures"))


def case_dir(kind):
    for name in sorted(os.listdir(FIXTURES)):
        path = os.path.join(FIXTURES, name, "case.json")
        if os.path.exists(path):
            with open(path) as f:
                if json.load(f).get("case") == kind:
                    return os.path.join(FIXTURES, name)
    raise AssertionError(f"no '{kind}' case in {FIXTURES}")


def png(colour, size=(64, 64)):
    buf = io.BytesIO()
    img = Image.new("RGB", size, colour)
    for x in range(0, size[0], 8):  # some structure, so frames are not flat
        img.putpixel((x, x % size[1]), (255 - colour[0], 255 - colour[1], 255 - colour[2]))
    img.save(buf, format="PNG")
    return buf.getvalue()


class RifeTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        def prepare(models):
            rife = os.path.join(models, "RIFE")
            os.makedirs(rife)
            shutil.copy(os.path.join(case_dir("rife-v4"), "weights.safetensors"), os.path.join(rife, "flownet-v46.safetensors"))
            shutil.copy(os.path.join(case_dir("rife-v4.25"), "weights.safetensors"), os.path.join(rife, "flownet-v425.safetensors"))
            with open(os.path.join(rife, "zz-broken.safetensors"), "wb") as f:
                f.write(b"\x08\x00\x00\x00\x00\x00\x00\x00{broken}")
        cls.daemon = DaemonProcess(prepare_models=prepare)
        cls.client = Client(cls.daemon.address)
        cls.cli = os.path.join(os.path.dirname(os.environ["ATELIER_DAEMON"]), "atelier")

    @classmethod
    def tearDownClass(cls):
        cls.client.close()
        assert cls.daemon.stop() == 0

    def run_job(self, rife, batch=4):
        payload = dict(prompt="a blue circle on a white background", steps=4, seed=3, batch_size=batch,
                       sampler_name="Euler", alwayson_scripts={"rife": {"args": [rife]}})
        return [e for e in self.client.webui(payload) if isinstance(e, Result)]

    def test_after_a_batch_n_frames_become_n_minus_1_times_x_plus_1(self):
        plain = [e for e in self.client.webui(dict(prompt="a blue circle on a white background", steps=4, seed=3,
                                                   batch_size=4, sampler_name="Euler")) if isinstance(e, Result)]
        results = self.run_job({"enabled": True, "multiplier": 2, "model": "flownet-v46"})
        self.assertEqual(len(results), 7)
        # The inputs pass unchanged at the even places; the new frames sit between them.
        pixels = lambda r: np.asarray(Image.open(io.BytesIO(r.image)).convert("RGB")).astype(int)  # noqa: E731
        for i in range(4):
            self.assertEqual(np.abs(pixels(results[2 * i]) - pixels(plain[i])).max(), 0)
        self.assertGreater(np.abs(pixels(results[1]) - pixels(results[0])).max(), 0)
        self.assertIn("RIFE: 4.6 x2", results[0].infotext)
        x4 = self.run_job({"enabled": True, "multiplier": 4, "model": "flownet-v425", "loop": True}, batch=3)
        self.assertEqual(len(x4), 12)  # n * x with the loop closed
        self.assertIn("RIFE: 4.25 x4", x4[0].infotext)
        # sd-webui-animatediff's way of asking: 4 frames at interp_x 3 -> round((12 - 4) / 3) = 3 per gap.
        ad = self.run_job({"interp": "RIFE", "interp_x": 3, "model": "flownet-v46"})
        self.assertEqual(len(ad), 4 + 3 * 3)

    def test_stand_alone_invoke_cli_and_client(self):
        frames = [png((200, 30, 30)), png((180, 60, 40)), png((160, 90, 50))]
        out = self.client.interpolate(frames, x=2, model="flownet-v46")
        self.assertEqual(len(out), 5)
        first = np.asarray(Image.open(io.BytesIO(out[0])).convert("RGB")).astype(int)
        self.assertEqual(np.abs(first - np.asarray(Image.open(io.BytesIO(frames[0])).convert("RGB"))).max(), 0)
        with tempfile.TemporaryDirectory() as tmp:
            paths = []
            for i, f in enumerate(frames):
                paths.append(os.path.join(tmp, "in%d.png" % i))
                with open(paths[-1], "wb") as fh:
                    fh.write(f)
            result = subprocess.run([self.cli, "--server", self.daemon.address, "interpolate", "--x", "4", *paths,
                                     "-o", os.path.join(tmp, "out")], capture_output=True, text=True, timeout=120)
            self.assertEqual(result.returncode, 0, result.stderr)
            self.assertEqual(sorted(os.listdir(os.path.join(tmp, "out"))), ["%05d.png" % i for i in range(9)])
        # A scene cut (very different frames) is repeated, not blended.
        cut = self.client.interpolate([png((250, 250, 250)), png((5, 5, 5))], x=2, model="flownet-v46")
        self.assertEqual(cut[1], cut[0])

    def test_bad_input(self):
        frames = [png((200, 30, 30)), png((160, 90, 50))]
        import base64
        b64 = [base64.b64encode(f).decode() for f in frames]
        cases = [
            ({"images": b64[:1]}, grpc.StatusCode.INVALID_ARGUMENT, "at least two frames"),
            ({"images": b64, "multiplier": 0}, grpc.StatusCode.INVALID_ARGUMENT, "outside 2..16"),
            ({"images": b64, "multiplier": 1000}, grpc.StatusCode.INVALID_ARGUMENT, "outside 2..16"),
            ({"images": [b64[0], base64.b64encode(png((1, 2, 3), (32, 32))).decode()]},
             grpc.StatusCode.INVALID_ARGUMENT, "one size"),
            ({"images": [b64[0], base64.b64encode(b"not an image").decode()]}, grpc.StatusCode.INVALID_ARGUMENT,
             "cannot be decoded"),
            ({"images": b64, "model": "zz-broken"}, grpc.StatusCode.INVALID_ARGUMENT, "zz-broken"),
            ({"images": b64, "model": "nope"}, grpc.StatusCode.NOT_FOUND, "flownet-v46.safetensors"),
        ]
        for args, code, text in cases:
            with self.subTest(args=str(args)[:60]):
                with self.assertRaises(AtelierError) as e:
                    list(self.client.invoke("rife", "interpolate", args))
                self.assertEqual(e.exception.code, code, e.exception.details)
                self.assertIn(text, e.exception.details)
        with self.assertRaises(AtelierError) as e:
            self.run_job({"interp": "FILM"})
        self.assertEqual(e.exception.code, grpc.StatusCode.UNIMPLEMENTED)
        self.assertIn("RIFE", e.exception.details)
        self.assertEqual(len(self.client.interpolate(frames, x=2, model="flownet-v46")), 3)


if __name__ == "__main__":
    unittest.main()
