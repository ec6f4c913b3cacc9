"""LoRA through a real atelierd on the embedded model: a LoRA file written here in kohya naming (a UNet conv, in
LDM-style naming, and a text-encoder linear) in models/Lora; <lora:name:w> changes the image, weight 0 gives the plain
image exactly, the next plain job is the plain image again (weights restored), the tag stays in the infotext and
leaves the text CLIP sees, and an unknown LoRA is NOT_FOUND naming the ones there are.

Run by ctest with ATELIER_DAEMON and PYTHONPATH set."""

import io
import json
import os
import struct
import unittest

import grpc
import numpy as np
from PIL import Image

from atelier_client import AtelierError, Client, Result
from daemon_process import DaemonProcess

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
EMBEDDED = os.path.join(SOURCE, "assets", "models", "Stable-diffusion", "atelier-shapes.safetensors")


def header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        return json.loads(f.read(n))


def write_safetensors(path, tensors):
    head, blobs, offset = {}, [], 0
    for name, array in tensors.items():
        data = np.ascontiguousarray(array, dtype=np.float32).tobytes()
        head[name] = {"dtype": "F32", "shape": list(array.shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    text = json.dumps(head).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


class LoraTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        shapes = {k: v["shape"] for k, v in header(EMBEDDED).items() if k != "__metadata__"}

        def prepare(models):
            lora = os.path.join(models, "Lora")
            os.makedirs(lora)
            rng = np.random.RandomState(0)
            conv = shapes["model.diffusion_model.input_blocks.1.1.proj_in.weight"]
            fc1 = shapes["cond_stage_model.transformer.text_model.encoder.layers.0.mlp.fc1.weight"]
            write_safetensors(os.path.join(lora, "shapes_style.safetensors"), {
                "lora_unet_input_blocks_1_1_proj_in.lora_up.weight": rng.randn(conv[0], 4, 1, 1) * 0.5,
                "lora_unet_input_blocks_1_1_proj_in.lora_down.weight": rng.randn(4, conv[1], 1, 1) * 0.5,
                "lora_unet_input_blocks_1_1_proj_in.alpha": np.array(4.0),
                "lora_te_text_model_encoder_layers_0_mlp_fc1.lora_up.weight": rng.randn(fc1[0], 2) * 0.5,
                "lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": rng.randn(2, fc1[1]) * 0.5,
            })
        cls.daemon = DaemonProcess(prepare_models=prepare)
        cls.client = Client(cls.daemon.address)

    @classmethod
    def tearDownClass(cls):
        cls.client.close()
        assert cls.daemon.stop() == 0

    def run_job(self, prompt):
        results = [e for e in self.client.txt2img(prompt, steps=6, seed=11, sampler_name="Euler")
                   if isinstance(e, Result)]
        return np.asarray(Image.open(io.BytesIO(results[0].image)).convert("RGB")).astype(int), results[0].infotext

    def test_lora_changes_the_image_and_comes_off_exactly(self):
        plain, _ = self.run_job("a red circle on a white background")
        styled, infotext = self.run_job("a red circle on a white background <lora:shapes_style:1>")
        self.assertGreater(np.abs(styled - plain).max(), 10)
        self.assertTrue(infotext.startswith("a red circle on a white background <lora:shapes_style:1>\n"), infotext)
        zero, _ = self.run_job("a red circle on a white background <lora:shapes_style:0>")
        self.assertEqual(np.abs(zero - plain).max(), 0)  # the tag itself never reaches CLIP
        again, _ = self.run_job("a red circle on a white background")
        self.assertEqual(np.abs(again - plain).max(), 0)  # the weights were restored
        unet_only, _ = self.run_job("a red circle on a white background <lora:shapes_style:0:1>")
        self.assertGreater(np.abs(unet_only - plain).max(), 0)
        self.assertGreater(np.abs(unet_only - styled).max(), 0)

    def test_unknown_and_bad_tags(self):
        with self.assertRaises(AtelierError) as e:
            list(self.client.txt2img("a cat <lora:nowhere:1>", steps=2))
        self.assertEqual(e.exception.code, grpc.StatusCode.NOT_FOUND)
        self.assertIn("shapes_style", e.exception.details)
        with self.assertRaises(AtelierError) as e:
            list(self.client.txt2img("a cat <lora:shapes_style:1e9>", steps=2))
        self.assertEqual(e.exception.code, grpc.StatusCode.INVALID_ARGUMENT)
        plain, _ = self.run_job("a red circle on a white background")
        self.assertEqual(plain.shape, (64, 64, 3))


if __name__ == "__main__":
    unittest.main()
