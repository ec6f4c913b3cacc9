"""LoRA through a real atelierd on the embedded model: a LoRA file written here in kohya naming (a UNet conv, in
LDM-style naming, and a text-encoder linear) in models/Lora; <lora:name:w> changes the image, weight 0 gives the plain
image exactly, the next plain job is the plain image again (weights restored), the tag stays in the infotext and
leaves the text CLIP sees, and an unknown LoRA is NOT_FOUND naming the ones there are. Also WebUI's infotext
"Lora hashes" (AutoV3, computed here with hashlib), its paste path renaming a LoRA by hash, aliases from
ss_output_name, the listing with metadata, the lenient lora_missing_warn mode and the patch cache.

Run by ctest with ATELIER_DAEMON and PYTHONPATH set."""

import hashlib
import io
import json
import shutil
import os
import struct
import unittest

import grpc
import numpy as np
from PIL import Image

from atelier_client import AtelierError, Client, Finished, Result
from daemon_process import DaemonProcess

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
EMBEDDED = os.path.join(SOURCE, "assets", "models", "Stable-diffusion", "atelier-shapes.safetensors")


def header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        return json.loads(f.read(n))


def write_safetensors(path, tensors, metadata=None):
    head, blobs, offset = {}, [], 0
    if metadata:
        head["__metadata__"] = metadata
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
            # The same network under another file name, with kohya's metadata: found by its alias.
            shutil.copy(os.path.join(lora, "shapes_style.safetensors"), os.path.join(lora, "renamed.safetensors"))
            tensors = {}
            with open(os.path.join(lora, "shapes_style.safetensors"), "rb") as f:
                n = struct.unpack("<Q", f.read(8))[0]
                head = json.loads(f.read(n))
                data = f.read()
            for name, info in head.items():
                b, e = info["data_offsets"]
                tensors[name] = np.frombuffer(data[b:e], dtype=np.float32).reshape(info["shape"])
            os.makedirs(os.path.join(models, "LyCORIS"))
            write_safetensors(os.path.join(models, "LyCORIS", "trained_v3.safetensors"), tensors,
                              {"ss_output_name": "shapes_alias", "ss_network_dim": "4", "ss_sd_model_name": "sd15"})
            write_safetensors(os.path.join(lora, "xl_style.safetensors"), {
                "lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_up.weight": np.zeros((8, 2)),
                "lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": np.zeros((2, 8))},
                {"ss_base_model_version": "sdxl_base_v1-0"})
            with open(os.path.join(lora, "broken.safetensors"), "wb") as f:
                f.write(struct.pack("<Q", 1 << 40) + b"{not json")
            # A textual-inversion embedding (for "TI hashes").
            os.makedirs(os.path.join(models, "embeddings"))
            hidden = shapes["cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"][1]
            write_safetensors(os.path.join(models, "embeddings", "shapesemb.safetensors"),
                              {"emb_params": rng.randn(2, hidden) * 0.01})
            cls.embedding = os.path.join(models, "embeddings", "shapesemb.safetensors")
            cls.lora_dir = lora
            cls.lora_tensors = tensors
        cls.daemon = DaemonProcess(prepare_models=prepare)
        cls.client = Client(cls.daemon.address)

    @classmethod
    def tearDownClass(cls):
        cls.client.close()
        assert cls.daemon.stop() == 0

    def run_job(self, prompt, **fields):
        events = list(self.client.txt2img(prompt, steps=6, seed=11, sampler_name="Euler", **fields))
        results = [e for e in events if isinstance(e, Result)]
        self.finished = [e for e in events if isinstance(e, Finished)][0]
        return np.asarray(Image.open(io.BytesIO(results[0].image)).convert("RGB")).astype(int), results[0].infotext

    def test_equals_a_checkpoint_merged_offline_and_ti_hashes(self):
        # The embedded checkpoint with W + up·down·alpha/rank merged here with numpy (float32), served by a second
        # daemon: its plain image is the LoRA job's image.
        t = self.lora_tensors
        merged = {
            "model.diffusion_model.input_blocks.1.1.proj_in.weight":
                (t["lora_unet_input_blocks_1_1_proj_in.lora_up.weight"].reshape(-1, 4) @
                 t["lora_unet_input_blocks_1_1_proj_in.lora_down.weight"].reshape(4, -1)) * (4.0 / 4),
            "cond_stage_model.transformer.text_model.encoder.layers.0.mlp.fc1.weight":
                t["lora_te_text_model_encoder_layers_0_mlp_fc1.lora_up.weight"] @
                t["lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight"],
        }

        def prepare(models):
            folder = os.path.join(models, "Stable-diffusion")
            os.makedirs(folder)
            with open(EMBEDDED, "rb") as f:
                n = struct.unpack("<Q", f.read(8))[0]
                head = json.loads(f.read(n))
                data = f.read()
            out_head, blobs, offset = {"__metadata__": head["__metadata__"]}, [], 0
            for name, info in head.items():
                if name == "__metadata__":
                    continue
                b, e = info["data_offsets"]
                blob, dtype = data[b:e], info["dtype"]
                if name in merged:
                    w = np.frombuffer(blob, dtype=np.float16 if dtype == "F16" else np.float32).astype(np.float32)
                    blob = (w.reshape(info["shape"]) + merged[name].reshape(info["shape"]).astype(np.float32)).astype(
                        np.float32).tobytes()
                    dtype = "F32"
                out_head[name] = {"dtype": dtype, "shape": info["shape"], "data_offsets": [offset, offset + len(blob)]}
                offset += len(blob)
                blobs.append(blob)
            text = json.dumps(out_head).encode()
            text += b" " * ((8 - len(text) % 8) % 8)
            with open(os.path.join(folder, "merged.safetensors"), "wb") as f:
                f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))
            shutil.copy(EMBEDDED.replace(".safetensors", ".yaml"), os.path.join(folder, "merged.yaml"))

        other = DaemonProcess(prepare_models=prepare)
        try:
            client = Client(other.address)
            events = list(client.txt2img("a red circle on a white background", steps=6, seed=11, sampler_name="Euler"))
            offline = np.asarray(Image.open(io.BytesIO([e for e in events if isinstance(e, Result)][0].image))
                                 .convert("RGB")).astype(int)
            client.close()
        finally:
            other.stop()
        patched, _ = self.run_job("a red circle on a white background <lora:shapes_style:1>")
        plain, _ = self.run_job("a red circle on a white background")
        self.assertGreater(np.abs(patched - plain).max(), 10)
        self.assertLessEqual(np.abs(patched - offline).max(), 1)

        # An embedding the prompt uses: "TI hashes" with the first 12 digits of its file's SHA-256.
        with open(self.embedding, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()[:12]
        _, info = self.run_job("a red circle on a white background, shapesemb")
        self.assertIn('TI hashes: "shapesemb: %s"' % digest, info)
        _, info = self.run_job("a red circle on a white background, shapesemb",
                               override_settings={"textual_inversion_add_hashes_to_infotext": False})
        self.assertNotIn("TI hashes", info)

    @staticmethod
    def addnet_hash(path):
        with open(path, "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            f.seek(8 + n)
            return hashlib.sha256(f.read()).hexdigest()

    def test_hashes_infotext_paste_alias_and_cache(self):
        prompt = "a red circle on a white background <lora:shapes_style:0.8>"
        styled, infotext = self.run_job(prompt)
        short = self.addnet_hash(os.path.join(self.lora_dir, "shapes_style.safetensors"))[:12]
        self.assertIn('Lora hashes: "shapes_style: %s"' % short, infotext)
        self.assertIn("lora", self.finished.timings)
        # The same networks again: the patched weights are swapped back in, nothing computed; same image.
        again, _ = self.run_job(prompt)
        self.assertIn("lora (cached)", self.finished.timings)
        self.assertEqual(np.abs(again - styled).max(), 0)
        # A WebUI infotext naming a LoRA this folder has under another name: renamed by its hash, same image.
        pasted_text = infotext.replace("<lora:shapes_style:", "<lora:from_elsewhere:").replace(
            "shapes_style: ", "from_elsewhere: ")
        pasted, pasted_info = self.run_job("", infotext=pasted_text)
        self.assertEqual(np.abs(pasted - styled).max(), 0)
        self.assertNotIn("from_elsewhere", pasted_info.split("\n")[0])
        # The alias from ss_output_name names the LyCORIS copy; <lyco:...> is the same tag.
        aliased, alias_info = self.run_job("a red circle on a white background <lyco:shapes_alias:0.8>")
        self.assertEqual(np.abs(aliased - styled).max(), 0)
        self.assertIn('Lora hashes: "shapes_alias: %s"' % short, alias_info)

    def test_listing_and_lenient_mode(self):
        loras = {m.name: m for m in self.client.models(compute_hashes=True) if m.kind == 8}  # MODEL_KIND_LORA
        self.assertEqual(set(loras), {"shapes_style", "renamed", "trained_v3", "xl_style", "broken"})
        self.assertEqual(loras["xl_style"].architecture, "LoRA (SDXL)")
        self.assertTrue(loras["broken"].error)
        trained = loras["trained_v3"]
        self.assertEqual(trained.alias, "shapes_alias")
        self.assertEqual(trained.metadata["ss_network_dim"], "4")
        self.assertEqual(trained.architecture, "LoRA (SD1)")
        self.assertEqual(trained.network_hash, self.addnet_hash(os.path.join(self.lora_dir, "shapes_style.safetensors")))
        self.assertEqual(loras["shapes_style"].alias, "shapes_style")
        # WebUI only warns about a missing network; lora_missing_warn asks for that.
        plain, _ = self.run_job("a red circle on a white background")
        lenient, info = self.run_job("a red circle on a white background <lora:nowhere:1>",
                                     override_settings={"lora_missing_warn": True})
        self.assertEqual(np.abs(lenient - plain).max(), 0)
        self.assertIn("Lora not found: nowhere", self.finished.warnings)
        self.assertNotIn("Lora hashes", info)

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
            list(self.client.txt2img("a cat <lora:shapes_styel:1>", steps=2))
        self.assertIn("nearest: shapes_style", e.exception.details)
        with self.assertRaises(AtelierError) as e:
            list(self.client.txt2img("a cat <lora:shapes_style:1:1:x>", steps=2))
        self.assertEqual(e.exception.code, grpc.StatusCode.INVALID_ARGUMENT)
        with self.assertRaises(AtelierError) as e:
            list(self.client.txt2img("a cat <lora:shapes_style:1e9>", steps=2))
        self.assertEqual(e.exception.code, grpc.StatusCode.INVALID_ARGUMENT)
        for name in ("xl_style", "broken"):  # an SDXL LoRA, a corrupt file: refused by name, the daemon goes on
            with self.assertRaises(AtelierError) as e:
                list(self.client.txt2img("a cat <lora:%s:1>" % name, steps=2))
            self.assertEqual(e.exception.code, grpc.StatusCode.INVALID_ARGUMENT, e.exception.details)
            self.assertIn(name, e.exception.details)
        plain, _ = self.run_job("a red circle on a white background")
        self.assertEqual(plain.shape, (64, 64, 3))


if __name__ == "__main__":
    unittest.main()
