"""ESRGAN-family upscalers through a real atelierd: WebUI's Extras upscale (Generation.Upscale) of an image with a
Real-ESRGAN name and with a models/ESRGAN file, checked against the PyTorch golden (tests/data/esrgan) resized with
Pillow's own Lanczos; the built-in Lanczos equal to Pillow's; scale-to with crop; the second upscaler blend; hires fix
with "Hires upscaler: R-ESRGAN 4x+ Anime6B"; the listing; the CLI; and bad requests refused by name.

Run by ctest with ATELIER_DAEMON and PYTHONPATH set."""

import io
import json
import os
import shutil
import struct
import subprocess
import tempfile
import unittest

import grpc
import numpy as np
from PIL import Image

from atelier_client import AtelierError, Client, Result
from daemon_process import DaemonProcess

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
DATA = os.path.join(SOURCE, "tests", "data", "esrgan")


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        head = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in head.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        dtype = {"F32": np.float32, "U8": np.uint8}[info["dtype"]]
        out[name] = np.frombuffer(data[b:e], dtype=dtype).reshape(info["shape"])
    return out


def png(array):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def pixels(data):
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)


class UpscaleTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        def prepare(models):
            os.makedirs(os.path.join(models, "ESRGAN"))
            os.makedirs(os.path.join(models, "RealESRGAN"))
            shutil.copy(os.path.join(DATA, "rrdb_x4.safetensors"),
                        os.path.join(models, "RealESRGAN", "RealESRGAN_x4plus_anime_6B.safetensors"))
            shutil.copy(os.path.join(DATA, "rrdb_x4_old.safetensors"), os.path.join(models, "ESRGAN", "4x-Tiny.safetensors"))
            shutil.copy(os.path.join(DATA, "compact_x4.safetensors"),
                        os.path.join(models, "RealESRGAN", "realesr-animevideov3.safetensors"))
            with open(os.path.join(models, "ESRGAN", "broken.pth"), "wb") as f:
                f.write(b"not a model")

        cls.daemon = DaemonProcess(prepare_models=prepare)
        cls.client = Client(cls.daemon.address)
        cls.golden = read_safetensors(os.path.join(DATA, "golden.safetensors"))
        cls.image = np.ascontiguousarray(cls.golden["tile_input"])  # 37x29 RGB
        cls.cli = os.path.join(os.path.dirname(os.environ["ATELIER_DAEMON"]), "atelier")

    @classmethod
    def tearDownClass(cls):
        cls.client.close()
        assert cls.daemon.stop() == 0

    def upscale(self, upscaler, **fields):
        results = [e for e in self.client.upscale([png(self.image)], upscaler, **fields) if isinstance(e, Result)]
        self.assertEqual(len(results), 1)
        return pixels(results[0].image), results[0].infotext

    def test_model_upscale_is_the_net_then_pillows_lanczos(self):
        # 37x29 x4 = 148x116, floored to multiples of 8 (144x112) with Lanczos, as WebUI's Upscaler.upscale.
        expected = np.asarray(Image.fromarray(np.ascontiguousarray(self.golden["untiled_output"])).resize(
            (144, 112), Image.LANCZOS)).astype(int)
        for name in ("R-ESRGAN 4x+ Anime6B", "4x-Tiny"):  # BasicSR layout in params_ema; the old ESRGAN layout
            out, info = self.upscale(name, upscaling_resize=4, tile=0)
            self.assertEqual(out.shape, (112, 144, 3))
            self.assertLessEqual(np.abs(out - expected).max(), 1, name)
            self.assertEqual(info, "Postprocess upscale by: 4.0, Postprocess upscaler: %s" % name)
        tiled, _ = self.upscale("R-ESRGAN 4x+ Anime6B", upscaling_resize=4, tile=16, tile_overlap=4)
        self.assertEqual(tiled.shape, (112, 144, 3))
        self.assertGreater(np.abs(tiled - expected).max(), 0)  # the tiles' seams: WebUI's tiled result differs
        compact, _ = self.upscale("R-ESRGAN AnimeVideo", upscaling_resize=2)
        self.assertEqual(compact.shape, (56, 72, 3))

    def test_builtin_lanczos_crop_and_blend(self):
        out, info = self.upscale("Lanczos", upscaling_resize=2)
        expected = np.asarray(Image.fromarray(self.image).resize((74, 58), Image.LANCZOS).resize((72, 56), Image.LANCZOS))
        self.assertEqual(np.abs(out - expected.astype(int)).max(), 0)
        self.assertEqual(info, "Postprocess upscale by: 2.0, Postprocess upscaler: Lanczos")
        out, info = self.upscale("Lanczos", resize_mode=1, upscaling_resize_w=100, upscaling_resize_h=60)
        self.assertEqual(out.shape, (60, 100, 3))
        self.assertEqual(info, "Postprocess upscale to: 100x60, Postprocess crop to: 100x60, Postprocess upscaler: Lanczos")
        lanczos, _ = self.upscale("Lanczos", upscaling_resize=4)
        nearest, _ = self.upscale("Nearest", upscaling_resize=4)
        blend, info = self.upscale("Lanczos", upscaling_resize=4, upscaler_2="Nearest", extras_upscaler_2_visibility=0.5)
        self.assertEqual(np.abs(blend - (lanczos + 0.5 * (nearest - lanczos)).astype(int)).max(), 0)
        self.assertIn("Postprocess upscaler 2: Nearest", info)

    def test_hires_fix_with_a_model_upscaler(self):
        def run(upscaler):
            payload = dict(prompt="a red circle on a white background", steps=4, seed=5, sampler_name="Euler",
                           width=64, height=64, enable_hr=True, hr_scale=2, hr_upscaler=upscaler,
                           denoising_strength=0.5)
            results = [e for e in self.client.webui(payload) if isinstance(e, Result)]
            return pixels(results[0].image), results[0].infotext

        model, info = run("R-ESRGAN 4x+ Anime6B")
        self.assertEqual(model.shape, (128, 128, 3))
        self.assertIn("Hires upscaler: R-ESRGAN 4x+ Anime6B", info)
        latent, _ = run("Latent")
        self.assertGreater(np.abs(model - latent).max(), 0)

    def test_listing_cli_and_bad_requests(self):
        names = [n for n, _, missing in self.client.upscalers() if not missing]
        self.assertEqual(names[:3], ["None", "Lanczos", "Nearest"])
        for name in ("4x-Tiny", "R-ESRGAN 4x+ Anime6B", "R-ESRGAN AnimeVideo"):
            self.assertIn(name, names)
        files = {m.filename: m for m in self.client.models() if m.kind == 9}  # MODEL_KIND_UPSCALER
        self.assertIn("ESRGAN (RRDBNet, 2 blocks, 8 features), 4x", files["4x-Tiny.safetensors"].architecture)
        self.assertIn("SRVGGNet", files["realesr-animevideov3.safetensors"].architecture)
        self.assertTrue(files["broken.pth"].error)
        missing = {n: m for n, _, m in self.client.upscalers() if m}
        self.assertEqual(missing["R-ESRGAN 4x+"], "RealESRGAN_x4plus.pth")

        bad = [("SwinIR 4x", {}, grpc.StatusCode.INVALID_ARGUMENT, "4x-Tiny"),
               ("R-ESRGAN 4x+", {}, grpc.StatusCode.FAILED_PRECONDITION, "RealESRGAN_x4plus.pth"),
               ("Lanczos", {"upscaling_resize": 0}, grpc.StatusCode.INVALID_ARGUMENT, "upscaling_resize"),
               ("Lanczos", {"upscaling_resize": 1e9}, grpc.StatusCode.INVALID_ARGUMENT, "upscaling_resize")]
        for name, fields, code, text in bad:
            with self.assertRaises(AtelierError) as e:
                self.upscale(name, **fields)
            self.assertEqual(e.exception.code, code, e.exception.details)
            self.assertIn(text, e.exception.details)
        with self.assertRaises(AtelierError) as e:  # a file that is no model: a clear job error
            self.upscale("broken", upscaling_resize=2)
        self.assertIn("broken.pth", e.exception.details)
        with self.assertRaises(AtelierError) as e:
            list(self.client.webui(dict(prompt="a cat", steps=2, width=64, height=64, enable_hr=True,
                                        hr_upscaler="Nowhere 4x")))
        self.assertEqual(e.exception.code, grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("R-ESRGAN 4x+ Anime6B", e.exception.details)
        self.assertIn("Latent (bicubic)", e.exception.details)

        with tempfile.TemporaryDirectory() as tmp:
            source = os.path.join(tmp, "in.png")
            with open(source, "wb") as f:
                f.write(png(self.image))
            out = subprocess.run([self.cli, "--server", self.daemon.address, "upscale", source, "--upscaler", "4x-Tiny",
                                  "--scale", "2", "-o", os.path.join(tmp, "up")], capture_output=True, text=True,
                                 timeout=120)
            self.assertEqual(out.returncode, 0, out.stderr)
            self.assertIn("Postprocess upscaler: 4x-Tiny", out.stdout)
            self.assertEqual(pixels(open(os.path.join(tmp, "up", "00000.png"), "rb").read()).shape, (56, 72, 3))
            listed = subprocess.run([self.cli, "--server", self.daemon.address, "upscalers"], capture_output=True,
                                    text=True, timeout=60)
            self.assertIn("R-ESRGAN 4x+ Anime6B", listed.stdout)


if __name__ == "__main__":
    unittest.main()
