"""The export plugin through a real atelierd (the embedded model) and the real CLI: a txt2img batch of 4 asking for a
contact sheet and a GIF (and the other formats), saved with WebUI's names and decoded back; bad options are clear
errors; a failed export leaves the images delivered; the stand-alone invoke.

Run by ctest with ATELIER_DAEMON and PYTHONPATH (clients/python) set; numpy and PIL from scripts/setup."""

import base64
import io
import json
import os
import re
import subprocess
import tempfile
import unittest

import grpc
import numpy as np
from PIL import Image

from atelier_client import AtelierError, Artifact, Client, Finished, Result
from daemon_process import DaemonProcess


def frames_of(path):
    img = Image.open(path)
    out = []
    for i in range(getattr(img, "n_frames", 1)):
        img.seek(i)
        out.append((np.asarray(img.convert("RGB")).astype(np.int16), img.info.get("duration")))
    return img, out


class ExportTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.daemon = DaemonProcess()
        cls.client = Client(cls.daemon.address)
        cls.cli = os.path.join(os.path.dirname(os.environ["ATELIER_DAEMON"]), "atelier")

    @classmethod
    def tearDownClass(cls):
        cls.client.close()
        assert cls.daemon.stop() == 0

    def payload(self, export, **fields):
        p = dict(prompt="a red circle on a white background", steps=6, seed=77, batch_size=4,
                 sampler_name="DPM++ 2M", alwayson_scripts={"export": {"args": [export]}})
        p.update(fields)
        return p

    def test_batch_of_four_through_the_cli_gives_a_sheet_and_a_gif_with_webui_names(self):
        export = {"enabled": True, "formats": ["SHEET", "GIF"], "fps": 4, "loop_number": 2,
                  "sheet": {"cell_size": 64, "columns": 2, "label": "seed"}}
        with tempfile.TemporaryDirectory() as tmp:
            payload = os.path.join(tmp, "payload.json")
            with open(payload, "w") as f:
                json.dump(self.payload(export), f)
            out = subprocess.run([self.cli, "--server", self.daemon.address, "txt2img", "--json", payload, "-o", tmp,
                                  "-q"], capture_output=True, text=True, timeout=300)
            self.assertEqual(out.returncode, 0, out.stderr)
            saved = [os.path.basename(p) for p in out.stdout.split()]
            images = sorted(n for n in saved if re.fullmatch(r"\d{5}-\d+\.png", n))
            self.assertEqual(images, ["00000-77.png", "00001-78.png", "00002-79.png", "00003-80.png"])
            # The export files: one sequence number for the job, then WebUI/AnimateDiff's "{seq:05}-{seed}".
            self.assertIn("00004-77.gif", saved)
            self.assertIn("00004-77-sheet.png", saved)
            pngs = [np.asarray(Image.open(os.path.join(tmp, n)).convert("RGB")).astype(np.int16) for n in images]
            infotext = Image.open(os.path.join(tmp, images[0])).info["parameters"]
            gif, gif_frames = frames_of(os.path.join(tmp, "00004-77.gif"))
            self.assertEqual(len(gif_frames), 4)
            self.assertEqual(gif.size, (64, 64))
            self.assertEqual(gif.info.get("loop"), 2)
            self.assertEqual(gif.info.get("comment", b"").decode(), infotext)
            for (pixels, duration), want in zip(gif_frames, pngs):
                self.assertEqual(duration, 250)  # 1000 / fps
                self.assertLess(np.abs(pixels - want).mean(), 12)  # a 256-colour palette over 4 frames
            sheet = Image.open(os.path.join(tmp, "00004-77-sheet.png"))
            self.assertEqual(sheet.info["parameters"], infotext)
            self.assertEqual(sheet.size[0], 2 * 64 + 3 * 8)  # 2 columns of 64, spacing 8
            cells = np.asarray(sheet.convert("RGB")).astype(np.int16)
            # The first cell (after the header) is the first image itself (64 px: no resize).
            top = [y for y in range(cells.shape[0]) if np.abs(cells[y, 8:72] - pngs[0][0]).max() == 0]
            self.assertTrue(top, "the first image is not in the sheet")
            y = top[0]
            self.assertEqual(np.abs(cells[y:y + 64, 8:72] - pngs[0]).max(), 0)

    def test_every_format_through_the_python_client(self):
        export = {"enabled": True, "formats": ["GIF", "MP4", "WEBM", "WEBP", "PNG", "TXT", "SHEET"], "fps": 8,
                  "request_id": "r1"}
        with tempfile.TemporaryDirectory() as tmp:
            paths = self.client.webui(self.payload(export, batch_size=2)).save(tmp)
            names = sorted(os.path.basename(p) for p in paths)
            # One sequence number for the job's export files (taken when the first arrives: the PNG frames stream
            # with the images), then "{seed}-{request_id}".
            gif = [n for n in names if n.endswith(".gif")]
            self.assertEqual(len(gif), 1, names)
            seq = gif[0].split("-")[0]
            for want in ["77-r1.gif", "77-r1.mp4", "77-r1.webm", "77-r1.webp", "77-r1.txt", "77-r1-sheet.png",
                         "77-r1-00000.png", "77-r1-00001.png"]:
                self.assertIn("%s-%s" % (seq, want), names)
            image_names = [n for n in names if re.fullmatch(r"\d{5}-\d+\.png", n)]
            self.assertEqual(len(image_names), 2)
            with open(os.path.join(tmp, "%s-77-r1.txt" % seq)) as f:
                infotext = f.read()
            first = [n for n in image_names if n.endswith("-77.png")][0]
            second = [n for n in image_names if n.endswith("-78.png")][0]
            self.assertEqual(Image.open(os.path.join(tmp, first)).info["parameters"], infotext)
            self.assertEqual(Image.open(os.path.join(tmp, "%s-77-r1-00001.png" % seq)).info["parameters"],
                             Image.open(os.path.join(tmp, second)).info["parameters"])
            webp = Image.open(os.path.join(tmp, "%s-77-r1.webp" % seq))
            self.assertGreaterEqual(getattr(webp, "n_frames", 1), 1)
            self.assertIn(b"UNICODE", webp.info.get("exif", b""))
            for ext in ("mp4", "webm"):
                with open(os.path.join(tmp, "%s-77-r1.%s" % (seq, ext)), "rb") as f:
                    data = f.read()
                self.assertGreater(len(data), 100)
                self.assertIn(infotext.split("\n")[0].encode(), data)  # the comment metadata

    def test_bad_options_and_failed_exports(self):
        for export, text in [({"enabled": True, "formats": ["AVI"]}, "GIF, MP4"),
                             ({"enabled": True, "fps": 0}, "fps"),
                             ({"enabled": True, "fps": 100000}, "fps"),
                             ({"enabled": True, "formats": ["SHEET"], "sheet": {"cell_size": 2048, "columns": 64}},
                              "contact sheet")]:
            with self.subTest(export=export):
                with self.assertRaises(AtelierError) as e:
                    list(self.client.webui(self.payload(export, batch_size=1, n_iter=64)))
                self.assertEqual(e.exception.code, grpc.StatusCode.INVALID_ARGUMENT)
                self.assertIn(text, e.exception.details)
        # Frames of different sizes (an image and a smaller one through invoke): the video fails with a message;
        # the sheet is still made.
        big = io.BytesIO()
        Image.new("RGB", (32, 32), (255, 0, 0)).save(big, format="PNG")
        small = io.BytesIO()
        Image.new("RGB", (16, 16), (0, 0, 255)).save(small, format="PNG")
        with self.assertRaises(AtelierError) as e:
            list(self.client.invoke("export", "export", {
                "images": [base64.b64encode(big.getvalue()).decode(), base64.b64encode(small.getvalue()).decode()],
                "formats": ["GIF"]}))
        self.assertIn("16x16 but the gif is 32x32", e.exception.details)

    def test_outputs_dir_saves_on_the_daemon_side_and_an_unwritable_one_is_refused(self):
        with tempfile.TemporaryDirectory() as tmp:
            outputs = os.path.join(tmp, "outputs")
            daemon = DaemonProcess(extra_args=["--outputs-dir", outputs])
            try:
                with Client(daemon.address) as client:
                    list(client.webui(self.payload({"enabled": True, "formats": ["GIF", "TXT"]}, batch_size=2)))
            finally:
                self.assertEqual(daemon.stop(), 0)
            dated = os.path.join(outputs, "txt2img-images", "AnimateDiff")
            days = os.listdir(dated)
            self.assertEqual(len(days), 1)
            self.assertTrue(re.fullmatch(r"\d{4}-\d{2}-\d{2}", days[0]), days)
            self.assertEqual(sorted(os.listdir(os.path.join(dated, days[0]))), ["00000-77.gif", "00000-77.txt"])
            blocker = os.path.join(tmp, "a-file")
            with open(blocker, "w") as f:
                f.write("x")
            out = subprocess.run([os.environ["ATELIER_DAEMON"], "--listen", "127.0.0.1:0", "--models-dir", tmp,
                                  "--outputs-dir", os.path.join(blocker, "sub")], capture_output=True, text=True,
                                 timeout=120)
            self.assertNotEqual(out.returncode, 0)
            self.assertIn("--outputs-dir", out.stderr)

    def test_stand_alone_invoke_makes_files_from_images(self):
        images = []
        for colour in [(255, 0, 0), (0, 255, 0), (0, 0, 255)]:
            buf = io.BytesIO()
            Image.new("RGB", (48, 32), colour).save(buf, format="PNG")
            images.append(base64.b64encode(buf.getvalue()).decode())
        events = list(self.client.invoke("export", "export", {"images": images, "formats": ["GIF", "SHEET"],
                                                              "seeds": [5, 6, 7], "fps": 10,
                                                              "infotext": "three colours"}))
        artifacts = {e.name: e.data for e in events if isinstance(e, Artifact)}
        self.assertEqual(sorted(artifacts), ["5-sheet.png", "5.gif"])
        result = json.loads([e for e in events if isinstance(e, Finished)][0].invoke_result_json)
        self.assertEqual(sorted(result["files"]), ["5-sheet.png", "5.gif"])
        gif = Image.open(io.BytesIO(artifacts["5.gif"]))
        self.assertEqual(gif.n_frames, 3)
        gif.seek(1)
        self.assertEqual(gif.convert("RGB").getpixel((10, 10)), (0, 255, 0))
        self.assertEqual(gif.info.get("comment"), b"three colours")


if __name__ == "__main__":
    unittest.main()
