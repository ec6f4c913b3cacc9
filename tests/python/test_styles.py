"""WebUI's prompt styles through a real atelierd (the embedded model): styles.csv beside the models, listed by
Models.ListStyles, the CLI and the client; a request's styles applied as WebUI applies them (the styled prompts are
the job's, in its infotext); an unknown style is NOT_FOUND naming the known ones; a broken styles.csv stops the daemon
with a message.

Run by ctest with ATELIER_DAEMON and PYTHONPATH set."""

import os
import subprocess
import tempfile
import unittest

import grpc

from atelier_client import AtelierError, Client, Result
from daemon_process import DaemonProcess

CSV = ('name,prompt,negative_prompt\n'
       'shapes,"a blue circle on a white background, {prompt}","text, watermark"\n'
       '"red bg","red background",""\n')


class StylesTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        def prepare(models):
            with open(os.path.join(models, "styles.csv"), "w") as f:
                f.write(CSV)
        cls.daemon = DaemonProcess(prepare_models=prepare)
        cls.client = Client(cls.daemon.address)

    @classmethod
    def tearDownClass(cls):
        cls.client.close()
        assert cls.daemon.stop() == 0

    def test_listed_applied_and_refused(self):
        self.assertEqual(self.client.styles(), [("shapes", "a blue circle on a white background, {prompt}",
                                                 "text, watermark"), ("red bg", "red background", "")])
        cli = os.path.join(os.path.dirname(os.environ["ATELIER_DAEMON"]), "atelier")
        out = subprocess.run([cli, "--server", self.daemon.address, "styles"], capture_output=True, text=True,
                             timeout=60)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("red bg", out.stdout)
        results = [e for e in self.client.txt2img("small", styles=["shapes", "red bg"], steps=4, seed=1)
                   if isinstance(e, Result)]
        infotext = results[0].infotext
        self.assertTrue(infotext.startswith("a blue circle on a white background, small, red background\n"), infotext)
        self.assertIn("Negative prompt: text, watermark\n", infotext)
        # The same job with the styled prompt written out gives the same image.
        plain = [e for e in self.client.txt2img("a blue circle on a white background, small, red background",
                                                negative_prompt="text, watermark", steps=4, seed=1)
                 if isinstance(e, Result)]
        self.assertEqual(plain[0].image, results[0].image)
        with self.assertRaises(AtelierError) as e:
            list(self.client.txt2img("x", styles=["nope"], steps=2))
        self.assertEqual(e.exception.code, grpc.StatusCode.NOT_FOUND)
        self.assertIn('"shapes", "red bg"', e.exception.details)

    def test_a_broken_styles_file_stops_the_daemon_with_a_message(self):
        with tempfile.TemporaryDirectory() as tmp:
            bad = os.path.join(tmp, "styles.csv")
            with open(bad, "w") as f:
                f.write('name,prompt\nx,"never closed\n')
            out = subprocess.run([os.environ["ATELIER_DAEMON"], "--listen", "127.0.0.1:0", "--models-dir", tmp,
                                  "--styles-file", bad], capture_output=True, text=True, timeout=120)
            self.assertNotEqual(out.returncode, 0)
            self.assertIn("styles.csv", out.stderr)


if __name__ == "__main__":
    unittest.main()
