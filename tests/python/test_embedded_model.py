"""The embedded model (assets/models/Stable-diffusion/atelier-shapes) through a real atelierd, scored from pixels by
the project's scorer (training/world.py): it draws what held-out captions ask for, and behaves as a user of any SD
model expects (seeds, CFG, img2img strength, inpainting, emphasis, hires fix). The scorer itself is checked on the
generator's own renders.

Run by ctest with ATELIER_DAEMON (the atelierd binary) and PYTHONPATH (clients/python) set; needs
python3-numpy and python3-pil. Prints the measured figures (the README quotes them) with the chance levels."""

import io
import os
import random
import sys
import unittest

import numpy as np
from PIL import Image

from atelier_client import Client, Result
from daemon_process import DaemonProcess

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
sys.path.insert(0, os.path.join(SOURCE, "training"))
import world  # noqa: E402

# The bars on held-out captions (WebUI defaults: 20 steps, CFG 7).
REQUIRED = {"background": 0.90, "colour": 0.85, "position": 0.90, "size": 0.85, "kind": 0.60, "binding": 0.60}


def pixels(result):
    return np.asarray(Image.open(io.BytesIO(result.image)).convert("RGB"))


def png(array):
    out = io.BytesIO()
    Image.fromarray(array).save(out, format="PNG")
    return out.getvalue()


class ScorerTest(unittest.TestCase):
    def test_reads_every_attribute_of_the_generators_renders(self):
        rng = random.Random(5)
        scenes = world.evaluation_scenes() + [world.random_scene(rng) for _ in range(400)]
        for scene in scenes:
            image = world.render(scene, rng)
            hits = world.score(scene, image)
            self.assertEqual(min(hits.values()), 1, (world.caption(scene), world.read_scene(image)))
            # At twice the size too (hires fix output).
            self.assertEqual(min(world.score(scene, world.render(scene, size=128)).values()), 1)

    def test_held_out_combinations_never_appear_in_training(self):
        rng = random.Random(9)
        for _ in range(2000):
            self.assertFalse(world.held_out(world.scene_key(world.training_scene(rng))))
        held = [s for s in world.all_scenes(False) if world.held_out(world.scene_key(s))]
        self.assertAlmostEqual(len(held) / len(world.all_scenes(False)), 0.1, delta=0.03)


class EmbeddedModelTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.daemon = DaemonProcess()
        cls.client = Client(cls.daemon.address)

    @classmethod
    def tearDownClass(cls):
        cls.client.close()
        assert cls.daemon.stop() == 0

    def generate(self, prompt, **fields):
        request = dict(steps=20, cfg_scale=7.0, seed=1, sampler_name="DPM++ 2M")
        request.update(fields)
        return [e for e in self.client.txt2img(prompt, **request) if isinstance(e, Result)]

    def accuracy(self, scenes, seed=1, **fields):
        totals = {}
        for i, scene in enumerate(scenes):
            image = pixels(self.generate(world.caption(scene), seed=seed + i, **fields)[0])
            for k, v in world.score(scene, image).items():
                totals.setdefault(k, []).append(v)
        return {k: sum(v) / len(v) for k, v in totals.items()}

    def test_draws_held_out_captions(self):
        scenes = world.evaluation_scenes()
        for sampler in ("DPM++ 2M", "Euler a"):
            got = self.accuracy(scenes, sampler_name=sampler)
            print(f"\nheld-out captions, {sampler}, 20 steps, CFG 7 (chance in brackets): " + ", ".join(
                f"{k} {got[k]:.2f} ({world.CHANCE[k]:.2f})" for k in REQUIRED), flush=True)
            for k, bar in REQUIRED.items():
                self.assertGreaterEqual(got[k], bar, f"{sampler}: {k}")

    def test_native_size_when_the_request_names_none(self):
        result = self.generate("a small red circle on the left, blue background")[0]
        self.assertEqual(pixels(result).shape, (64, 64, 3))
        self.assertIn("Size: 64x64", result.infotext)
        self.assertIn("Model: atelier-shapes", result.infotext)

    def test_seeds(self):
        prompt = "a large green triangle in the centre, white background"
        a, b, c = (pixels(self.generate(prompt, seed=s)[0]) for s in (7, 7, 8))
        self.assertTrue(np.array_equal(a, b))
        self.assertGreater(np.abs(a.astype(int) - c.astype(int)).mean(), 1.0)

    def test_cfg_1_follows_the_prompt_less_than_cfg_7(self):
        scenes = world.evaluation_scenes(16, 16, seed=3)
        low, high = self.accuracy(scenes, cfg_scale=1.0), self.accuracy(scenes, cfg_scale=7.0)
        mean = lambda d: sum(d.values()) / len(d)  # noqa: E731
        print(f"\nCFG 1: {mean(low):.2f}, CFG 7: {mean(high):.2f} (mean attribute accuracy)", flush=True)
        self.assertLess(mean(low), mean(high) - 0.05)

    def test_img2img_strength(self):
        # The init image and the new prompt differ in layout only (the shape's place): at denoising 0.3 the init's
        # layout stays, at 0.9 the prompt's is drawn.
        keeps, follows, cases = 0, 0, 0
        rng = random.Random(4)
        for colour, kind, bg, here, there in (("red", "square", "white", "left", "right"),
                                              ("yellow", "circle", "black", "top", "bottom"),
                                              ("blue", "triangle", "orange", "right", "left"),
                                              ("green", "square", "purple", "bottom", "top")):
            a = {"background": bg, "shapes": [{"colour": colour, "kind": kind, "position": here, "size": "large"}]}
            b = {"background": bg, "shapes": [{"colour": colour, "kind": kind, "position": there, "size": "large"}]}
            init = png(world.render(a, rng))
            for seed in range(2):
                cases += 1
                for strength in (0.3, 0.9):
                    events = self.client.img2img(init, world.caption(b), steps=20, cfg_scale=7.0, seed=seed,
                                                 sampler_name="DPM++ 2M", denoising_strength=strength)
                    read = world.read_scene(pixels([e for e in events if isinstance(e, Result)][0]))
                    place = read["shapes"][0]["position"] if read["shapes"] else None
                    keeps += int(strength == 0.3 and place == here)
                    follows += int(strength == 0.9 and place == there)
        print(f"\nimg2img: strength 0.3 kept the init's layout {keeps}/{cases}; 0.9 drew the prompt's "
              f"{follows}/{cases}", flush=True)
        self.assertGreaterEqual(keeps, cases * 3 // 4)
        self.assertGreaterEqual(follows, cases - 1)

    def test_inpainting_changes_only_the_masked_shape(self):
        scene = {"background": "white", "shapes": [{"colour": "red", "kind": "square", "position": "left",
                                                   "size": "large"},
                                                  {"colour": "blue", "kind": "circle", "position": "right",
                                                   "size": "large"}]}
        init_pixels = world.render(scene)
        mask = np.zeros((64, 64), np.uint8)
        mask[10:54, 2:31] = 255  # the red square's region
        changed = 0
        for seed in range(4):
            events = self.client.img2img(
                png(init_pixels), "a large green square on the left and a large blue circle on the right, white "
                "background", steps=20, cfg_scale=7.0, seed=seed, sampler_name="DPM++ 2M", denoising_strength=1.0,
                mask=png(np.stack([mask] * 3, axis=-1)), mask_blur=0, inpainting_fill=1, inpaint_full_res=False)
            image = pixels([e for e in events if isinstance(e, Result)][0])
            # Outside the (unblurred) mask the init image stands: WebUI pastes it back over the result.
            outside = mask == 0
            self.assertLessEqual(np.abs(image[outside].astype(int) - init_pixels[outside].astype(int)).max(), 1)
            # Inside, the square is now green: its pixels' median is nearest to green of the palette.
            region = image[18:46, 8:25].reshape(-1, 3)
            if world.nearest_colour(np.median(region, axis=0)) == "green":
                changed += 1
        self.assertGreaterEqual(changed, 3)

    def test_emphasis_moves_the_colour(self):
        # A shape named with two colours: the weight of "red" decides how much of it is red.
        palette = np.array(list(world.COLOURS.values()), float)

        def share(weight, colour):
            total = 0.0
            for seed in range(6):
                image = pixels(self.generate(f"a large (red:{weight}) blue circle in the centre, white background",
                                             seed=seed)[0]).astype(float)
                nearest = np.argmin(((image[16:48, 16:48, None, :] - palette) ** 2).sum(-1), axis=-1)
                total += (nearest == list(world.COLOURS).index(colour)).mean()
            return total / 6

        strong, weak = share(1.4, "red"), share(0.6, "red")
        print(f"\nshare of red in the circle: (red:1.4) {strong:.3f}, (red:0.6) {weak:.3f}", flush=True)
        self.assertGreater(strong, weak + 0.2)
        self.assertGreater(share(0.6, "blue"), share(1.4, "blue") + 0.2)

    def test_hires_fix_doubles_the_size_and_keeps_the_scene(self):
        # The second pass (at 128x128, a size the model never trained at) redraws the first pass's picture: the
        # scorer reads the same scene from both.
        scenes = world.evaluation_scenes(8, 0, seed=5)
        kept = 0
        for i, scene in enumerate(scenes):
            first = pixels(self.generate(world.caption(scene), seed=i)[0])
            hires = pixels(self.generate(world.caption(scene), seed=i, enable_hr=True, hr_scale=2.0,
                                         denoising_strength=0.4, hr_second_pass_steps=10)[0])
            self.assertEqual(hires.shape, (128, 128, 3))
            a, b = world.read_scene(first), world.read_scene(hires)
            # Same background, the main shape at the same place, its colour still there (at twice its native
            # size the model shades a shape into a neighbouring colour at times).
            kept += int(a["background"] == b["background"] and bool(a["shapes"]) and bool(b["shapes"])
                        and a["shapes"][0]["position"] == b["shapes"][0]["position"]
                        and a["shapes"][0]["colour"] in [s["colour"] for s in b["shapes"]])
        print(f"\nhires fix kept the first pass's scene in {kept}/{len(scenes)}", flush=True)
        self.assertGreaterEqual(kept, len(scenes) * 3 // 4)

if __name__ == "__main__":
    unittest.main()
