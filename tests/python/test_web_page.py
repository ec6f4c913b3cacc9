"""The live page (assets/web) in a real browser: headless Chromium opens it, submits a job from its form, and the
test sees previews stream in and the final image shown (DOM checks; a screenshot is kept in
$ATELIER_TEST_ARTIFACTS); a job another client submits over gRPC appears live too; the page reconnects by itself
when the gateway or the daemon restarts."""

import os
import socket
import tempfile
import threading
import unittest

from atelier_client import Client
from daemon_process import DaemonProcess
from devtools import Browser, chromium_binary
from gateway_process import GatewayProcess


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


STATUS = "document.getElementById('status').dataset.state"


@unittest.skipUnless(chromium_binary(), "chromium is not installed (scripts/setup installs it)")
class WebPageTest(unittest.TestCase):
    def test_the_page_runs_a_job_live_and_reconnects(self):
        daemon_port, web_port = free_port(), free_port()
        daemon = DaemonProcess(listen="127.0.0.1:%d" % daemon_port)
        gateway = GatewayProcess(daemon.address, listen="127.0.0.1:%d" % web_port)
        browser = Browser()
        try:
            browser.navigate(gateway.url + "/")
            browser.wait_for(STATUS + " === 'ok'")
            browser.wait_for("document.getElementById('sampler_name').options.length > 10")
            # The plugins' forms come from their params_schema_json.
            browser.wait_for("!!document.querySelector('fieldset.plugin[data-plugin=controlnet] [data-key=weight]')")
            browser.evaluate("""(() => {
                const set = (id, v) => { document.getElementById(id).value = v; };
                set('prompt', 'a small green square on the right, black background');
                set('steps', '40'); set('seed', '77'); set('sampler_name', 'Euler a');
                document.getElementById('generate').click();
                return true; })()""")
            # Previews stream in while it runs, then the result replaces them.
            browser.wait_for("[...document.querySelectorAll('.job .preview')].some("
                             "i => !i.hidden && i.src.startsWith('data:image/'))", timeout=120)
            browser.wait_for("document.querySelector('.job .results img.result')", timeout=180)
            browser.wait_for("document.querySelector('.job').dataset.state === 'succeeded'", timeout=60)
            infotext = browser.evaluate("document.querySelector('.job .results img.result').title")
            self.assertIn("Seed: 77", infotext)
            self.assertIn("Steps: 40", infotext)
            self.assertIn("Sampler: Euler a", infotext)
            self.assertTrue(browser.evaluate("document.querySelector('.job .results img.result').naturalWidth") > 0)
            latencies = browser.evaluate("window.atelierPreviewLatencyMs")
            self.assertGreater(len(latencies), 3)
            artifacts = os.environ.get("ATELIER_TEST_ARTIFACTS") or tempfile.mkdtemp()
            os.makedirs(artifacts, exist_ok=True)
            browser.screenshot(os.path.join(artifacts, "web_page.png"))
            self.assertGreater(os.path.getsize(os.path.join(artifacts, "web_page.png")), 1000)

            # An image dropped or pasted on the page refills the form from its infotext (here: the result itself).
            browser.evaluate("""(() => {
                document.getElementById('prompt').value = '';
                document.getElementById('seed').value = '-1';
                return fetch(document.querySelector('.job .results img.result').src).then(r => r.blob())
                    .then(b => useImage(new File([b], 'result.png', {type: 'image/png'}))).then(() => true); })()""")
            browser.wait_for("document.getElementById('prompt').value === "
                             "'a small green square on the right, black background'")
            self.assertEqual(browser.evaluate("document.getElementById('seed').value"), "77")
            self.assertEqual(browser.evaluate("document.getElementById('steps').value"), "40")

            # The page's Interrupt button stops a running job (it ends cancelled, with its last image).
            browser.evaluate("""(() => { document.getElementById('steps').value = '1000';
                document.getElementById('generate').click(); return true; })()""")
            browser.wait_for("document.querySelectorAll('.job').length >= 2 && "
                             "document.querySelector('.job').dataset.state === 'running'", timeout=120)
            browser.evaluate("document.querySelector('.job .cancel').click()")
            browser.wait_for("document.querySelector('.job').dataset.state === 'cancelled'", timeout=60)

            # Another client's job (over gRPC) is streamed to the page as it runs.
            with Client(daemon.address) as c:
                done = threading.Event()
                threading.Thread(target=lambda: (c.txt2img("a red circle", steps=60, seed=3).wait(), done.set())).start()
                browser.wait_for("document.querySelectorAll('.job').length >= 3", timeout=60)
                browser.wait_for("[...document.querySelectorAll('.job[data-mine=false] img.result')].length > 0",
                                 timeout=180)
                self.assertTrue(done.wait(60))

            # The gateway restarts: the page's event stream reconnects by itself.
            self.assertEqual(gateway.stop(), 0)
            browser.wait_for(STATUS + " === 'connecting'", timeout=30)
            gateway = GatewayProcess(daemon.address, listen="127.0.0.1:%d" % web_port)
            browser.wait_for(STATUS + " === 'ok'", timeout=30)

            # The daemon restarts: the page says so, then carries on.
            self.assertEqual(daemon.stop(), 0)
            browser.wait_for(STATUS + " === 'away'", timeout=30)
            daemon = DaemonProcess(listen="127.0.0.1:%d" % daemon_port)
            browser.wait_for(STATUS + " === 'ok'", timeout=60)
        finally:
            browser.close()
            gateway.stop()
            daemon.stop()


if __name__ == "__main__":
    unittest.main()
