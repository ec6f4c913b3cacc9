"""atelier-web against a real daemon, driven the way WebUI's API clients drive AUTOMATIC1111 (Python `requests`,
payloads in the shape of WebUI's API documentation and the sd-webui-controlnet / sd-webui-animatediff examples):
responses compared key by key and type by type with what WebUI returns, images decoded, errors as WebUI's FastAPI
answers them, the daemon's options round trip, progress with a preview during a job, interrupt, and the API
answering 503 while the daemon is away."""

import base64
import io
import json
import os
import socket
import sys
import tempfile
import threading
import time
import unittest

import requests
from PIL import Image

from atelier_client import Client
from daemon_process import DaemonProcess
from gateway_process import GatewayProcess

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "training"))
import world  # noqa: E402

# Processed.js() of WebUI v1.10, in its order: the "info" JSON string's keys.
INFO_KEYS = ["prompt", "all_prompts", "negative_prompt", "all_negative_prompts", "seed", "all_seeds", "subseed",
             "all_subseeds", "subseed_strength", "width", "height", "sampler_name", "cfg_scale", "steps", "batch_size",
             "restore_faces", "face_restoration_model", "sd_model_name", "sd_model_hash", "sd_vae_name", "sd_vae_hash",
             "seed_resize_from_w", "seed_resize_from_h", "denoising_strength", "extra_generation_params",
             "index_of_first_image", "infotexts", "styles", "job_timestamp", "clip_skip",
             "is_using_inpainting_conditioning", "version"]
PROGRESS_STATE_KEYS = {"skipped", "interrupted", "stopping_generation", "job", "job_count", "job_timestamp", "job_no",
                       "sampling_step", "sampling_steps"}
CANNY_MODEL = "atelier-shapes-canny"
MOTION = "atelier-shapes-motion-v2.safetensors"


def decode(b64):
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def png_b64(image):
    out = io.BytesIO()
    image.save(out, format="PNG")
    return base64.b64encode(out.getvalue()).decode()


class WebApiTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.daemon = DaemonProcess()
        cls.gateway = GatewayProcess(cls.daemon.address)
        cls.gateway.wait_reachable()
        cls.url = cls.gateway.url + "/sdapi/v1"

    @classmethod
    def tearDownClass(cls):
        assert cls.gateway.stop() == 0
        assert cls.daemon.stop() == 0

    def post(self, path, payload, code=200):
        response = requests.post(self.url + path, json=payload, timeout=300)
        self.assertEqual(response.status_code, code, response.text[:500])
        return response.json()

    def get(self, path, code=200):
        response = requests.get(self.url + path, timeout=60)
        self.assertEqual(response.status_code, code, response.text[:500])
        return response.json()

    # ------------------------------------------------------------------ generation

    def test_txt2img_answers_as_webui(self):
        # The README example of WebUI's API wiki, at the embedded model's size.
        payload = {"prompt": "a red circle on the left, blue background", "steps": 5, "seed": 1234, "width": 64,
                   "height": 64, "sampler_name": "DPM++ 2M", "scheduler": "Karras", "cfg_scale": 7,
                   "batch_size": 2, "negative_prompt": "green"}
        body = self.post("/txt2img", payload)
        self.assertEqual(set(body), {"images", "parameters", "info"})
        self.assertIsInstance(body["info"], str)
        info = json.loads(body["info"])
        self.assertEqual(list(info), INFO_KEYS)
        self.assertEqual(info["all_seeds"], [1234, 1235])
        self.assertEqual(info["seed"], 1234)
        self.assertEqual((info["width"], info["height"], info["steps"]), (64, 64, 5))
        self.assertEqual(info["sampler_name"], "DPM++ 2M")
        self.assertEqual(info["all_prompts"], [payload["prompt"]] * 2)
        self.assertEqual(info["negative_prompt"], "green")
        self.assertEqual(info["sd_model_name"], "atelier-shapes")
        self.assertRegex(info["job_timestamp"], r"^\d{14}$")
        self.assertEqual(len(info["infotexts"]), 2)
        self.assertIn("Seed: 1235", info["infotexts"][1])
        # "parameters": the request model with WebUI's defaults for what the payload left out.
        p = body["parameters"]
        self.assertEqual(p["prompt"], payload["prompt"])
        self.assertEqual(p["sampler_index"], "Euler")
        self.assertEqual(p["n_iter"], 1)
        self.assertIs(p["send_images"], True)
        self.assertIs(p["enable_hr"], False)
        self.assertEqual(p["alwayson_scripts"], {})
        self.assertEqual(len(body["images"]), 2)
        for i, b64 in enumerate(body["images"]):
            image = decode(b64)
            self.assertEqual((image.format, image.size), ("PNG", (64, 64)))
            self.assertEqual(image.info["parameters"], info["infotexts"][i])
        # The same job over gRPC gives the same pixels: the gateway adds nothing to the picture.
        with Client(self.daemon.address) as c:
            direct = c.webui(dict(payload)).wait()
        self.assertEqual([r.seed for r in direct], [1234, 1235])
        for b64, r in zip(body["images"], direct):
            self.assertEqual(decode(b64).tobytes(), Image.open(io.BytesIO(r.image)).tobytes())
        # send_images false: no images, the rest as before.
        body = self.post("/txt2img", dict(payload, batch_size=1, send_images=False))
        self.assertEqual(body["images"], [])
        self.assertEqual(json.loads(body["info"])["all_seeds"], [1234])

    def test_img2img_with_a_mask(self):
        scene = {"background": "white", "shapes": [{"kind": "square", "colour": "red", "position": "left",
                                                    "size": "large"}]}
        init = Image.fromarray(world.render(scene))
        mask = Image.new("L", (64, 64), 0)
        mask.paste(255, (32, 0, 64, 64))  # repaint the right half only
        payload = {"init_images": ["data:image/png;base64," + png_b64(init)], "mask": png_b64(mask),
                   "prompt": "a blue circle on the right, white background", "denoising_strength": 0.75,
                   "mask_blur": 4, "inpainting_fill": 1, "inpaint_full_res": False, "steps": 8, "seed": 5,
                   "width": 64, "height": 64, "sampler_name": "Euler a", "resize_mode": 0, "include_init_images": False}
        body = self.post("/img2img", payload)
        self.assertEqual(set(body), {"images", "parameters", "info"})
        info = json.loads(body["info"])
        self.assertEqual(list(info), INFO_KEYS)
        self.assertEqual(info["denoising_strength"], 0.75)
        self.assertIn("Mask blur: 4", info["infotexts"][0])
        self.assertEqual(body["parameters"]["inpainting_fill"], 1)
        self.assertEqual(body["parameters"]["mask_blur_x"], 4)  # WebUI's default echoed
        out = decode(body["images"][0]).convert("RGB")
        self.assertEqual(out.size, (64, 64))
        # Outside the mask the init image stays (WebUI pastes the original back).
        left = [out.getpixel((x, y)) for x in range(0, 20) for y in range(0, 64, 4)]
        original = [init.convert("RGB").getpixel((x, y)) for x in range(0, 20) for y in range(0, 64, 4)]
        diff = max(max(abs(a - b) for a, b in zip(p, q)) for p, q in zip(left, original))
        self.assertLess(diff, 40)
        # Without init_images: 404 as WebUI's.
        error = self.post("/img2img", {"prompt": "x"}, code=404)
        self.assertEqual(error["detail"], "Init image not found")

    def test_controlnet_canny_unit(self):
        models = requests.get(self.gateway.url + "/controlnet/model_list", timeout=60).json()["model_list"]
        canny = next(m for m in models if m.startswith(CANNY_MODEL))
        self.assertRegex(canny, r"^atelier-shapes-canny \[[0-9a-f]{8}\]$")
        modules = requests.get(self.gateway.url + "/controlnet/module_list", timeout=60).json()
        self.assertIn("canny", modules["module_list"])
        self.assertEqual(requests.get(self.gateway.url + "/controlnet/version", timeout=60).json(), {"version": 3})
        scene = {"background": "white", "shapes": [{"kind": "circle", "colour": "red", "position": "right",
                                                    "size": "large"}]}
        hint = png_b64(Image.fromarray(world.render(scene)))
        # sd-webui-controlnet's API example, as its wiki writes it.
        payload = {"prompt": "a red circle, white background", "steps": 8, "seed": 7, "width": 64, "height": 64,
                   "sampler_name": "DPM++ 2M",
                   "alwayson_scripts": {"controlnet": {"args": [{
                       "enabled": True, "image": hint, "module": "canny", "model": canny, "weight": 1.0,
                       "processor_res": 64, "threshold_a": 100, "threshold_b": 200, "control_mode": "Balanced",
                       "resize_mode": "Crop and Resize", "pixel_perfect": False}]}}}
        body = self.post("/txt2img", payload)
        # The generated image, then the detected map (save_detected_map defaults to true).
        self.assertEqual(len(body["images"]), 2)
        info = json.loads(body["info"])
        self.assertIn("ControlNet 0", info["extra_generation_params"])
        detected = decode(body["images"][1]).convert("L")
        self.assertGreater(sum(1 for v in detected.getdata() if v > 128), 20)  # canny edges of the circle
        # /controlnet/detect returns the same kind of map.
        detect = requests.post(self.gateway.url + "/controlnet/detect", json={
            "controlnet_module": "canny", "controlnet_input_images": [hint], "controlnet_processor_res": 64,
            "controlnet_threshold_a": 100, "controlnet_threshold_b": 200}, timeout=120)
        self.assertEqual(detect.status_code, 200, detect.text[:300])
        self.assertEqual(detect.json()["info"], "Success")
        self.assertEqual(len(detect.json()["images"]), 1)
        bad = requests.post(self.gateway.url + "/controlnet/detect", json={
            "controlnet_module": "no-such-module", "controlnet_input_images": [hint]}, timeout=60)
        self.assertIn(bad.status_code, (404, 422), bad.text)

    def test_animatediff_returns_the_gif(self):
        ad = {"enable": True, "model": MOTION, "video_length": 8, "fps": 8, "format": ["GIF"]}
        payload = {"prompt": "a red circle moving to the right, blue background", "steps": 4, "seed": 9,
                   "width": 64, "height": 64, "sampler_name": "DPM++ 2M",
                   "alwayson_scripts": {"AnimateDiff": {"args": [ad]}}}
        body = self.post("/txt2img", payload)
        # sd-webui-animatediff's API: the video's bytes as base64 (frames only with "Frame").
        self.assertEqual(len(body["images"]), 1)
        gif = base64.b64decode(body["images"][0])
        self.assertTrue(gif.startswith(b"GIF89a"), gif[:6])
        self.assertEqual(Image.open(io.BytesIO(gif)).n_frames, 8)
        self.assertEqual(json.loads(body["info"])["all_seeds"][:2], [9, 10])
        body = self.post("/txt2img", dict(payload, alwayson_scripts={"AnimateDiff": {"args": [
            dict(ad, format=["GIF", "Frame"])]}}))
        self.assertEqual(len(body["images"]), 9)
        self.assertTrue(base64.b64decode(body["images"][0]).startswith(b"GIF89a"))
        self.assertEqual(decode(body["images"][1]).format, "PNG")

    # ------------------------------------------------------------------ progress, interrupt, skip

    def test_progress_shows_a_preview_and_interrupt_returns_the_last_image(self):
        idle = self.get("/progress")
        self.assertEqual(set(idle), {"progress", "eta_relative", "state", "current_image", "textinfo"})
        self.assertEqual(set(idle["state"]), PROGRESS_STATE_KEYS)
        self.assertEqual((idle["progress"], idle["current_image"], idle["state"]["job_count"]), (0, None, 0))
        outcome = {}
        job = threading.Thread(target=lambda: outcome.update(body=self.post("/txt2img", {
            "prompt": "a green triangle at the top, white background", "steps": 400, "seed": 3, "width": 64,
            "height": 64})))
        job.start()
        seen = None
        deadline = time.time() + 120
        while time.time() < deadline:
            p = self.get("/progress")
            if p["current_image"] and p["state"]["sampling_step"] >= 2:
                seen = p
                break
            time.sleep(0.05)
        self.assertIsNotNone(seen, "no preview during the job")
        self.assertGreater(seen["progress"], 0.01)
        self.assertLess(seen["progress"], 1)
        self.assertGreaterEqual(seen["eta_relative"], 0)
        self.assertEqual(seen["state"]["sampling_steps"], 400)
        self.assertEqual(seen["state"]["job_count"], 1)
        self.assertRegex(seen["state"]["job_timestamp"], r"^\d{14}$")
        # The daemon's default preview is WebUI's "Approx cheap": one pixel per latent, 1/8 of the image's side.
        preview = decode(seen["current_image"])
        self.assertEqual(preview.size, (8, 8))
        skipped = self.get("/progress?skip_current_image=true")
        self.assertIsNone(skipped["current_image"])
        # interrupt: WebUI answers {} and the job returns its last prediction with an infotext.
        self.assertEqual(self.post("/interrupt", {}), {})
        job.join(timeout=120)
        self.assertFalse(job.is_alive())
        body = outcome["body"]
        self.assertEqual(len(body["images"]), 1)
        self.assertIn("Steps: 400", json.loads(body["info"])["infotexts"][0])
        self.assertIsNone(self.post("/skip", {}))  # nothing runs: WebUI's null
        after = self.get("/progress")
        self.assertEqual(after["progress"], 0)

    # ------------------------------------------------------------------ options, listings, png-info

    def test_options_round_trip(self):
        options = self.get("/options")
        self.assertEqual(options["CLIP_stop_at_last_layers"], 1)
        self.assertRegex(options["sd_model_checkpoint"], r"^atelier-shapes\.safetensors \[[0-9a-f]{10}\]$")
        self.assertEqual(options["sd_vae"], "Automatic")
        try:
            # Posting back everything WebUI's GET gave changes nothing; one more key and a kept unknown one.
            self.assertIsNone(self.post("/options", dict(options, CLIP_stop_at_last_layers=2,
                                                         some_extension_setting="kept")))
            now = self.get("/options")
            self.assertEqual(now["CLIP_stop_at_last_layers"], 2)
            self.assertEqual(now["some_extension_setting"], "kept")
            body = self.post("/txt2img", {"prompt": "a red circle", "steps": 2, "seed": 1, "width": 64, "height": 64})
            self.assertIn("Clip skip: 2", json.loads(body["info"])["infotexts"][0])
            # A job's own override_settings win over the options.
            body = self.post("/txt2img", {"prompt": "a red circle", "steps": 2, "seed": 1, "width": 64, "height": 64,
                                          "override_settings": {"CLIP_stop_at_last_layers": 1}})
            self.assertNotIn("Clip skip", json.loads(body["info"])["infotexts"][0])
            # Bad values as a job's would be: 422 naming the key; an unknown checkpoint: 404 naming the ones there.
            error = self.post("/options", {"CLIP_stop_at_last_layers": 40}, code=422)
            self.assertIn("CLIP_stop_at_last_layers", error["detail"])
            error = self.post("/options", {"sd_model_checkpoint": "no-such-model"}, code=404)
            self.assertIn("atelier-shapes.safetensors", error["detail"])
        finally:
            self.post("/options", {"CLIP_stop_at_last_layers": 1})
        self.assertEqual(self.get("/options")["CLIP_stop_at_last_layers"], 1)

    def test_png_info_of_a_generated_image(self):
        body = self.post("/txt2img", {"prompt": "a small yellow square at the bottom, black background",
                                      "negative_prompt": "blurry", "steps": 3, "seed": 42, "width": 64, "height": 64,
                                      "sampler_name": "Euler"})
        info = self.post("/png-info", {"image": "data:image/png;base64," + body["images"][0]})
        self.assertEqual(set(info), {"info", "items", "parameters"})
        self.assertEqual(info["info"], json.loads(body["info"])["infotexts"][0])
        p = info["parameters"]
        self.assertEqual(p["Prompt"], "a small yellow square at the bottom, black background")
        self.assertEqual(p["Negative prompt"], "blurry")
        self.assertEqual((p["Steps"], p["Seed"], p["Size-1"], p["Size-2"]), ("3", "42", "64", "64"))
        self.assertEqual(p["Clip skip"], "1")  # WebUI's default for a key the text lacks
        plain = self.post("/png-info", {"image": png_b64(Image.new("RGB", (8, 8)))})
        self.assertEqual(plain["info"], "")
        self.post("/png-info", {"image": base64.b64encode(b"not an image").decode()}, code=422)

    def test_listings_have_webui_shapes(self):
        samplers = self.get("/samplers")
        self.assertEqual(samplers[0]["name"], "DPM++ 2M")
        self.assertTrue({"Euler a", "Euler", "DDIM", "DPM++ 2M SDE", "UniPC", "LCM"} <= {s["name"] for s in samplers})
        for s in samplers:
            self.assertEqual(set(s), {"name", "aliases", "options"})
            self.assertTrue(all(isinstance(v, str) for v in s["options"].values()))
        self.assertEqual(next(s for s in samplers if s["name"] == "DPM++ 2M")["options"], {"scheduler": "karras"})
        schedulers = self.get("/schedulers")
        self.assertEqual(schedulers[0]["label"], "Automatic")
        karras = next(s for s in schedulers if s["name"] == "karras")
        self.assertEqual(karras, {"name": "karras", "label": "Karras", "aliases": None, "default_rho": 7.0,
                                  "need_inner_model": False})
        models = self.get("/sd-models")
        self.assertEqual(set(models[0]), {"title", "model_name", "hash", "sha256", "filename", "config"})
        self.assertEqual(models[0]["model_name"], "atelier-shapes")
        self.assertEqual(models[0]["hash"], models[0]["sha256"][:10])
        self.assertEqual(models[0]["title"], "atelier-shapes.safetensors [%s]" % models[0]["hash"])
        self.assertIsInstance(self.get("/sd-vae"), list)
        upscalers = self.get("/upscalers")
        self.assertEqual(upscalers[0]["name"], "None")
        self.assertEqual(set(upscalers[0]), {"name", "model_name", "model_path", "model_url", "scale"})
        self.assertIn({"name": "Latent (nearest-exact)"}, self.get("/latent-upscale-modes"))
        self.assertEqual(set(self.get("/embeddings")), {"loaded", "skipped"})
        memory = self.get("/memory")
        self.assertEqual(set(memory["ram"]), {"free", "used", "total"})
        self.assertGreater(memory["ram"]["total"], 0)
        scripts = self.get("/scripts")
        self.assertIn("controlnet", scripts["txt2img"])
        self.assertIn("animatediff", scripts["img2img"])
        info = self.get("/script-info")
        controlnet = next(s for s in info if s["name"] == "controlnet" and not s["is_img2img"])
        self.assertTrue(controlnet["is_alwayson"])
        self.assertIn("weight", [a["label"] for a in controlnet["args"]])
        self.assertEqual(set(controlnet["args"][0]), {"label", "value", "minimum", "maximum", "step", "choices"})
        self.assertIs(self.get("/cmd-flags")["api"], True)
        self.assertIsNone(self.post("/refresh-checkpoints", {}))

    # ------------------------------------------------------------------ errors

    def test_errors_as_webui_answers_them(self):
        error = self.post("/txt2img", {"prompt": "x", "sampler_name": "No Such Sampler", "steps": 2}, code=422)
        self.assertEqual(set(error), {"error", "detail", "body", "errors"})
        self.assertIn("DPM++ 2M", error["detail"])  # the valid names
        response = requests.post(self.url + "/txt2img", data="{not json", timeout=30,
                                 headers={"Content-Type": "application/json"})
        self.assertEqual(response.status_code, 422)
        self.assertIsInstance(response.json()["detail"], list)  # FastAPI's validation error list
        error = self.post("/txt2img", {"prompt": "x", "steps": 2, "alwayson_scripts": {"controlnet": {"args": [
            {"enabled": True, "module": "none", "model": "no-such-controlnet", "image": png_b64(Image.new("RGB", (8, 8)))}]}}},
            code=404)
        self.assertIn("no-such-controlnet", error["detail"])
        self.assertEqual(requests.get(self.gateway.url + "/sdapi/v1/no-such-route", timeout=30).status_code, 404)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class GatewayAuthAndOutagesTest(unittest.TestCase):
    def test_api_auth_is_http_basic(self):
        daemon = DaemonProcess()
        gateway = GatewayProcess(daemon.address, ("--api-auth", "alice:secret,bob:hunter2"))
        try:
            gateway.wait_reachable(auth=("bob", "hunter2"))
            url = gateway.url + "/sdapi/v1/samplers"
            self.assertEqual(requests.get(url, timeout=30).status_code, 401)
            self.assertEqual(requests.get(url, auth=("alice", "wrong"), timeout=30).status_code, 401)
            self.assertEqual(requests.get(url, auth=("alice", "secret"), timeout=30).status_code, 200)
            self.assertEqual(requests.get(gateway.url + "/", timeout=30).status_code, 401)
        finally:
            self.assertEqual(gateway.stop(), 0)
            self.assertEqual(daemon.stop(), 0)

    def test_cors_allows_the_listed_origins(self):
        daemon = DaemonProcess()
        gateway = GatewayProcess(daemon.address, ("--cors-allow-origins", "http://localhost:3456",
                                                  "--api-auth", "u:p"))
        try:
            gateway.wait_reachable(auth=("u", "p"))
            url = gateway.url + "/sdapi/v1/txt2img"
            preflight = requests.options(url, timeout=30, headers={"Origin": "http://localhost:3456",
                                                                   "Access-Control-Request-Method": "POST"})
            self.assertEqual(preflight.status_code, 204)
            self.assertEqual(preflight.headers["Access-Control-Allow-Origin"], "http://localhost:3456")
            listed = requests.get(gateway.url + "/sdapi/v1/samplers", auth=("u", "p"), timeout=30,
                                  headers={"Origin": "http://localhost:3456"})
            self.assertEqual(listed.headers.get("Access-Control-Allow-Origin"), "http://localhost:3456")
            other = requests.get(gateway.url + "/sdapi/v1/samplers", auth=("u", "p"), timeout=30,
                                 headers={"Origin": "http://evil.example"})
            self.assertNotIn("Access-Control-Allow-Origin", other.headers)
        finally:
            self.assertEqual(gateway.stop(), 0)
            self.assertEqual(daemon.stop(), 0)

    def test_bearer_tokens_pass_through(self):
        token = "tok-" + "7" * 32
        folder = tempfile.TemporaryDirectory()
        tokens = os.path.join(folder.name, "tokens")
        with open(tokens, "w") as f:
            f.write(token + " carol\n")
        daemon = DaemonProcess(extra_args=("--auth-tokens", tokens))
        gateway = GatewayProcess(daemon.address)
        try:
            time.sleep(1.5)  # the gateway's watcher reaches the daemon (its ListJobs answers UNAUTHENTICATED)
            url = gateway.url + "/sdapi/v1/samplers"
            self.assertEqual(requests.get(url, timeout=30).status_code, 401)
            ok = requests.get(url, headers={"Authorization": "Bearer " + token}, timeout=30)
            self.assertEqual(ok.status_code, 200, ok.text)
            body = requests.post(gateway.url + "/sdapi/v1/txt2img", json={"prompt": "a red circle", "steps": 2},
                                 headers={"Authorization": "Bearer " + token}, timeout=120)
            self.assertEqual(body.status_code, 200, body.text[:300])
        finally:
            self.assertEqual(gateway.stop(), 0)
            self.assertEqual(daemon.stop(), 0)
            folder.cleanup()

    def test_atelierd_http_listen_runs_the_gateway_as_a_child(self):
        port = free_port()
        daemon = DaemonProcess(extra_args=("--http-listen", "127.0.0.1:%d" % port))
        url = "http://127.0.0.1:%d" % port
        try:
            deadline, models = time.time() + 30, None
            while time.time() < deadline and models is None:
                try:
                    response = requests.get(url + "/sdapi/v1/sd-models", timeout=5)
                    models = response.json() if response.status_code == 200 else None
                except requests.ConnectionError:
                    pass
                time.sleep(0.1)
            self.assertEqual(models[0]["model_name"], "atelier-shapes")
            self.assertIn("atelier-web (pid", daemon.log_text())
        finally:
            self.assertEqual(daemon.stop(), 0)
        with self.assertRaises(requests.ConnectionError):  # it stops with the daemon
            requests.get(url + "/", timeout=5)

    def test_stopping_the_gateway_cancels_its_jobs_in_flight(self):
        daemon = DaemonProcess()
        gateway = GatewayProcess(daemon.address)
        try:
            gateway.wait_reachable()
            submitted = requests.post(gateway.url + "/api/submit", timeout=60, json={
                "payload": {"prompt": "a red circle", "steps": 1000, "width": 64, "height": 64}})
            self.assertEqual(submitted.status_code, 200, submitted.text)
            job_id = submitted.json()["job_id"]
            started = time.time()
            self.assertEqual(gateway.stop(), 0)
            self.assertLess(time.time() - started, 20)
            with Client(daemon.address) as c:  # the daemon cancelled it: its submitter went away
                deadline = time.time() + 30
                while time.time() < deadline and any(j.job_id == job_id for j in c.jobs()):
                    time.sleep(0.1)
                self.assertFalse(any(j.job_id == job_id for j in c.jobs()))
        finally:
            self.assertEqual(daemon.stop(), 0)

    def test_the_api_answers_503_while_the_daemon_is_away(self):
        port = free_port()
        daemon = DaemonProcess(listen="127.0.0.1:%d" % port)
        gateway = GatewayProcess(daemon.address)
        try:
            gateway.wait_reachable()
            self.assertEqual(daemon.stop(), 0)
            deadline = time.time() + 20
            status = None
            while time.time() < deadline:
                status = requests.get(gateway.url + "/sdapi/v1/samplers", timeout=30).status_code
                if status == 503:
                    break
                time.sleep(0.1)
            self.assertEqual(status, 503)
            response = requests.post(gateway.url + "/sdapi/v1/txt2img", json={"prompt": "x"}, timeout=30)
            self.assertEqual(response.status_code, 503)
            self.assertIn("not reachable", response.json()["detail"])
            self.assertEqual(response.headers.get("Retry-After"), "5")
            # The page itself still loads (it waits for the daemon).
            self.assertEqual(requests.get(gateway.url + "/", timeout=30).status_code, 200)
            daemon = DaemonProcess(listen="127.0.0.1:%d" % port)
            gateway.wait_reachable()
            body = requests.post(gateway.url + "/sdapi/v1/txt2img", json={"prompt": "a red circle", "steps": 2},
                                 timeout=120)
            self.assertEqual(body.status_code, 200, body.text[:300])
        finally:
            self.assertEqual(gateway.stop(), 0)
            daemon.stop()


if __name__ == "__main__":
    unittest.main()
