"""The AnimateDiff plugin through a real atelierd: a tiny SD1.x checkpoint whose UNet is plugin-base-unet with
motion-module-tiny's weights as models/AnimateDiff/mm_tiny.safetensors (and rife-v4's as models/RIFE). A 16-frame
clip with context 8 streams 16 frames (made twice: identical), the export plugin writes its GIF and MP4 with 16
frames at the clip's fps, interp RIFE x2 gives 31 frames, the infotext carries the extension's "AnimateDiff" key,
the CLI saves the files, and bad arguments are refused naming the field.

Run by ctest with ATELIER_DAEMON and PYTHONPATH set."""

import base64
import io
import json
import os
import shutil
import struct
import subprocess
import tempfile
import time
import unittest

import grpc
import numpy as np
from PIL import Image

from atelier_client import AtelierError, Artifact, Client, Finished, Result
from daemon_process import DaemonProcess
from fixture_files import cases_of, read_safetensors, write_plugin_base_checkpoint, write_safetensors

BASE = dict(prompt="a red circle on a white background", steps=3, seed=7, sampler_name="Euler", width=64, height=64,
            cfg_scale=5)


def mp4_frames_and_fps(data):
    """Sample count (stts) and frames per second (mdhd timescale / stts delta) of the first track."""
    stts = data.index(b"stts")
    entries = struct.unpack(">I", data[stts + 8:stts + 12])[0]
    frames, delta = 0, 0
    for i in range(entries):
        count, delta = struct.unpack(">II", data[stts + 12 + 8 * i:stts + 20 + 8 * i])
        frames += count
    mdhd = data.index(b"mdhd")
    version = data[mdhd + 4]
    timescale = struct.unpack(">I", data[mdhd + (24 if version == 1 else 16):mdhd + (28 if version == 1 else 20)])[0]
    return frames, timescale / delta


class AnimateDiffTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        mm_case = cases_of("motion-module-tiny")[0]

        def prepare(models):
            write_plugin_base_checkpoint(os.path.join(models, "Stable-diffusion"), "adbase", mm_case)
            os.makedirs(os.path.join(models, "AnimateDiff"))
            shutil.copy(os.path.join(mm_case, "weights.safetensors"), os.path.join(models, "AnimateDiff", "mm_tiny.safetensors"))
            with open(os.path.join(models, "AnimateDiff", "broken.safetensors"), "wb") as f:
                f.write(b"\x08\x00\x00\x00\x00\x00\x00\x00{broken}")
            os.makedirs(os.path.join(models, "ControlNet"))
            shutil.copy(os.path.join(cases_of("controlnet-tiny")[0], "weights.safetensors"),
                        os.path.join(models, "ControlNet", "control_tiny.safetensors"))
            os.makedirs(os.path.join(models, "RIFE"))
            shutil.copy(os.path.join(cases_of("rife-v4")[0], "weights.safetensors"),
                        os.path.join(models, "RIFE", "flownet-v46.safetensors"))

        def motion_lora(models):
            # A motion LoRA in the two key forms (conrevo's network-layer names with alpha; guoyww's attention
            # processors, no alpha) and, as the reference, the module with the same change merged in with numpy.
            weights, _ = read_safetensors(os.path.join(mm_case, "weights.safetensors"))
            rng = np.random.default_rng(5)
            layers = ["down_blocks.0.motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.0.to_q",
                      "mid_block.motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.1.to_out.0",
                      "up_blocks.3.motion_modules.2.temporal_transformer.transformer_blocks.0.attention_blocks.0.to_v"]
            conrevo, guoyww = {}, {}
            merged = {k: np.frombuffer(b, np.float16).astype(np.float32).reshape(shape) for k, (_, shape, b) in weights.items()}
            for layer in layers:
                c = merged[layer + ".weight"].shape[0]
                up = rng.standard_normal((c, 4)).astype(np.float32) * 0.3
                down = rng.standard_normal((4, c)).astype(np.float32) * 0.3
                name = layer.replace(".", "_")
                conrevo[name + ".lora_up.weight"] = ("F32", [c, 4], up.tobytes())
                conrevo[name + ".lora_down.weight"] = ("F32", [4, c], down.tobytes())
                conrevo[name + ".alpha"] = ("F32", [], np.float32(2).tobytes())
                processor = layer.replace("attention_blocks.0.", "attention_blocks.0.processor.").replace(
                    "attention_blocks.1.", "attention_blocks.1.processor.").replace("to_out.0", "to_out")
                guoyww[processor + "_lora.up.weight"] = ("F32", [c, 4], (up * 0.5).tobytes())
                guoyww[processor + "_lora.down.weight"] = ("F32", [4, c], down.tobytes())
                merged[layer + ".weight"] = merged[layer + ".weight"] + 0.8 * (2 / 4) * up @ down
            os.makedirs(os.path.join(models, "Lora"))
            write_safetensors(os.path.join(models, "Lora", "mm_pan.safetensors"), conrevo)
            write_safetensors(os.path.join(models, "Lora", "mm_pan_orig.safetensors"), guoyww)
            write_safetensors(os.path.join(models, "AnimateDiff", "mm_merged.safetensors"),
                              {k: ("F32", list(v.shape), np.ascontiguousarray(v).tobytes()) for k, v in merged.items()})

        previous = prepare

        def prepare(models):
            previous(models)
            motion_lora(models)

        cls.inputs = tempfile.TemporaryDirectory()  # the folder requests may name (video_path)
        cls.daemon = DaemonProcess(prepare_models=prepare, env={"ATELIER_ANIMATEDIFF_INPUT_DIRS": cls.inputs.name})
        cls.client = Client(cls.daemon.address)
        cls.cli = os.path.join(os.path.dirname(os.environ["ATELIER_DAEMON"]), "atelier")

    @classmethod
    def tearDownClass(cls):
        cls.client.close()
        assert cls.daemon.stop() == 0
        cls.inputs.cleanup()

    def test_controlnet_hints_each_frame_with_its_image(self):
        def circle(x):
            img = np.full((64, 64, 3), 255, np.uint8)
            yy, xx = np.mgrid[:64, :64]
            img[(yy - 32) ** 2 + (xx - x) ** 2 < 120] = (255, 0, 0)
            buffer = io.BytesIO()
            Image.fromarray(img).save(buffer, format="PNG")
            return base64.b64encode(buffer.getvalue()).decode()

        a, b = circle(16), circle(48)

        def run(unit):
            unit = dict(enabled=True, module="none", model="control_tiny", weight=1.0, **unit)
            results, _ = self.clip(format=[], extra_scripts={"controlnet": {"args": [unit]}})
            self.assertEqual(len(results), 17)  # the 16 frames, then the unit's detected map (as the extension)
            return [np.asarray(Image.open(io.BytesIO(r.image)).convert("RGB")).astype(int) for r in results[:16]]

        single = run({"image": a})
        same = run({"batch_images": [a] * 16})  # one image per frame, all the same: the single-image clip
        self.assertEqual(max(np.abs(s - t).max() for s, t in zip(single, same)), 0)
        moving = run({"batch_images": [a] * 8 + [b] * 8})  # frames 8..15 see the other circle (through the windows)
        self.assertGreater(np.abs(moving[15] - single[15]).max(), 0)
        with self.assertRaises(AtelierError) as e:
            run({"batch_images": ["not base64 at all"]})
        self.assertIn("cannot be decoded", e.exception.details)

    def clip(self, prompt_override=None, extra_scripts=None, **unit):
        ad = dict(enable=True, model="mm_tiny.safetensors", video_length=16, batch_size=8, format=["GIF", "MP4"], fps=10)
        ad.update(unit)
        request = dict(BASE, alwayson_scripts={"AnimateDiff": {"args": [ad]}, **(extra_scripts or {})})
        if prompt_override is not None:
            request["prompt"] = prompt_override
        events = list(self.client.webui(request))
        results = [e for e in events if isinstance(e, Result)]
        artifacts = {e.name: e.data for e in events if isinstance(e, Artifact)}
        return results, artifacts

    def test_sixteen_frames_with_context_eight(self):
        results, artifacts = self.clip()
        self.assertEqual(len(results), 16)
        frames = [np.asarray(Image.open(io.BytesIO(r.image)).convert("RGB")).astype(int) for r in results]
        self.assertEqual([r.seed for r in results], list(range(7, 23)))  # seed + i per frame
        self.assertIn('AnimateDiff: "model: mm_tiny.safetensors, video_length: 16, fps: 10, loop_number: 0, '
                      'closed_loop: R-P, batch_size: 8, stride: 1, overlap: 2, interp: Off, interp_x: 10, '
                      'freeinit_enable: False"', results[0].infotext)
        gif = [n for n in artifacts if n.endswith(".gif")]
        mp4 = [n for n in artifacts if n.endswith(".mp4")]
        self.assertEqual(len(gif), 1, artifacts.keys())
        self.assertEqual(len(mp4), 1, artifacts.keys())
        image = Image.open(io.BytesIO(artifacts[gif[0]]))
        self.assertEqual(image.n_frames, 16)
        self.assertEqual(image.info["duration"], 100)  # 1000 / fps
        self.assertEqual(mp4_frames_and_fps(artifacts[mp4[0]]), (16, 10.0))
        # The motion module changes the frames (the same batch without it differs); the clip is reproducible.
        plain = [e for e in self.client.webui(dict(BASE, batch_size=16)) if isinstance(e, Result)]
        self.assertGreater(max(np.abs(np.asarray(Image.open(io.BytesIO(p.image)).convert("RGB")).astype(int) - f).max()
                               for p, f in zip(plain, frames)), 0)
        again, _ = self.clip()
        for r, f in zip(again, frames):
            self.assertEqual(np.abs(np.asarray(Image.open(io.BytesIO(r.image)).convert("RGB")).astype(int) - f).max(), 0)
        # Pasting the infotext (WebUI's PNG Info -> txt2img) makes the same clip.
        pasted = [e for e in self.client.webui({"infotext": results[0].infotext}) if isinstance(e, Result)]
        self.assertEqual(len(pasted), 16)
        for r, f in zip(pasted, frames):
            self.assertEqual(np.abs(np.asarray(Image.open(io.BytesIO(r.image)).convert("RGB")).astype(int) - f).max(), 0)

    def test_first_frame_arrives_before_the_last_is_decoded(self):
        ad = dict(enable=True, model="mm_tiny.safetensors", video_length=16, batch_size=8, format=[])
        arrivals, finished = [], None
        for e in self.client.webui(dict(BASE, alwayson_scripts={"AnimateDiff": {"args": [ad]}})):
            if isinstance(e, Result):
                arrivals.append(time.monotonic())
            elif isinstance(e, Finished):
                finished = e
        self.assertEqual(len(arrivals), 16)
        decode = finished.timings["decode"]
        self.assertGreater(decode, 0.02)
        # Frames leave one by one as the VAE decodes them: the first arrives while the other 15 are still to be
        # decoded (all at the end would put the arrivals within a few milliseconds of each other).
        self.assertGreater(arrivals[-1] - arrivals[0], 0.5 * decode * 15 / 16)

    def test_rife_doubles_the_clip(self):
        results, artifacts = self.clip(interp="RIFE", interp_x=2, format=["GIF"])
        self.assertEqual(len(results), 31)
        gif = [n for n in artifacts if n.endswith(".gif")][0]
        self.assertEqual(Image.open(io.BytesIO(artifacts[gif])).n_frames, 31)

    def test_prompt_travel(self):
        travel = "a circle\n0: red\n8: blue\nwhite background"
        results, _ = self.clip(format=[], prompt_override=travel)
        self.assertEqual(len(results), 16)
        self.assertTrue(results[0].infotext.startswith(travel + "\nNegative prompt") or
                        results[0].infotext.startswith(travel + "\nSteps"), results[0].infotext[:120])
        plain, _ = self.clip(format=[], prompt_override="a circle, red, white background")
        first = [np.asarray(Image.open(io.BytesIO(r.image)).convert("RGB")).astype(int) for r in (results[0], plain[0])]
        last = [np.asarray(Image.open(io.BytesIO(r.image)).convert("RGB")).astype(int) for r in (results[15], plain[15])]
        self.assertGreater(np.abs(last[0] - last[1]).max(), np.abs(first[0] - first[1]).max())  # travels towards blue
        with self.assertRaises(AtelierError) as e:
            self.clip(format=[], prompt_override="0: red\n20: blue")
        self.assertIn("frame 20", e.exception.details)

    def frames_of(self, results):
        return [np.asarray(Image.open(io.BytesIO(r.image)).convert("RGB")).astype(int) for r in results]

    def test_freeinit(self):
        plain, _ = self.clip(format=[])
        # A cut-off of 0 keeps no low frequency: every iteration restarts from the first noise (through the FFT), so
        # the deterministic sampler gives the plain clip again; the default filter gives another clip, reproducibly.
        same, _ = self.clip(format=[], freeinit_enable=True, freeinit_ds=0, freeinit_iters=2)
        self.assertLessEqual(max(np.abs(a - b).max() for a, b in zip(self.frames_of(plain), self.frames_of(same))), 1)
        for method in ("butterworth", "gaussian", "box", "ideal"):
            mixed, _ = self.clip(format=[], freeinit_enable=True, freeinit_filter=method, freeinit_iters=2)
            self.assertEqual(len(mixed), 16)
            self.assertGreater(max(np.abs(a - b).max() for a, b in zip(self.frames_of(plain), self.frames_of(mixed))),
                               1, method)
            self.assertIn("freeinit_enable: True", mixed[0].infotext)
        again, _ = self.clip(format=[], freeinit_enable=True, freeinit_filter="ideal", freeinit_iters=2)
        self.assertEqual(max(np.abs(a - b).max() for a, b in zip(self.frames_of(mixed), self.frames_of(again))), 0)
        for unit, text in (({"freeinit_filter": "median"}, "butterworth"), ({"freeinit_iters": 0}, "freeinit_iters")):
            with self.assertRaises(AtelierError) as e:
                self.clip(format=[], freeinit_enable=True, **unit)
            self.assertEqual(e.exception.code, grpc.StatusCode.INVALID_ARGUMENT)
            self.assertIn(text, e.exception.details)

    def img2img_clip(self, **unit):
        def png(color):
            buffer = io.BytesIO()
            Image.new("RGB", (64, 64), color).save(buffer, format="PNG")
            return base64.b64encode(buffer.getvalue()).decode()

        ad = dict(enable=True, model="mm_tiny.safetensors", video_length=8, batch_size=8, format=[])
        ad.update(unit)
        if ad.get("last_frame") == "blue":
            ad["last_frame"] = png((0, 0, 255))
        request = dict(BASE, init_images=[png((255, 0, 0))], denoising_strength=0.5,
                       alwayson_scripts={"AnimateDiff": {"args": [ad]}})
        return self.frames_of([e for e in self.client.webui(request, img2img=True) if isinstance(e, Result)]), request

    def test_img2img_latent_strength_per_frame(self):
        events = list(self.client.webui(self.img2img_clip()[1], img2img=True))
        results = [e for e in events if isinstance(e, Result)]
        self.assertEqual(len(results), 8)
        self.assertIn("freeinit_enable: False, latent_power: 1, latent_scale: 32, latent_power_last: 1, "
                      "latent_scale_last: 32\"", results[0].infotext)
        default = self.frames_of(results)
        # latent_scale 1: frame 0 keeps the init latent (alpha 1), every later frame starts from noise alone
        # (alpha 1 - i < 0 -> 0); a huge scale keeps the init latent in every frame.
        steep, _ = self.img2img_clip(latent_scale=1)
        flat, _ = self.img2img_clip(latent_scale=1e6)
        late = lambda frames: np.mean([np.abs(f - frames[0]).mean() for f in frames[4:]])
        self.assertGreater(late(steep), late(flat))
        self.assertGreater(max(np.abs(a - b).max() for a, b in zip(default, steep)), 0)
        # A last frame pulls the end of the clip towards it; the clip stays reproducible.
        towards, _ = self.img2img_clip(last_frame="blue", latent_scale=4, latent_scale_last=4)
        self.assertGreater(np.abs(towards[7] - default[7]).max(), 0)
        again, _ = self.img2img_clip(last_frame="blue", latent_scale=4, latent_scale_last=4)
        self.assertEqual(max(np.abs(a - b).max() for a, b in zip(towards, again)), 0)
        for unit, text in (({"last_frame": "not an image"}, "last_frame"), ({"latent_scale": 0}, "latent_scale")):
            with self.assertRaises(AtelierError) as e:
                self.img2img_clip(**unit)
            self.assertEqual(e.exception.code, grpc.StatusCode.INVALID_ARGUMENT)
            self.assertIn(text, e.exception.details)

    def test_controlnet_frames_from_a_video(self):
        # Eight distinct frames, each shown twice: the extension's mpdecimate keeps the first of each pair.
        def frame(i):
            img = np.full((64, 64, 3), 255, np.uint8)
            img[:, i * 8:(i + 1) * 8] = (200, 30, 30) if i % 2 else (30, 30, 200)
            buffer = io.BytesIO()
            Image.fromarray(img).save(buffer, format="PNG")
            return base64.b64encode(buffer.getvalue()).decode()

        distinct = [frame(i) for i in range(8)]
        files = {}
        for fmt in ("GIF", "MP4"):
            events = list(self.client.invoke("export", "export", {"images": [f for f in distinct for _ in range(2)],
                                                                  "formats": [fmt], "fps": 8}))
            files[fmt] = [e.data for e in events if isinstance(e, Artifact)][0]

        def run(unit_extra, **ad):
            unit = dict(dict(enabled=True, module="none", model="control_tiny", weight=1.0), **unit_extra)
            results, _ = self.clip(format=[], video_length=0, extra_scripts={"controlnet": {"args": [unit]}}, **ad)
            return results

        direct = run({"batch_images": distinct})
        self.assertEqual(len(direct), 9)  # 8 frames (the shortest batch bounds the video), then the detected map
        self.assertIn("video_length: 8, fps: 10, loop_number: 0, closed_loop: R-P, batch_size: 8", direct[0].infotext)
        gif = run({}, video_source=base64.b64encode(files["GIF"]).decode())
        self.assertEqual(len(gif), 9)
        # A GIF of these flat colours keeps them (up to its palette's rounding): the clip is, within a level or two, the
        # one made from the images themselves, and far from a clip hinted with them in another order.
        self.assertLessEqual(max(np.abs(a - b).max() for a, b in zip(self.frames_of(direct[:8]), self.frames_of(gif[:8]))), 3)
        first = np.asarray(Image.open(io.BytesIO(base64.b64decode(distinct[0]))).convert("RGB")).astype(int)
        self.assertLessEqual(np.abs(self.frames_of(gif[8:])[0] - first).max(), 3)  # the unit's map: the video's frame 0
        self.assertGreater(np.abs(self.frames_of(gif[8:])[0] - first[:, ::-1]).max(), 100)
        mp4 = run({}, video_source="data:video/mp4;base64," + base64.b64encode(files["MP4"]).decode())
        self.assertEqual(len(mp4), 9)
        # video_path: a folder on the daemon's machine, only inside ATELIER_ANIMATEDIFF_INPUT_DIRS.
        with tempfile.TemporaryDirectory() as tmp:
            for i, f in enumerate(distinct[:6]):
                with open(os.path.join(tmp, "%03d.png" % i), "wb") as out:
                    out.write(base64.b64decode(f))
            with self.assertRaises(AtelierError) as e:
                run({}, video_path=tmp)
            self.assertEqual(e.exception.code, grpc.StatusCode.PERMISSION_DENIED)
            self.assertIn("ATELIER_ANIMATEDIFF_INPUT_DIRS", e.exception.details)
        folder = os.path.join(self.inputs.name, "clip")
        os.makedirs(folder)
        for i, f in enumerate(distinct[:6]):
            with open(os.path.join(folder, "%03d.png" % i), "wb") as out:
                out.write(base64.b64decode(f))
        from_folder = run({}, video_path=folder)
        self.assertEqual(len(from_folder), 7)
        self.assertIn("video_length: 6,", from_folder[0].infotext)
        # mask_path: each frame's mask goes with it (an inpaint unit: the image with its masked pixels as -1).
        def mask(i, left):
            m = np.zeros((64, 64), np.uint8)
            m[:, :32] = 255 if left else 0
            m[:, 32:] = 0 if left else 255
            buffer = io.BytesIO()
            Image.fromarray(m).save(buffer, format="PNG")
            return base64.b64encode(buffer.getvalue()).decode()

        masks = os.path.join(self.inputs.name, "masks")
        os.makedirs(masks)
        for i in range(6):
            with open(os.path.join(masks, "%03d.png" % i), "wb") as out:
                out.write(base64.b64decode(mask(i, i % 2 == 0)))
        inpaint = {"module": "inpaint"}
        from_masks = run(inpaint, video_path=folder, mask_path=masks)
        self.assertEqual(len(from_masks), 7)
        given = run(dict(inpaint, batch_images=[{"image": distinct[i], "mask": mask(i, i % 2 == 0)} for i in range(6)]))
        self.assertEqual(max(np.abs(a - b).max() for a, b in zip(self.frames_of(from_masks), self.frames_of(given))), 0)
        flipped = run(dict(inpaint, batch_images=[{"image": distinct[i], "mask": mask(i, i % 2 == 1)} for i in range(6)]))
        self.assertGreater(max(np.abs(a - b).max() for a, b in zip(self.frames_of(flipped[6:]), self.frames_of(given[6:]))), 100)
        for unit, code, text in (({"video_source": base64.b64encode(b"x" * 400).decode()}, grpc.StatusCode.INVALID_ARGUMENT, "video_source"),
                                 ({"video_path": os.path.join(folder, "missing")}, grpc.StatusCode.NOT_FOUND, "video_path"),
                                 ({"video_path": folder, "mask_path": os.path.join(folder, "none")}, grpc.StatusCode.NOT_FOUND, "mask_path")):
            with self.assertRaises(AtelierError) as e:
                run({}, **unit)
            self.assertEqual(e.exception.code, code, e.exception.details)
            self.assertIn(text, e.exception.details)

    def test_motion_lora(self):
        plain, _ = self.clip(format=[])
        merged, _ = self.clip(format=[], model="mm_merged.safetensors")
        for tag in ("<lora:mm_pan:0.8>", "<lora:mm_pan_orig:0.8>"):
            patched, _ = self.clip(format=[], prompt_override=BASE["prompt"] + " " + tag)
            # The clip with the LoRA on the module is the clip of the module merged offline.
            self.assertLessEqual(max(np.abs(a - b).max() for a, b in zip(self.frames_of(patched), self.frames_of(merged))), 1, tag)
            self.assertGreater(max(np.abs(a - b).max() for a, b in zip(self.frames_of(patched), self.frames_of(plain))), 1, tag)
            self.assertIn("Lora hashes:", patched[0].infotext)
        again, _ = self.clip(format=[])  # the module is the plain one again after the LoRA job
        self.assertEqual(max(np.abs(a - b).max() for a, b in zip(self.frames_of(plain), self.frames_of(again))), 0)

    def test_bad_arguments(self):
        bad = [({"model": "nowhere.safetensors"}, grpc.StatusCode.NOT_FOUND, "mm_tiny.safetensors"),
               ({"model": "broken.safetensors"}, grpc.StatusCode.INVALID_ARGUMENT, "broken"),
               ({"video_length": -1}, grpc.StatusCode.INVALID_ARGUMENT, "video_length"),
               ({"video_length": 100000}, grpc.StatusCode.INVALID_ARGUMENT, "video_length"),
               ({"batch_size": 40}, grpc.StatusCode.INVALID_ARGUMENT, "batch_size"),
               ({"overlap": 8}, grpc.StatusCode.INVALID_ARGUMENT, "overlap"),
               ({"stride": 0}, grpc.StatusCode.INVALID_ARGUMENT, "stride"),
               ({"closed_loop": "B"}, grpc.StatusCode.INVALID_ARGUMENT, "R+P"),
               ({"interp": "FILM"}, grpc.StatusCode.UNIMPLEMENTED, "RIFE"),
               ({"colour": 1}, grpc.StatusCode.INVALID_ARGUMENT, "closed_loop")]
        for unit, code, text in bad:
            with self.assertRaises(AtelierError) as e:
                self.clip(**unit)
            self.assertEqual(e.exception.code, code, (unit, e.exception.details))
            self.assertIn(text, e.exception.details)
        results, _ = self.clip(video_length=4, batch_size=4, format=[])  # the daemon goes on
        self.assertEqual(len(results), 4)

    def test_cli_saves_frames_and_files(self):
        payload = dict(BASE, alwayson_scripts={"AnimateDiff": {"args": [
            dict(enable=True, model="mm_tiny.safetensors", video_length=8, batch_size=8, format=["GIF"])]}})
        with tempfile.TemporaryDirectory() as tmp:
            request = os.path.join(tmp, "request.json")
            with open(request, "w") as f:
                json.dump(payload, f)
            out = subprocess.run([self.cli, "--server", self.daemon.address, "txt2img", "--json", request, "-o", tmp],
                                 capture_output=True, text=True, timeout=300)
            self.assertEqual(out.returncode, 0, out.stderr)
            names = os.listdir(tmp)
            self.assertEqual(len([n for n in names if n.endswith(".png")]), 8, names)
            gif = [n for n in names if n.endswith(".gif")]
            self.assertEqual(len(gif), 1, names)
            self.assertEqual(Image.open(os.path.join(tmp, gif[0])).n_frames, 8)
        with tempfile.TemporaryDirectory() as tmp:  # the same clip from the --animatediff flag
            out = subprocess.run([self.cli, "--server", self.daemon.address, "txt2img", "-p", BASE["prompt"], "--steps", "3",
                                  "--seed", "7", "-W", "64", "-H", "64", "--sampler", "Euler", "--cfg-scale", "5",
                                  "--animatediff", "model=mm_tiny.safetensors,video_length=8,batch_size=8,format=GIF+TXT",
                                  "-o", tmp], capture_output=True, text=True, timeout=300)
            self.assertEqual(out.returncode, 0, out.stderr)
            names = os.listdir(tmp)
            self.assertEqual(len([n for n in names if n.endswith(".png")]), 8, names)
            self.assertEqual(len([n for n in names if n.endswith(".gif") or n.endswith(".txt")]), 2, names)
            self.assertIn("AnimateDiff:", out.stdout)


if __name__ == "__main__":
    unittest.main()
