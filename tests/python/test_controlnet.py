"""The ControlNet plugin through a real atelierd that loads it from build/plugins like any third-party plugin: a tiny
SD1.x checkpoint whose UNet is the fixtures' plugin-base-unet (so controlnet-tiny fits it), the controlnet-tiny file
in models/ControlNet, WebUI payloads with sd-webui-controlnet units, the extension's endpoints through
Plugins.Invoke, and every bad input as a clear gRPC error after which the daemon goes on serving.

Fixtures come from ATELIER_FIXTURES (default ../shared/fixtures); run by ctest with ATELIER_DAEMON and PYTHONPATH."""

import base64
import hashlib
import io
import json
import os
import re
import shutil
import struct
import subprocess
import tempfile
import unittest

import grpc
import numpy as np
from PIL import Image

from atelier_client import AtelierError, Client, Finished, Result
from daemon_process import DaemonProcess

from fixture_files import cases_of, read_safetensors, write_plugin_base_checkpoint, write_safetensors


def short_hash(path):
    """WebUI's old model hash, which sd-webui-controlnet puts in its model titles."""
    with open(path, "rb") as f:
        f.seek(0x100000)
        return hashlib.sha256(f.read(0x10000)).hexdigest()[:8]


def png_b64(array):
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def shapes_image(size=64):
    """A control image with clear edges: a white square and a disc on black."""
    img = np.zeros((size, size, 3), np.uint8)
    img[8:30, 10:34] = 255
    yy, xx = np.mgrid[:size, :size]
    img[(yy - 44) ** 2 + (xx - 42) ** 2 < 100] = (255, 128, 0)
    return img


class ControlNetTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.cn_case = cases_of("controlnet-tiny")[0]
        tiny_dir = cases_of("tiny-sd")[0]

        def prepare(models):
            # The tiny checkpoint's text encoder and VAE with the plugin cases' base UNet.
            sd = os.path.join(models, "Stable-diffusion")
            cn = os.path.join(models, "ControlNet")
            os.makedirs(cn)
            write_plugin_base_checkpoint(sd, "cnbase", cls.cn_case)
            shutil.copy(os.path.join(cls.cn_case, "weights.safetensors"), os.path.join(cn, "control_tiny.safetensors"))
            with open(os.path.join(cn, "broken_cn.safetensors"), "wb") as f:
                f.write(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
            # Pickles go through the daemon's non-executing reader: one that would run code, one without a net.
            formats = cases_of("ckpt-formats")[0]
            shutil.copy(os.path.join(formats, "evil.ckpt"), os.path.join(cn, "evil_cn.pth"))
            shutil.copy(os.path.join(formats, "zip_state_dict.ckpt"), os.path.join(cn, "pickled_sd.pth"))
            sd15, _ = read_safetensors(os.path.join(tiny_dir, "weights.safetensors"))
            write_safetensors(os.path.join(cn, "not_a_controlnet.safetensors"),
                              {k: v for k, v in list(sd15.items())[:4]})

        cls.daemon = DaemonProcess(prepare_models=prepare)
        cls.client = Client(cls.daemon.address)
        cls.title = "control_tiny [%s]" % short_hash(os.path.join(cls.daemon.models, "ControlNet",
                                                                   "control_tiny.safetensors"))
        cls.image = png_b64(shapes_image())

    @classmethod
    def tearDownClass(cls):
        cls.client.close()
        assert cls.daemon.stop() == 0

    def run_job(self, units=None, **fields):
        payload = dict(prompt="a cat", negative_prompt="blurry", steps=4, width=64, height=64, seed=1234,
                       sampler_name="Euler", cfg_scale=7.0, **fields)
        if units is not None:
            payload["alwayson_scripts"] = {"controlnet": {"args": units}}
        events = list(self.client.webui(payload))
        results = [e for e in events if isinstance(e, Result)]
        finished = [e for e in events if isinstance(e, Finished)]
        return results, events, finished

    def pixels(self, result):
        return np.asarray(Image.open(io.BytesIO(result.image)).convert("RGB")).astype(np.int16)

    def unit(self, **fields):
        u = dict(enabled=True, module="canny", model=self.title, image=self.image, weight=1.0)
        u.update(fields)
        return u

    def test_endpoints(self):
        job = self.client.invoke("controlnet", "model_list")
        result = json.loads([e for e in job if isinstance(e, Finished)][0].invoke_result_json)
        self.assertIn(self.title, result["model_list"])
        version = json.loads([e for e in self.client.invoke("controlnet", "version")
                              if isinstance(e, Finished)][0].invoke_result_json)
        self.assertEqual(version, {"version": 3})
        settings = json.loads([e for e in self.client.invoke("controlnet", "settings")
                               if isinstance(e, Finished)][0].invoke_result_json)
        self.assertEqual(settings["control_net_unit_count"], 3)
        modules = json.loads([e for e in self.client.invoke("controlnet", "module_list")
                              if isinstance(e, Finished)][0].invoke_result_json)
        self.assertEqual(modules["module_list"][0], "none")
        # The extension's own test of this endpoint.
        self.assertEqual(modules["module_detail"]["canny"]["sliders"],
                         [{"name": "Resolution", "value": 512, "min": 64, "max": 2048, "step": 8},
                          {"name": "Low Threshold", "value": 100, "min": 1, "max": 255, "step": 1},
                          {"name": "High Threshold", "value": 200, "min": 1, "max": 255, "step": 1}])
        types = json.loads([e for e in self.client.invoke("controlnet", "control_types")
                            if isinstance(e, Finished)][0].invoke_result_json)["control_types"]
        self.assertEqual(types["Canny"]["default_option"], "canny")
        self.assertEqual(types["All"]["model_list"][0], "None")

    def test_detect_streams_the_maps(self):
        events = list(self.client.invoke("controlnet", "detect", {
            "controlnet_module": "canny", "controlnet_input_images": [self.image], "controlnet_processor_res": 64}))
        finished = [e for e in events if isinstance(e, Finished)][0]
        result = json.loads(finished.invoke_result_json)
        self.assertEqual(result["info"], "Success")
        edges = np.asarray(Image.open(io.BytesIO(base64.b64decode(result["images"][0]))).convert("L"))
        self.assertEqual(edges.shape, (64, 64))
        self.assertEqual(set(np.unique(edges)) <= {0, 255}, True)
        self.assertGreater((edges == 255).sum(), 40)  # the square's and the disc's outlines
        with self.assertRaises(AtelierError) as e:
            list(self.client.invoke("controlnet", "detect", {"controlnet_module": "inpaint",
                                                               "controlnet_input_images": [self.image]}))
        self.assertEqual(e.exception.code, grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("controlnet_masks", e.exception.details)

    def test_a_unit_steers_the_image_and_reports_itself(self):
        plain, _, _ = self.run_job()
        self.assertEqual(len(plain), 1)
        results, events, _ = self.run_job([self.unit()])
        # The image, then the detected map appended as the extension does.
        self.assertEqual(len(results), 2)
        self.assertGreater(np.abs(self.pixels(results[0]) - self.pixels(plain[0])).max(), 0)
        infotext = results[0].infotext
        self.assertIn('ControlNet 0: "Module: canny, Model: %s, Weight: 1.0, Resize Mode: Crop and Resize, '
                      'Processor Res: 512, Threshold A: 100, Threshold B: 200, Guidance Start: 0.0, '
                      'Guidance End: 1.0, Pixel Perfect: False, Control Mode: Balanced"' % self.title, infotext)
        artifacts = [e for e in events if type(e).__name__ == "Artifact"]
        self.assertTrue(any(a.name == "controlnet-0-canny.png" for a in artifacts), [a.name for a in artifacts])
        # Deterministic.
        again, _, _ = self.run_job([self.unit()])
        self.assertEqual(np.abs(self.pixels(again[0]) - self.pixels(results[0])).max(), 0)
        # save_detected_map false: no extra result.
        only, _, _ = self.run_job([self.unit(save_detected_map=False)])
        self.assertEqual(len(only), 1)

    def test_units_that_do_nothing_change_nothing(self):
        plain, _, _ = self.run_job()
        base = self.pixels(plain[0])
        for units in ([self.unit(enabled=False)],
                      # 4 steps: sampling_step/total is 0, 0, 0.25, 0.5, never inside [0.9, 1.0].
                      [self.unit(guidance_start=0.9, guidance_end=1.0, save_detected_map=False)],
                      [self.unit(weight=0.0, save_detected_map=False)]):
            results, _, _ = self.run_job(units)
            self.assertEqual(np.abs(self.pixels(results[0]) - base).max(), 0, units[0])

    def test_two_units_sum(self):
        one, _, _ = self.run_job([self.unit(weight=1.0, save_detected_map=False)])
        two, _, _ = self.run_job([self.unit(weight=0.5, save_detected_map=False),
                                  self.unit(weight=0.5, save_detected_map=False)])
        self.assertLessEqual(np.abs(self.pixels(one[0]) - self.pixels(two[0])).max(), 1)
        half, _, _ = self.run_job([self.unit(weight=0.5, save_detected_map=False)])
        self.assertGreater(np.abs(self.pixels(one[0]) - self.pixels(half[0])).max(), 0)

    def test_hires_option_picks_the_passes(self):
        hires = dict(enable_hr=True, hr_scale=2.0, hr_upscaler="Latent", denoising_strength=0.5,
                     hr_second_pass_steps=2)
        plain, _, _ = self.run_job(**hires)
        both, _, _ = self.run_job([self.unit(save_detected_map=False)], **hires)
        low, _, _ = self.run_job([self.unit(save_detected_map=False, hr_option="Low res only")], **hires)
        high, _, _ = self.run_job([self.unit(save_detected_map=False, hr_option="High res only")], **hires)
        self.assertEqual(self.pixels(both[0]).shape, (128, 128, 3))
        images = [self.pixels(r[0]) for r in (plain, both, low, high)]
        # Each option steers a different set of passes: four different images.
        for i in range(4):
            for j in range(i + 1, 4):
                self.assertGreater(np.abs(images[i] - images[j]).max(), 0, (i, j))
        self.assertIn("Hires upscale", both[0].infotext)

    def test_inpaint_only_keeps_the_unmasked_image(self):
        original = (np.random.RandomState(3).rand(64, 64, 3) * 255).astype(np.uint8)
        mask = np.zeros((64, 64), np.uint8)
        mask[:, :24] = 255  # repaint the left part
        unit = self.unit(module="inpaint_only", image={"image": png_b64(original), "mask": png_b64(mask)},
                         save_detected_map=False)
        results, _, _ = self.run_job([unit])
        out = self.pixels(results[0])
        # Far from the mask (dilated and blurred by 7 pixels) the decoded image is replaced by the original.
        self.assertLessEqual(np.abs(out[:, 40:] - original[:, 40:].astype(np.int16)).max(), 1)
        plain, _, _ = self.run_job()
        self.assertGreater(np.abs(out[:, :16] - self.pixels(plain[0])[:, :16]).max(), 0)

    def test_tile_colorfix_transforms_the_prediction(self):
        plain, _, _ = self.run_job()
        fixed, _, _ = self.run_job([self.unit(module="tile_colorfix", save_detected_map=False)])
        self.assertGreater(np.abs(self.pixels(fixed[0]) - self.pixels(plain[0])).max(), 0)
        sharp, _, _ = self.run_job([self.unit(module="tile_colorfix+sharp", threshold_b=2.0, save_detected_map=False)])
        self.assertGreater(np.abs(self.pixels(sharp[0]) - self.pixels(fixed[0])).max(), 0)
        # Weight 0: no residuals and the prediction kept as it is.
        zero, _, _ = self.run_job([self.unit(module="tile_colorfix", weight=0.0, save_detected_map=False)])
        self.assertEqual(np.abs(self.pixels(zero[0]) - self.pixels(plain[0])).max(), 0)

    def test_only_masked_inpainting_crops_the_control_image(self):
        init = (np.random.RandomState(4).rand(64, 64, 3) * 255).astype(np.uint8)
        mask = np.zeros((64, 64), np.uint8)
        mask[20:36, 24:40] = 255

        def run(crop):
            payload = dict(prompt="a cat", steps=4, width=64, height=64, seed=9, sampler_name="Euler",
                           init_images=[png_b64(init)], mask=png_b64(mask), inpaint_full_res=True,
                           inpaint_full_res_padding=8, denoising_strength=0.75,
                           alwayson_scripts={"controlnet": {"args": [self.unit(inpaint_crop_input_image=crop)]}})
            results = [e for e in self.client.webui(payload, img2img=True) if isinstance(e, Result)]
            self.assertEqual(len(results), 2)
            return self.pixels(results[1])

        cropped, whole = run(True), run(False)
        self.assertEqual(cropped.shape, whole.shape)
        # The cropped region's edges, enlarged to the pass, are not the whole image's edges.
        self.assertGreater(np.abs(cropped - whole).max(), 0)
        # Without the crop the map is the one a txt2img job of the same size makes.
        txt2img, _, _ = self.run_job([self.unit()])
        self.assertEqual(np.abs(whole - self.pixels(txt2img[1])).max(), 0)

    def test_webui_payload_from_the_extensions_api_example(self):
        # scripts/api example shape: positional-free dict units, legacy aliases, string enums, unknown keys.
        payload = {"prompt": "a cat", "negative_prompt": "", "batch_size": 1, "steps": 4, "cfg_scale": 7,
                   "width": 64, "height": 64, "seed": 7, "sampler_name": "Euler a",
                   "alwayson_scripts": {"controlnet": {"args": [{
                       "input_image": self.image, "module": "canny", "model": "control_tiny", "weight": 1,
                       "resize_mode": "Inner Fit (Scale to Fit)", "lowvram": False, "processor_res": 64,
                       "threshold_a": 64, "threshold_b": 64, "guidance": 1, "guessmode": False,
                       "control_mode": 0, "pixel_perfect": True, "enabled": True}]}}}
        events = list(self.client.webui(payload))
        results = [e for e in events if isinstance(e, Result)]
        self.assertEqual(len(results), 2)
        self.assertIn("ControlNet 0", results[0].infotext)
        self.assertIn("Threshold A: 64.0", results[0].infotext)

    def test_infotext_paste_reruns_the_units(self):
        first, _, _ = self.run_job([self.unit(save_detected_map=False)])
        infotext = first[0].infotext
        # The pasted infotext gives back the unit (the image comes with the request, as in WebUI's UI).
        from atelier.v1 import generation_pb2
        request = Client.request({"infotext": infotext, "steps": 4, "width": 64, "height": 64, "seed": 1234,
                                  "sampler_name": "Euler", "cfg_scale": 7.0,
                                  "alwayson_scripts": {"controlnet": {"args": [{"image": self.image,
                                                                                "save_detected_map": False}]}}},
                                 generation_pb2.MODE_TXT2IMG)
        results = [e for e in self.client.generate(request) if isinstance(e, Result)]
        self.assertEqual(np.abs(self.pixels(results[0]) - self.pixels(first[0])).max(), 0)

    def test_client_helpers_and_cli(self):
        self.assertIn(self.title, self.client.controlnet_models())
        self.assertIn("canny", self.client.controlnet_modules()["module_list"])
        maps = self.client.controlnet_detect([base64.b64decode(self.image)], module="invert")
        inverted = np.asarray(Image.open(io.BytesIO(maps[0])).convert("RGB"))
        self.assertEqual(np.abs(inverted.astype(int) - (255 - shapes_image())).max(), 0)
        cli = os.path.join(os.path.dirname(os.environ["ATELIER_DAEMON"]), "atelier")
        with tempfile.TemporaryDirectory() as tmp:
            image = os.path.join(tmp, "control.png")
            with open(image, "wb") as f:
                f.write(base64.b64decode(self.image))
            out = subprocess.run([cli, "--server", self.daemon.address, "controlnet", "models"], capture_output=True,
                                 text=True, timeout=60)
            self.assertEqual(out.returncode, 0, out.stderr)
            self.assertIn(self.title, out.stdout)
            out = subprocess.run([cli, "--server", self.daemon.address, "controlnet", "detect", image, "--module",
                                  "canny", "--res", "64", "-o", tmp], capture_output=True, text=True, timeout=60)
            self.assertEqual(out.returncode, 0, out.stderr)
            self.assertTrue(os.path.exists(os.path.join(tmp, "detect-0-canny.png")), out.stdout)
            out = subprocess.run([cli, "--server", self.daemon.address, "txt2img", "-p", "a cat", "--steps", "4",
                                  "-W", "64", "-H", "64", "--seed", "1234", "--sampler", "Euler", "--controlnet",
                                  f"image={image},module=canny,model=control_tiny,save_detected_map=false",
                                  "-o", tmp, "-q"], capture_output=True, text=True, timeout=120)
            self.assertEqual(out.returncode, 0, out.stderr)
            # The detected map streamed as an artifact is saved too; the image carries the unit in its infotext.
            saved = out.stdout.split()
            self.assertTrue(any(os.path.basename(p) == "controlnet-0-canny.png" for p in saved), out.stdout)
            images = [p for p in saved if not os.path.basename(p).startswith("controlnet-")]
            self.assertEqual(len(images), 1, out.stdout)
            self.assertIn("ControlNet 0", Image.open(images[0]).info.get("parameters", ""))

    def test_bad_input_is_a_clear_error_and_the_daemon_goes_on(self):
        cases = [
            (dict(module="no_such_module"), grpc.StatusCode.NOT_FOUND, "canny"),
            (dict(model="no_such_model"), grpc.StatusCode.NOT_FOUND, self.title),
            (dict(module="openpose"), grpc.StatusCode.UNIMPLEMENTED, "canny"),
            (dict(model="broken_cn"), grpc.StatusCode.INVALID_ARGUMENT, "broken_cn"),
            (dict(model="not_a_controlnet"), grpc.StatusCode.INVALID_ARGUMENT, "not a ControlNet"),
            (dict(model="evil_cn"), grpc.StatusCode.INVALID_ARGUMENT, "evil_cn.pth"),
            (dict(model="pickled_sd"), grpc.StatusCode.INVALID_ARGUMENT, "not a ControlNet"),
            (dict(image="not an image at all"), grpc.StatusCode.INVALID_ARGUMENT, "image"),
            (dict(image=base64.b64encode(b"garbage bytes").decode()), grpc.StatusCode.INVALID_ARGUMENT, "decoded"),
            (dict(module="inpaint"), grpc.StatusCode.INVALID_ARGUMENT, "mask"),
            (dict(guidance_start=0.8, guidance_end=0.2), grpc.StatusCode.INVALID_ARGUMENT, "guidance_end"),
            (dict(weight=3.0), grpc.StatusCode.INVALID_ARGUMENT, "[0, 2]"),
            (dict(control_mode="Loud"), grpc.StatusCode.INVALID_ARGUMENT, "Balanced"),
            (dict(model="None"), grpc.StatusCode.INVALID_ARGUMENT, "no ControlNet model"),
        ]
        for fields, code, text in cases:
            with self.subTest(fields=fields):
                with self.assertRaises(AtelierError) as e:
                    self.run_job([self.unit(**fields)])
                self.assertEqual(e.exception.code, code, e.exception.details)
                self.assertIn(text, e.exception.details)
        with self.assertRaises(AtelierError) as e:
            self.run_job([self.unit()] * 4)
        self.assertEqual(e.exception.code, grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("at most 3", e.exception.details)
        results, _, _ = self.run_job([self.unit()])
        self.assertEqual(len(results), 2)


if __name__ == "__main__":
    unittest.main()


class ReferenceTest(unittest.TestCase):
    """reference_only / reference_adain / reference_adain+attn on the embedded trained model (no ControlNet file):
    the reference image's UNet pass feeds every self-attention (and block statistics); judged by behaviour."""

    @classmethod
    def setUpClass(cls):
        cls.daemon = DaemonProcess()
        cls.client = Client(cls.daemon.address)
        red = np.zeros((64, 64, 3), np.uint8)
        red[...] = (230, 20, 20)
        cls.red = png_b64(red)

    @classmethod
    def tearDownClass(cls):
        cls.client.close()
        assert cls.daemon.stop() == 0

    def run_job(self, units=None):
        payload = dict(prompt="a blue circle on a white background", steps=12, seed=5, sampler_name="DPM++ 2M",
                       cfg_scale=7.0)
        if units:
            payload["alwayson_scripts"] = {"controlnet": {"args": units}}
        results = [e for e in self.client.webui(payload) if isinstance(e, Result)]
        return np.asarray(Image.open(io.BytesIO(results[0].image)).convert("RGB")).astype(float), results

    def unit(self, module, **fields):
        u = dict(enabled=True, module=module, image=self.red, save_detected_map=False)
        u.update(fields)
        return u

    def test_weight_zero_is_the_plain_image_and_the_reference_pulls_its_colours(self):
        plain, _ = self.run_job()
        redness = lambda img: float((img[..., 0] - img[..., 2]).mean())  # noqa: E731
        for module in ("reference_only", "reference_adain", "reference_adain+attn"):
            with self.subTest(module=module):
                zero, _ = self.run_job([self.unit(module, weight=0.0)])
                self.assertEqual(np.abs(zero - plain).max(), 0)
                ref, results = self.run_job([self.unit(module, weight=1.0)])
                self.assertGreater(redness(ref), redness(plain) + 10, (redness(ref), redness(plain)))
                self.assertIn('Module: %s, Model: None' % module, results[0].infotext)

    def test_control_modes_and_guidance_window(self):
        balanced, _ = self.run_job([self.unit("reference_only")])
        prompt, _ = self.run_job([self.unit("reference_only", control_mode="My prompt is more important")])
        control, _ = self.run_job([self.unit("reference_only", control_mode="ControlNet is more important")])
        self.assertGreater(np.abs(balanced - prompt).max(), 0)
        self.assertGreater(np.abs(balanced - control).max(), 0)
        plain, _ = self.run_job()
        outside, _ = self.run_job([self.unit("reference_only", guidance_start=0.95, guidance_end=1.0)])
        self.assertEqual(np.abs(outside - plain).max(), 0)
        # Deterministic: the reference noise is seeded by the job.
        again, _ = self.run_job([self.unit("reference_only")])
        self.assertEqual(np.abs(again - balanced).max(), 0)
