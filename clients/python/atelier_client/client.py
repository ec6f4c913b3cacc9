"""A small client of atelierd's gRPC API (atelier.v1): generation with typed, streamed events, and the listings.

    from atelier_client import Client
    client = Client("127.0.0.1:50051")
    job = client.txt2img("1girl, cherry blossoms", steps=20, sampler_name="DPM++ 2M", scheduler="Karras", seed=1234)
    for event in job:
        if isinstance(event, Progress): print(event.sampling_step, "/", event.sampling_steps)
        if isinstance(event, Result): open(f"{event.seed}.png", "wb").write(event.image)

Keyword arguments are the API's field names, which are WebUI's (/sdapi/v1/txt2img): prompt, negative_prompt, steps,
sampler_name, scheduler, cfg_scale, seed, width, height, batch_size, n_iter, denoising_strength,
override_settings (a dict), alwayson_scripts (a dict), preview (a dict such as {"method": "PREVIEW_METHOD_TAESD"}),
output, infotext, ...
"""

import base64
import dataclasses
import json
import os
import re
import sys
from typing import Iterator, List, Optional


def _import_stubs():
    """The generated stubs: importable as `atelier.v1`, else from the build tree next to this checkout."""
    try:
        from atelier.v1 import generation_pb2  # noqa: F401
    except ImportError:
        here = os.path.dirname(os.path.abspath(__file__))
        candidates = [os.environ.get("ATELIER_PYTHON_STUBS", ""),
                      os.path.join(here, "..", "..", "..", "build", "python")]
        for path in candidates:
            if path and os.path.isfile(os.path.join(path, "atelier", "v1", "generation_pb2.py")):
                sys.path.insert(0, os.path.abspath(path))
                break
    from atelier.v1 import common_pb2, daemon_pb2, daemon_pb2_grpc, generation_pb2, generation_pb2_grpc
    from atelier.v1 import models_pb2, models_pb2_grpc, plugins_pb2, plugins_pb2_grpc
    return (common_pb2, daemon_pb2, daemon_pb2_grpc, generation_pb2, generation_pb2_grpc, models_pb2,
            models_pb2_grpc, plugins_pb2, plugins_pb2_grpc)


import grpc  # noqa: E402
from google.protobuf import json_format  # noqa: E402

(common_pb2, daemon_pb2, daemon_pb2_grpc, generation_pb2, generation_pb2_grpc, models_pb2, models_pb2_grpc,
 plugins_pb2, plugins_pb2_grpc) = _import_stubs()


class AtelierError(Exception):
    """A failed call: `code` is the grpc.StatusCode, `details` the daemon's message (it names the valid choices)."""

    def __init__(self, code: grpc.StatusCode, details: str):
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


# ---- Typed events ---------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Image:
    data: bytes
    mime_type: str
    width: int
    height: int


@dataclasses.dataclass
class Queued:
    job_id: str
    position: int
    queue_length: int


@dataclasses.dataclass
class Started:
    job_id: str
    seeds: List[int]
    subseeds: List[int]
    image_count: int
    estimated_seconds: float = 0.0  # the daemon's estimate of the run time; 0 before it has calibrated


@dataclasses.dataclass
class Progress:
    job_id: str
    job_no: int
    job_count: int
    sampling_step: int
    sampling_steps: int
    progress: float
    eta_seconds: float
    pass_name: str
    preview: Optional[Image]


@dataclasses.dataclass
class Frame:
    job_id: str
    index: int
    image: Image
    plugin: str


@dataclasses.dataclass
class Result:
    job_id: str
    index: int
    image: bytes
    mime_type: str
    infotext: str
    seed: int
    subseed: int
    interrupted: bool


@dataclasses.dataclass
class Artifact:
    job_id: str
    name: str
    mime_type: str
    data: bytes
    plugin: str


@dataclasses.dataclass
class Finished:
    job_id: str
    state: str  # "JOB_STATE_SUCCEEDED", "JOB_STATE_CANCELLED", "JOB_STATE_FAILED"
    message: str
    timings: dict
    dropped_events: int
    warnings: list = dataclasses.field(default_factory=list)  # problems that did not fail the job
    invoke_result_json: str = ""  # Plugins.Invoke: the plugin's JSON result


def _image(message) -> Image:
    return Image(message.data, message.mime_type, message.width, message.height)


def to_event(e):
    """A GenerateEvent as one of the dataclasses above."""
    kind = e.WhichOneof("event")
    if kind == "queued":
        return Queued(e.job_id, e.queued.position, e.queued.queue_length)
    if kind == "started":
        return Started(e.job_id, list(e.started.all_seeds), list(e.started.all_subseeds), e.started.image_count,
                       e.started.estimated_seconds)
    if kind == "progress":
        p = e.progress
        return Progress(e.job_id, p.job_no, p.job_count, p.sampling_step, p.sampling_steps, p.progress,
                        p.eta_seconds, getattr(p, "pass"), _image(p.preview) if p.HasField("preview") else None)
    if kind == "frame":
        return Frame(e.job_id, e.frame.index, _image(e.frame.image), e.frame.plugin)
    if kind == "result":
        r = e.result
        return Result(e.job_id, r.index, r.image.data, r.image.mime_type, r.infotext, r.seed, r.subseed, r.interrupted)
    if kind == "artifact":
        a = e.artifact
        return Artifact(e.job_id, a.name, a.mime_type, a.data, a.plugin)
    if kind == "finished":
        f = e.finished
        return Finished(e.job_id, common_pb2.JobState.Name(f.state), f.message,
                        {t.stage: t.seconds for t in f.timings}, f.dropped_events, list(f.warnings),
                        f.invoke_result_json)
    return None


class ArtifactJoiner:
    """Joins the chunks of an artifact larger than the daemon's message limit (Artifact.offset / total_size / last)
    into one Artifact; an artifact in one message passes through."""

    def __init__(self):
        self._parts = {}

    def add(self, e) -> Optional[Artifact]:
        a = e.artifact
        if a.offset == 0 and (a.last or a.total_size == 0) and a.total_size in (0, len(a.data)):
            return Artifact(e.job_id, a.name, a.mime_type, a.data, a.plugin)
        key = (e.job_id, a.plugin, a.name)
        buffer = self._parts.setdefault(key, bytearray())
        if a.offset != len(buffer):
            raise AtelierError(grpc.StatusCode.DATA_LOSS,
                               f"artifact {a.name}: chunk at {a.offset}, expected {len(buffer)}")
        buffer.extend(a.data)
        if not a.last:
            return None
        del self._parts[key]
        return Artifact(e.job_id, a.name, a.mime_type, bytes(buffer), a.plugin)


class Job:
    """A running job's event stream. Iterate it for events; raises AtelierError when the job fails or is cancelled
    (after yielding what came before, e.g. the last prediction of a cancelled job).

    A generation the daemon dropped after taking it (UNAVAILABLE: it crashed and its supervisor restarted it, or it
    was stopped) is resubmitted once with the seeds it had, when the client retries (the default); results already
    yielded are not yielded again."""

    def __init__(self, client: "Client", call, request=None):
        self._client = client
        self._call = call
        self._request = request  # what to resubmit; None: never retried
        self.id: Optional[str] = None
        self.results: List[Result] = []
        self.retried = False

    def __iter__(self) -> Iterator:
        joiner = ArtifactJoiner()
        seen = set()
        while True:
            accepted, started = False, None
            try:
                for message in self._call:
                    accepted = True
                    self.id = message.job_id
                    if message.WhichOneof("event") == "artifact":
                        event = joiner.add(message)
                        if event is None:
                            continue  # more chunks of this file follow
                    else:
                        event = to_event(message)
                    if isinstance(event, Started):
                        started = event
                    if isinstance(event, Result):
                        if event.index in seen:
                            continue
                        seen.add(event.index)
                        self.results.append(event)
                    yield event
                return
            except grpc.RpcError as error:
                # UNAVAILABLE: the daemon went away (or drained). Through a proxy the same shows as a stream ended
                # without a status: nginx resets it (INTERNAL "Received RST_STREAM"), HAProxy drops its trailers
                # (UNKNOWN "Stream removed"); no daemon status reads like these.
                details = error.details() or ""
                dropped = (error.code() == grpc.StatusCode.UNAVAILABLE
                           or (error.code() == grpc.StatusCode.INTERNAL and details.startswith("Received RST_STREAM"))
                           or (error.code() == grpc.StatusCode.UNKNOWN and details == "Stream removed"))
                # Dropped before its first event reached us still counts when the call got through (the daemon can
                # crash between sending "queued" and our reading it); a call that never connected does not.
                reached = accepted or not _never_connected(details)
                if (not dropped or not reached or self.retried or self._request is None
                        or not self._client.retry_interrupted):
                    raise AtelierError(error.code(), error.details()) from None
                self.retried = True
                request = type(self._request)()
                request.CopyFrom(self._request)
                if started is not None and started.seeds:
                    request.seed = started.seeds[0]
                    if started.subseeds:
                        request.subseed = started.subseeds[0]
                try:
                    grpc.channel_ready_future(self._client._channel).result(timeout=120)
                except grpc.FutureTimeoutError:
                    raise AtelierError(error.code(), error.details()) from None
                # wait_for_ready: the channel may still be reconnecting to the restarted daemon.
                self._call = self._client._generation.Generate(request, metadata=self._client._metadata,
                                                               wait_for_ready=True)

    def save(self, directory: str) -> List[str]:
        """Runs the stream to its end, writing what it brings as WebUI names it: results "{seq:05}-{seed}.png",
        the export plugin's files "{seq:05}-{seed}.gif" (one number per job, as sd-webui-animatediff's), other
        artifacts under their own names. Returns the paths written, in order."""
        os.makedirs(directory, exist_ok=True)
        paths, export_number = [], None
        for event in self:
            if isinstance(event, Result):
                ext = {"image/jpeg": "jpg", "image/webp": "webp"}.get(event.mime_type, "png")
                path = os.path.join(directory, "%05d-%d.%s" % (_next_number(directory), event.seed, ext))
                data = event.image
            elif isinstance(event, Artifact):
                name = os.path.basename(event.name)
                if event.plugin == "export":
                    if export_number is None:
                        export_number = _next_number(directory)
                    name = "%05d-%s" % (export_number, name)
                path, data = os.path.join(directory, name), event.data
            else:
                continue
            with open(path, "wb") as f:
                f.write(data)
            paths.append(path)
        return paths

    def wait(self) -> List[Result]:
        """Runs the stream to its end and returns the results."""
        for _ in self:
            pass
        return self.results

    def cancel(self):
        if self.id is not None:
            self._client.cancel(self.id)


def _never_connected(details: str) -> bool:
    """Whether an UNAVAILABLE status says the call never reached a daemon (gRPC's connect and name failures)."""
    return details.startswith("failed to connect") or "DNS resolution failed" in details


def _next_number(directory: str) -> int:
    """WebUI's next sequence number in a folder: one more than the largest "NNNNN-..." name there."""
    numbers = [int(n.split("-", 1)[0]) for n in os.listdir(directory)
               if "-" in n and n.split("-", 1)[0].isdigit() and len(n.split("-", 1)[0]) >= 5]
    return max(numbers) + 1 if numbers else 0


def _strip_data_uri(value):
    if isinstance(value, str) and value.startswith("data:") and "," in value:
        return value.split(",", 1)[1]
    return value


class Client:
    def __init__(self, address: Optional[str] = None, client_id: str = "atelier-python", max_message_mb: int = 256,
                 token: Optional[str] = None, tls_ca: Optional[str] = None, tls_cert: Optional[str] = None,
                 tls_key: Optional[str] = None, retry_interrupted: bool = True, instance: Optional[str] = None):
        """`address`: host:port, or several comma-separated (gRPC's round_robin balances calls over them);
        `token`: bearer token of a daemon run with --auth-tokens; `tls_ca`: PEM file of the CA the daemon's TLS
        certificate chains to (TLS when given); `tls_cert` / `tls_key`: PEM client certificate and key (mutual TLS).
        Each falls back to $ATELIER_SERVER, $ATELIER_TOKEN, $ATELIER_TLS_CA, $ATELIER_TLS_CERT, $ATELIER_TLS_KEY.
        `retry_interrupted`: resubmit a generation the daemon dropped mid-way once, with the same seeds (Job).
        `instance`: behind a proxy of several daemons, send every call to the one run with --instance-name INSTANCE
        (watch, cancel and skip route themselves by the job id)."""
        self.retry_interrupted = retry_interrupted
        self.address = address or os.environ.get("ATELIER_SERVER") or "127.0.0.1:50051"
        token = token or os.environ.get("ATELIER_TOKEN")
        tls_ca = tls_ca or os.environ.get("ATELIER_TLS_CA")
        tls_cert = tls_cert or os.environ.get("ATELIER_TLS_CERT")
        tls_key = tls_key or os.environ.get("ATELIER_TLS_KEY")
        limit = max_message_mb * 1024 * 1024
        options = [("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit)]
        target = self.address
        if "," in target:
            addresses = [a.strip() for a in target.split(",") if a.strip()]
            target = ("ipv6:" if addresses[0].startswith("[") else "ipv4:") + ",".join(addresses)
            options.append(("grpc.lb_policy_name", "round_robin"))
        if tls_ca or tls_cert:
            def read(path):
                with open(path, "rb") as f:
                    return f.read()
            credentials = grpc.ssl_channel_credentials(root_certificates=read(tls_ca) if tls_ca else None,
                                                       private_key=read(tls_key) if tls_cert else None,
                                                       certificate_chain=read(tls_cert) if tls_cert else None)
            self._channel = grpc.secure_channel(target, credentials, options=options)
        else:
            self._channel = grpc.insecure_channel(target, options=options)
        self._metadata = (("atelier-client", client_id),) + ((("authorization", "Bearer " + token),) if token else ())
        if instance:
            self._metadata += (("atelier-instance", instance),)
        self._generation = generation_pb2_grpc.GenerationStub(self._channel)
        self._models = models_pb2_grpc.ModelsStub(self._channel)
        self._plugins = plugins_pb2_grpc.PluginsStub(self._channel)
        self._daemon = daemon_pb2_grpc.DaemonStub(self._channel)

    def close(self):
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _unary(self, method, request, timeout=30.0, metadata=None):
        try:
            return method(request, metadata=metadata or self._metadata, timeout=timeout)
        except grpc.RpcError as error:
            raise AtelierError(error.code(), error.details()) from None

    # ---- Generation ----
    @staticmethod
    def request(fields: dict, mode, ignore_unknown: bool = False):
        """A GenerateRequest from API field names (WebUI's); images as bytes, or base64 / data URIs as WebUI takes."""
        payload = {k: v for k, v in fields.items() if v is not None}
        images = [base64.b64decode(_strip_data_uri(i)) if isinstance(i, str) else i
                  for i in payload.pop("init_images", [])]
        mask = payload.pop("mask", None)
        if isinstance(mask, str):
            mask = base64.b64decode(_strip_data_uri(mask))
        if "sampler_index" in payload:  # WebUI's legacy name: the sampler when sampler_name is not given
            index = payload.pop("sampler_index")
            payload.setdefault("sampler_name", index)
        try:
            request = json_format.ParseDict(payload, generation_pb2.GenerateRequest(),
                                            ignore_unknown_fields=ignore_unknown)
        except json_format.ParseError as error:
            raise ValueError(f"bad request field: {error}") from None
        request.mode = mode
        request.init_images.extend(images)
        if mask:
            request.mask = mask
        return request

    def generate(self, request) -> Job:
        return Job(self, self._generation.Generate(request, metadata=self._metadata), request=request)

    def txt2img(self, prompt: str = "", **fields) -> Job:
        return self.generate(self.request(dict(fields, prompt=prompt), generation_pb2.MODE_TXT2IMG))

    def img2img(self, init_image: bytes, prompt: str = "", **fields) -> Job:
        return self.generate(self.request(dict(fields, prompt=prompt, init_images=[init_image]),
                                          generation_pb2.MODE_IMG2IMG))

    def webui(self, payload: dict, img2img: bool = False) -> Job:
        """A WebUI /sdapi/v1/txt2img or img2img JSON payload as is (unknown keys ignored, as WebUI does)."""
        mode = generation_pb2.MODE_IMG2IMG if img2img else generation_pb2.MODE_TXT2IMG
        return self.generate(self.request(payload, mode, ignore_unknown=True))

    def _routed(self, job_id: str):
        """Metadata that routes a call about `job_id` to its daemon behind a proxy: a daemon run with --instance-name
        NAME makes ids "NAME-<32 hex>", and the proxy picks the daemon by the "atelier-instance" header."""
        match = re.fullmatch(r"([A-Za-z0-9_]{1,32})-[0-9a-f]{32}", job_id or "")
        return self._metadata + ((("atelier-instance", match.group(1)),) if match else ())

    def watch(self, job_id: str, skip_history: bool = False) -> Job:
        call = self._generation.Watch(generation_pb2.WatchRequest(job_id=job_id, skip_history=skip_history),
                                      metadata=self._routed(job_id))
        return Job(self, call)

    def cancel(self, job_id: str):
        return self._unary(self._generation.Cancel, generation_pb2.CancelRequest(job_id=job_id),
                           metadata=self._routed(job_id))

    def skip(self, job_id: str):
        return self._unary(self._generation.Skip, generation_pb2.SkipRequest(job_id=job_id),
                           metadata=self._routed(job_id))

    def jobs(self):
        return list(self._unary(self._generation.ListJobs, generation_pb2.ListJobsRequest()).jobs)

    # ---- Models, plugins, daemon ----
    def models(self, compute_hashes: bool = False):
        request = models_pb2.ListModelsRequest(compute_hashes=compute_hashes)
        return list(self._unary(self._models.ListModels, request, timeout=None if compute_hashes else 30.0).models)

    def load(self, checkpoint: str, vae: str = "Automatic"):
        request = models_pb2.LoadModelRequest(checkpoint=checkpoint, vae=vae)
        return self._unary(self._models.LoadModel, request, timeout=None)

    def styles(self):
        """WebUI's prompt styles the daemon knows: [(name, prompt, negative_prompt)]."""
        response = self._unary(self._models.ListStyles, models_pb2.ListStylesRequest())
        return [(s.name, s.prompt, s.negative_prompt) for s in response.styles]

    def status(self):
        return self._unary(self._models.GetStatus, models_pb2.GetStatusRequest())

    def plugins(self):
        return list(self._unary(self._plugins.ListPlugins, plugins_pb2.ListPluginsRequest()).plugins)

    def invoke(self, plugin: str, method: str, args=None) -> Job:
        """A plugin's work outside a generation (ControlNet's detect, RIFE on frames): a job like any other, streaming
        its progress and artifacts; the Finished event carries the plugin's JSON result (invoke_result_json)."""
        request = plugins_pb2.InvokeRequest(plugin=plugin, method=method,
                                            args_json="" if args is None else json.dumps(args))
        return Job(self, self._plugins.Invoke(request, metadata=self._metadata))

    # ---- ControlNet (sd-webui-controlnet's endpoints through the controlnet plugin) ----
    def _invoke_result(self, method: str, args=None):
        for event in self.invoke("controlnet", method, args):
            if isinstance(event, Finished):
                return json.loads(event.invoke_result_json or "null")
        return None

    def controlnet_models(self) -> List[str]:
        """Model titles as the extension lists them: "control_v11p_sd15_canny [d14c016b]"."""
        return self._invoke_result("model_list")["model_list"]

    def controlnet_modules(self, alias_names: bool = False) -> dict:
        """{"module_list": [...], "module_detail": {name: {"model_free", "sliders"}}}."""
        return self._invoke_result("module_list", {"alias_names": alias_names})

    def controlnet_control_types(self) -> dict:
        return self._invoke_result("control_types")["control_types"]

    def controlnet_detect(self, images: List[bytes], module: str = "canny", processor_res: float = -1,
                          threshold_a: float = -1, threshold_b: float = -1,
                          masks: Optional[List[bytes]] = None) -> List[bytes]:
        """Runs a preprocessor alone; returns each detected map as PNG bytes (the streamed artifacts)."""
        args = {"controlnet_module": module, "controlnet_processor_res": processor_res,
                "controlnet_threshold_a": threshold_a, "controlnet_threshold_b": threshold_b,
                "controlnet_input_images": [base64.b64encode(i).decode() for i in images],
                "controlnet_masks": [base64.b64encode(m).decode() for m in (masks or [])]}
        return [e.data for e in self.invoke("controlnet", "detect", args) if isinstance(e, Artifact)]

    # ---- RIFE (the rife plugin) ----
    def interpolate(self, frames: List[bytes], x: int = 2, scale: float = 1.0, loop: bool = False,
                    model: Optional[str] = None) -> List[bytes]:
        """RIFE frame interpolation of encoded frames (PNG/JPEG/WebP): n frames -> (n-1)*x+1 (n*x with loop), as
        PNG bytes in order, streamed back as they are made."""
        args = {"images": [base64.b64encode(f).decode() for f in frames], "multiplier": x, "scale": scale,
                "loop": loop}
        if model:
            args["model"] = model
        return [e.image.data for e in self.invoke("rife", "interpolate", args) if isinstance(e, Frame)]

    # ---- Extras upscale ----
    def upscale(self, images: List[bytes], upscaler_1: str = "R-ESRGAN 4x+ Anime6B", **fields) -> Job:
        """WebUI's Extras upscale of encoded images (PNG/JPEG/WebP): a job streaming one Result per image, with WebUI's
        "Postprocess ..." infotext. Other fields as UpscaleRequest names them (upscaling_resize, resize_mode,
        upscaling_resize_w/h, upscaling_crop, upscaler_2, extras_upscaler_2_visibility, tile, tile_overlap)."""
        request = generation_pb2.UpscaleRequest(images=list(images), upscaler_1=upscaler_1, **fields)
        return Job(self, self._generation.Upscale(request, metadata=self._metadata))

    def upscalers(self):
        """The upscaler names (hires fix's hr_upscaler, upscale): [(name, filename, missing_file)]."""
        response = self._unary(self._generation.ListUpscalers, generation_pb2.ListUpscalersRequest())
        return [(u.name, u.filename, u.missing_file) for u in response.upscalers]

    def info(self):
        return self._unary(self._daemon.GetInfo, daemon_pb2.GetInfoRequest())
