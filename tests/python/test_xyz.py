"""WebUI's X/Y/Z plot (script_name "x/y/z plot", script_args as WebUI's API takes them) through a real atelierd
and the CLI: 2 seeds x 2 CFG scales give 4 cell results (each equal to the plain job with those settings) and the
labelled grid whose cells are those results, with WebUI's grid infotext; range syntax, Prompt S/R; and bad plots
refused before anything runs.

Run by ctest with ATELIER_DAEMON and PYTHONPATH set."""

import io
import json
import os
import subprocess
import tempfile
import unittest

import grpc
import numpy as np
from PIL import Image

from atelier_client import AtelierError, Client, Result
from daemon_process import DaemonProcess

BASE = dict(prompt="a red circle on a white background", steps=4, sampler_name="Euler", width=64, height=64)


def args(x_type, x_values, y_type=0, y_values="", z_type=0, z_values="", x_dropdown=None, **flags):
    """The 18 positional script_args of WebUI 1.10's xyz_grid.py."""
    return [x_type, x_values, x_dropdown or [], y_type, y_values, [], z_type, z_values, [],
            flags.get("draw_legend", True), False, flags.get("include_sub_grids", False), flags.get("no_fixed_seeds", False),
            False, False, False, flags.get("margin_size", 0), flags.get("csv_mode", False)]


def pixels(result):
    return np.asarray(Image.open(io.BytesIO(result.image)).convert("RGB")).astype(int)


class XyzTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.daemon = DaemonProcess()
        cls.client = Client(cls.daemon.address)
        cls.cli = os.path.join(os.path.dirname(os.environ["ATELIER_DAEMON"]), "atelier")

    @classmethod
    def tearDownClass(cls):
        cls.client.close()
        assert cls.daemon.stop() == 0

    def plot(self, script_args, **fields):
        payload = dict(BASE, script_name="X/Y/Z plot", script_args=script_args, **fields)
        return [e for e in self.client.webui(payload) if isinstance(e, Result)]

    def plain(self, **fields):
        return [e for e in self.client.webui(dict(BASE, **fields)) if isinstance(e, Result)][0]

    def test_two_seeds_by_two_cfg_scales(self):
        results = self.plot(args(1, "1, 2", 6, "3, 7"))  # X: Seed, Y: CFG Scale (txt2img indices)
        self.assertEqual(len(results), 5)
        cells, grid = results[:4], results[4]
        for r, (seed, cfg) in zip(cells, [(1, 3), (2, 3), (1, 7), (2, 7)]):  # x varies fastest
            self.assertIn("Seed: %d," % seed, r.infotext)
            self.assertIn("CFG scale: %s," % float(cfg), r.infotext)
            self.assertEqual(np.abs(pixels(r) - pixels(self.plain(seed=seed, cfg_scale=cfg))).max(), 0)
        g = pixels(grid)
        w = h = 64
        pad_left = g.shape[1] - 2 * w
        self.assertEqual(pad_left, w * 3 // 4)  # row labels strip
        pad_top = g.shape[0] - 2 * h
        self.assertGreater(pad_top, 0)  # column labels
        for i, r in enumerate(cells):
            x, y = i % 2, i // 2
            cell = g[pad_top + y * h:pad_top + (y + 1) * h, pad_left + x * w:pad_left + (x + 1) * w]
            self.assertEqual(np.abs(cell - pixels(r)).max(), 0, "cell %d" % i)
        self.assertLess(g[:pad_top, pad_left:].min(), 128)  # text was drawn above the columns
        self.assertLess(g[pad_top:, :pad_left].min(), 128)  # and left of the rows
        self.assertIn('Script: X/Y/Z plot, X Type: Seed, X Values: "1, 2", Fixed X Values: "1, 2", '
                      'Y Type: CFG Scale, Y Values: "3, 7"', grid.infotext)
        self.assertTrue(grid.infotext.startswith(BASE["prompt"]))

    def test_ranges_prompt_sr_and_no_legend(self):
        results = self.plot(args(4, "2-6 (+2)", draw_legend=False), seed=3)  # Steps
        self.assertEqual([r.infotext.split("Steps: ")[1].split(",")[0] for r in results[:3]], ["2", "4", "6"])
        grid = pixels(results[3])
        self.assertEqual(grid.shape, (64, 192, 3))  # no labels: just the cells
        results = self.plot(args(7, "circle, square"), seed=3)  # Prompt S/R
        self.assertTrue(results[1].infotext.startswith("a red square on a white background"))
        self.assertEqual(np.abs(pixels(results[1]) - pixels(self.plain(seed=3, prompt="a red square on a white background"))).max(), 0)
        results = self.plot(args(9, "", x_dropdown=["Euler", "DDIM"]), seed=3)  # Sampler from the dropdown
        self.assertIn("Sampler: DDIM", results[1].infotext)
        self.assertIn('X Values: "Euler,DDIM"', results[2].infotext)

    def test_bad_plots_are_refused_before_anything_runs(self):
        bad = [("x/y/z plot", args(1, "1-100", 6, "1-100"), grpc.StatusCode.INVALID_ARGUMENT, "10000 cells"),
               ("prompt matrix", args(1, "1"), grpc.StatusCode.NOT_FOUND, "x/y/z plot"),
               ("x/y/z plot", args(9, "Euler, Nope", csv_mode=True), grpc.StatusCode.INVALID_ARGUMENT, "Nope"),
               ("x/y/z plot", args(99, "1"), grpc.StatusCode.INVALID_ARGUMENT, "CFG Scale"),
               ("x/y/z plot", args(7, "hexagon, square"), grpc.StatusCode.INVALID_ARGUMENT, "did not find hexagon"),
               ("x/y/z plot", args(4, "1-5 (2)"), grpc.StatusCode.INVALID_ARGUMENT, "not a whole number"),
               ("x/y/z plot", args(32, "x"), grpc.StatusCode.INVALID_ARGUMENT, "does not apply")]
        for name, script_args, code, text in bad:
            with self.assertRaises(AtelierError) as e:
                list(self.client.webui(dict(BASE, script_name=name, script_args=script_args)))
            self.assertEqual(e.exception.code, code, (script_args, e.exception.details))
            self.assertIn(text, e.exception.details)

    def test_cli_writes_cells_and_grid(self):
        payload = json.dumps(dict(BASE, seed=5, script_name="x/y/z plot", script_args=args(1, "5, 6")))
        with tempfile.TemporaryDirectory() as tmp:
            request = os.path.join(tmp, "request.json")
            with open(request, "w") as f:
                f.write(payload)
            out = subprocess.run([self.cli, "--server", self.daemon.address, "txt2img", "--json", request, "-o", tmp],
                                 capture_output=True, text=True, timeout=120)
            self.assertEqual(out.returncode, 0, out.stderr)
            self.assertEqual(len([f for f in os.listdir(tmp) if f.endswith(".png")]), 3)
            self.assertIn("Script: X/Y/Z plot", out.stdout)


if __name__ == "__main__":
    unittest.main()
