/*
 * atelier/plugin.h -- the Atelier plugin ABI, version 1.4 (1.0 to 1.3 plugins load and run unchanged; 1.3 adds
 * text_condition and batch_rows, 1.4 the init_latent and sample hooks with next_noise, sample_next, script_args and
 * the job's resize_mode; a plugin checks new host fields with ATELIER_HAS_FIELD).
 *
 * A plugin is a shared library that exports one C function, `atelier_plugin_entry`, returning a descriptor. The
 * daemon (the "host") loads every `*.so` in --plugins-dir with dlopen(RTLD_NOW | RTLD_LOCAL), calls the entry,
 * checks the descriptor's version and size, calls `init`, and from then on calls the plugin's hooks at the places
 * WebUI calls its script callbacks. Only C types cross this boundary: no C++ classes, exceptions or RTTI.
 *
 * Versioning (the rules of Triton, CLAP, OBS and SQLite):
 *  - ATELIER_PLUGIN_ABI_MAJOR changes when anything existing changes meaning or layout. The host refuses a
 *    plugin whose major differs from its own.
 *  - ATELIER_PLUGIN_ABI_MINOR grows when fields or functions are appended. The host refuses a plugin built against
 *    a newer minor than its own; it accepts older ones.
 *  - Every struct that crosses the boundary starts with `struct_size` (sizeof as its producer compiled it) and only
 *    ever grows at the end. A reader uses a field only when `struct_size` covers it (ATELIER_HAS_FIELD); the host
 *    zero-fills what an older plugin's descriptor does not cover, so a missing hook reads as NULL.
 *
 * Errors: every call that can fail returns an atelier_status (ATELIER_OK = 0) and takes an `atelier_error*`
 * out-parameter owned by the caller; on failure the callee writes a NUL-terminated, user-readable message into it
 * (atelier_fail does both). A plugin error inside a job fails that job with the plugin's message; the daemon goes on.
 *
 * Tensors are DLPack (dlpack/dlpack.h, v0.6 or later; the DLTensor and DLManagedTensor layouts are the same in
 * all of them):
 *  - inputs are borrowed `const DLTensor*`, valid only during the call; copy what you keep;
 *  - outputs are `DLManagedTensor*` whose ownership passes to the receiver, who calls `deleter` exactly once when
 *    done with it (the "final consumer"); `deleter` may be NULL for memory that needs no release.
 *  Host tensors are CPU or CUDA (kDLCPU / kDLCUDA), float32 unless stated, contiguous row-major unless `strides`
 *  says otherwise.
 *
 * Threading: `init` and `finalize` run on the daemon's main thread, one plugin at a time. Every hook runs on the
 * executor thread, which runs one job at a time: no two hooks of one plugin ever run concurrently. Host functions
 * are callable from any thread (including threads the plugin starts) within the lifetime stated on each.
 *
 * Hook order (1.1): within one hook, participants are called in ascending `priority` (descriptor field; 0 for 1.0
 * plugins), ties broken by name (byte order). `job_end` runs in the reverse order. A plugin that must see another's
 * output (export after RIFE) takes a larger priority.
 *
 * Compute (1.1): the host owns the device and the model. Tensors a hook receives live on the daemon's device
 * (`atelier_host_api.device`: "cpu" or "cuda:N") except where a field says "CPU". The UNet's hidden states
 * (`unet_block`) are in its compute dtype (`atelier_host_api.compute_dtype`); every other tensor the host passes is
 * float32 unless stated. Tensors a plugin returns may be any floating dtype on any device (the host converts them to
 * what it passed), except where a field says "float32 ... CPU" (frames, the schedule). On CUDA, hooks run on the host's current stream (`cuda_stream`): a plugin that uses its own stream
 * synchronises with it before returning. A plugin written in C++ may also link the engine library through the
 * plugin SDK (plugins/sdk); it then records the engine ABI it was built against in `engine_abi`, and the host
 * refuses it when that differs from its own. Plugins on this header alone link nothing of the daemon.
 */
#ifndef ATELIER_PLUGIN_H_
#define ATELIER_PLUGIN_H_

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* ATen bundles its own dlpack.h under the same include guard; include whichever comes first, once. */
#ifndef DLPACK_DLPACK_H_
#include <dlpack/dlpack.h>
#endif

#define ATELIER_PLUGIN_ABI_MAJOR 1
#define ATELIER_PLUGIN_ABI_MINOR 4

/* Name of the one symbol a plugin exports. */
#define ATELIER_PLUGIN_ENTRY_NAME "atelier_plugin_entry"

#if defined(_WIN32)
#define ATELIER_PLUGIN_EXPORT __declspec(dllexport)
#else
#define ATELIER_PLUGIN_EXPORT __attribute__((visibility("default")))
#endif

/* True when a struct whose first field is `struct_size` holds `field` (for reading structs of another version). */
#define ATELIER_HAS_FIELD(ptr, type, field) \
  ((ptr) != NULL && (ptr)->struct_size >= offsetof(type, field) + sizeof(((type*)0)->field))

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------------------------------------------------
 * Status codes and the error out-parameter
 * ---------------------------------------------------------------------------------------------------------------- */

typedef int32_t atelier_status;
enum {
  ATELIER_OK = 0,
  ATELIER_INVALID_ARGUMENT = 1,   /* the request's arguments for this plugin are wrong: the user must change them */
  ATELIER_NOT_FOUND = 2,          /* a named model file or resource does not exist */
  ATELIER_UNSUPPORTED = 3,        /* never works with this input or model ("never") */
  ATELIER_UNAVAILABLE = 4,        /* cannot work right now; retrying later may succeed ("not now") */
  ATELIER_CANCELLED = 5,          /* the plugin saw is_cancelled() and stopped early */
  ATELIER_RESOURCE_EXHAUSTED = 6, /* out of memory or over a limit */
  ATELIER_INTERNAL = 7,           /* a bug or an unexpected failure */
  ATELIER_UNIMPLEMENTED = 8,      /* (1.2) a feature this build does not have (e.g. a preprocessor that needs a
                                   * network): not this input's fault; a 1.1 host reads it as INTERNAL */
  ATELIER_PERMISSION_DENIED = 9   /* (1.4) the request names something the daemon may not read (a server path
                                   * outside the folders it was told to read); a 1.3 host reads it as INTERNAL */
};

#define ATELIER_ERROR_CAPACITY 1024

/* Caller-owned error message buffer. The caller zero-initialises it; the callee writes a NUL-terminated message
 * (truncated to fit) only when it returns a status other than ATELIER_OK. */
typedef struct atelier_error {
  char message[ATELIER_ERROR_CAPACITY];
} atelier_error;

/* Writes a printf-style message into `err` (when not NULL) and returns `code`: `return atelier_fail(err, ...);`. */
static inline atelier_status atelier_fail(atelier_error* err, atelier_status code, const char* format, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
static inline atelier_status atelier_fail(atelier_error* err, atelier_status code, const char* format, ...) {
  if (err != NULL) {
    va_list args;
    va_start(args, format);
    vsnprintf(err->message, sizeof(err->message), format, args);
    va_end(args);
  }
  return code;
}

/* ------------------------------------------------------------------------------------------------------------------
 * Opaque handles
 * ---------------------------------------------------------------------------------------------------------------- */

/* Defined by the plugin; the host only stores and passes it back. One per loaded plugin (from init). */
typedef struct atelier_plugin_state atelier_plugin_state;
/* Defined by the plugin; one per job the plugin takes part in (from process), freed in job_end. */
typedef struct atelier_job_state atelier_job_state;
/* Defined by the host; one per job. Valid from the `process` call until `job_end` returns. */
typedef struct atelier_job atelier_job;
/* Defined by the host; an opened tensor file (checkpoint) from the model folders. */
typedef struct atelier_tensor_file atelier_tensor_file;
/* Defined by the host (1.1); the rest of a model call's chain, given to `model_call`. Valid during that call. */
typedef struct atelier_model_call atelier_model_call;
/* Defined below (1.1); declared here for the host functions that take them. */
typedef struct atelier_model_call_args atelier_model_call_args;
/* (1.4) The rest of one sampling pass (sample_next). */
typedef struct atelier_sample_call atelier_sample_call;
typedef struct atelier_frame atelier_frame;
/* Defined by the host (1.1); bytes the host made (an encoded image), released with `bytes_free`. */
typedef struct atelier_bytes {
  const uint8_t* data;
  size_t size;
  void* owner; /* the host's; do not touch */
} atelier_bytes;

enum {
  ATELIER_LOG_DEBUG = 0,
  ATELIER_LOG_INFO = 1,
  ATELIER_LOG_WARNING = 2,
  ATELIER_LOG_ERROR = 3
};

/* Model folders of the WebUI layout under --models-dir. */
enum {
  ATELIER_FOLDER_CHECKPOINT = 0,    /* models/Stable-diffusion */
  ATELIER_FOLDER_VAE = 1,           /* models/VAE */
  ATELIER_FOLDER_EMBEDDING = 2,     /* embeddings */
  ATELIER_FOLDER_CONTROLNET = 3,    /* models/ControlNet */
  ATELIER_FOLDER_MOTION_MODULE = 4, /* models/AnimateDiff */
  ATELIER_FOLDER_VAE_APPROX = 5,    /* models/VAE-approx */
  ATELIER_FOLDER_RIFE = 6,          /* models/RIFE */
  ATELIER_FOLDER_LORA = 7,          /* (1.2) models/Lora and models/LyCORIS */
  ATELIER_FOLDER_ESRGAN = 8         /* (1.2) models/ESRGAN and models/RealESRGAN (upscalers) */
};

/* ------------------------------------------------------------------------------------------------------------------
 * Host services: a function table the host gives each plugin in `init`.
 * Each plugin gets its own table (so log lines name the plugin); it stays valid until `finalize` returns.
 * ---------------------------------------------------------------------------------------------------------------- */

typedef struct atelier_host_api atelier_host_api;
struct atelier_host_api {
  uint64_t struct_size; /* sizeof(atelier_host_api) as the host compiled it: check fields with ATELIER_HAS_FIELD */
  uint32_t abi_major;   /* the host's ABI version */
  uint32_t abi_minor;
  const char* host_version; /* e.g. "0.1.0"; owned by the host, valid until finalize */
  const char* device;       /* "cpu" or "cuda:N"; owned by the host, valid until finalize */
  void* host_context;       /* the host's own data; plugins must not touch it */

  /* Writes `message` to the daemon log, tagged with the plugin's name. [any thread; until finalize returns]
   * The host copies the message. */
  void (*log)(const atelier_host_api* host, int32_t level, const char* message);

  /* 1 when the job was cancelled (Cancel, client gone, shutdown), else 0. Long-running hooks poll it and return
   * ATELIER_CANCELLED. [any thread; while `job` is valid] */
  int32_t (*is_cancelled)(atelier_job* job);

  /* Reports progress of a plugin stage ("interpolating", 3 of 10) to the job's streams. `stage` and `text` are
   * copied; `text` may be NULL. [any thread; while `job` is valid] */
  atelier_status (*report_progress)(atelier_job* job, const char* stage, int32_t done, int32_t total,
                                    const char* text, atelier_error* err);

  /* Sends an intermediate frame to the job's streams (never dropped). `image` is borrowed and copied before the
   * call returns: uint8 [H, W, 3] (RGB) or [H, W, 4] (RGBA), or float32 [3, H, W] in [0, 1], on the CPU.
   * [any thread; while `job` is valid] */
  atelier_status (*emit_frame)(atelier_job* job, int32_t index, const DLTensor* image, atelier_error* err);

  /* Sends a file (GIF, MP4, contact sheet PNG, ...) to the job's streams (never dropped). `name`, `mime_type` and
   * the `size` bytes at `data` are copied before the call returns. [any thread; while `job` is valid] */
  atelier_status (*emit_artifact)(atelier_job* job, const char* name, const char* mime_type, const void* data,
                                  size_t size, atelier_error* err);

  /* Opens a tensor file (.safetensors) by its path below a model folder (ATELIER_FOLDER_*), e.g.
   * "control_v11p_sd15_canny.safetensors". Paths leaving the folder are refused. The file is memory-mapped and
   * validated; on success `*out` is a new handle the plugin closes with tensor_file_close.
   * [any thread; until finalize returns] */
  atelier_status (*tensor_file_open)(const atelier_host_api* host, int32_t folder, const char* name,
                                     atelier_tensor_file** out, atelier_error* err);

  /* Number of tensors in the file. [any thread; handle open] */
  int64_t (*tensor_file_count)(const atelier_tensor_file* file);

  /* Tensor `index` (0 <= index < count, in file order). `*name` is owned by the handle (valid until close).
   * `*tensor` is a new read-only CPU view of the mapped file whose ownership passes to the caller: call its
   * deleter exactly once. The mapping lives while any view of it lives, even after tensor_file_close.
   * [any thread; handle open] */
  atelier_status (*tensor_file_get)(const atelier_tensor_file* file, int64_t index, const char** name,
                                    DLManagedTensor** tensor, atelier_error* err);

  /* Like tensor_file_get, by name; ATELIER_NOT_FOUND when absent. [any thread; handle open] */
  atelier_status (*tensor_file_find)(const atelier_tensor_file* file, const char* name, DLManagedTensor** tensor,
                                     atelier_error* err);

  /* Closes the handle (tensors taken from it stay valid). NULL is ignored. [any thread, once per handle] */
  void (*tensor_file_close)(atelier_tensor_file* file);

  /* ---- ABI 1.1. From a 1.1 host on, tensor_file_open also reads PyTorch pickles (.ckpt, .pt, .pth, .pkl, .bin:
   * ControlNet .pth, motion-module .ckpt, RIFE flownet.pkl) through the daemon's non-executing reader: no code in
   * the file runs; tensors of a "state_dict" wrapper are found; nested dicts come back with dotted names. Pickle
   * tensors own their memory (no mapping). ---- */

  /* The dtype the UNet computes in: "float32", "bfloat16" or "float16". Owned by the host, valid until finalize. */
  const char* compute_dtype;
  /* The engine ABI tag of this host (see `engine_abi` in the descriptor). Owned by the host, valid until finalize. */
  const char* engine_abi;

  /* The CUDA stream (a cudaStream_t) hooks run on. NULL is CUDA's default stream, which the engine computes on
   * (it makes no stream of its own), and the answer on the CPU. [executor thread; during a hook] */
  void* (*cuda_stream)(const atelier_host_api* host);

  /* Decodes a PNG, JPEG or WebP file. `*image` is a new uint8 [H, W, 3] (RGB) or [H, W, 4] (RGBA, when the file has
   * alpha) CPU tensor whose ownership passes to the caller. INVALID_ARGUMENT for bytes that are not such an image,
   * RESOURCE_EXHAUSTED above the daemon's pixel limit. `data` is borrowed. [any thread; until finalize returns] */
  atelier_status (*image_decode)(const atelier_host_api* host, const void* data, size_t size, DLManagedTensor** image,
                                 atelier_error* err);

  /* Encodes `image` (uint8 [H, W, 3|4] or float32 [3, H, W] in [0, 1], CPU; borrowed) as "png", "jpeg" or "webp"
   * (`quality` 1..100, used by the lossy ones), with `infotext` (may be NULL) where WebUI puts it (PNG
   * "parameters", EXIF UserComment). Alpha is dropped (WebUI's outputs are RGB). `*out` is filled with bytes the
   * caller releases with bytes_free. [any thread; until finalize] */
  atelier_status (*image_encode)(const atelier_host_api* host, const DLTensor* image, const char* format,
                                 int32_t quality, const char* infotext, atelier_bytes* out, atelier_error* err);
  /* Releases bytes from image_encode; a zeroed struct is ignored. [any thread; once per atelier_bytes] */
  void (*bytes_free)(atelier_bytes* bytes);

  /* Adds an infotext key of the job (WebUI's extra_generation_params: "ControlNet 0", "AnimateDiff"), written after
   * the daemon's own keys, in the order added, into every image of the job (`image_index` -1) or one image. Key and
   * value are copied. An image's infotext is made when it is decoded: call this from process or shape_job for a key
   * every image carries; from later hooks it reaches the images decoded after the call. INVALID_ARGUMENT for an
   * empty key or one with ':' or ','. [executor thread; while `job` is valid] */
  atelier_status (*add_infotext)(atelier_job* job, int32_t image_index, const char* key, const char* value,
                                 atelier_error* err);

  /* Runs the rest of a model call's chain (later plugins' model_call wrappers, the residuals and block hooks, then
   * the UNet) on the rows in `args` (borrowed). `*eps` is a new tensor [rows, 4, h, w] the caller owns. May be called
   * any number of times within one model_call (context windows). [executor thread; during that model_call] */
  atelier_status (*model_call_next)(atelier_model_call* call, const atelier_model_call_args* args,
                                    DLManagedTensor** eps, atelier_error* err);

  /* Passes a frame on from inside a `frame` or `frames_finish` hook (RIFE's in-between frames): it goes through the
   * later plugins' `frame` hooks and then to the client as a result, before the frame being processed. Borrowed;
   * copied. Its `infotext` may be NULL (none); its `index` is informational: results are numbered in the order
   * they reach the client. [executor thread; during frame / frames_finish] */
  atelier_status (*push_frame)(atelier_job* job, const atelier_frame* frame, atelier_error* err);

  /* Takes part in this job for another plugin: `plugin` (its name) is called with `args_json` as its
   * alwayson_scripts value, as if the request had it (AnimateDiff hands export its formats and fps). Only from
   * `process`, and only for a plugin whose `process` comes later in hook order; FAILED for one that already ran.
   * The value replaces what the request gave. NOT_FOUND for an unknown plugin; UNSUPPORTED for one whose process
   * already ran, or when called outside process. [executor thread; during process] */
  atelier_status (*feed_plugin)(atelier_job* job, const char* plugin, const char* args_json, atelier_error* err);

  /* Calls another plugin's `invoke` (its method with `args_json`) within this job: what it emits goes to this job's
   * streams. When `result` is not NULL it receives the callee's set_invoke_result JSON ("null" when it set none),
   * bytes the caller releases with bytes_free. NOT_FOUND for an unknown plugin, UNSUPPORTED for one without invoke
   * or calls nested deeper than 8. [executor thread; while `job` is valid] */
  atelier_status (*call_plugin)(atelier_job* job, const char* plugin, const char* method, const char* args_json,
                                atelier_bytes* result, atelier_error* err);

  /* The result of an `invoke`: a JSON value (UTF-8, at most 1 MiB; send larger data with emit_artifact) sent to the
   * client with the job's end (copied; the last call wins). INVALID_ARGUMENT for text that is not JSON.
   * [any thread; during invoke] */
  atelier_status (*set_invoke_result)(atelier_job* job, const char* json, atelier_error* err);

  /* ---- ABI 1.2 ---- */

  /* The model files of a folder (ATELIER_FOLDER_*) as a JSON array, sorted by file name, each
   * {"name": "sub/stem", "filename": "sub/stem.safetensors", "format": "safetensors", "size_bytes": N,
   *  "short_hash": "0123abcd"} (short_hash: WebUI's old 8-digit hash, sha256 of 64 KiB at 1 MiB, as
   * sd-webui-controlnet titles its models). ATELIER_FOLDER_CONTROLNET also lists a WebUI install's
   * extensions/sd-webui-controlnet/models (names there open with tensor_file_open too). `*json` receives bytes the
   * caller releases with bytes_free. [any thread; until finalize returns] */
  atelier_status (*model_list)(const atelier_host_api* host, int32_t folder, atelier_bytes* json, atelier_error* err);

  /* Encodes images with the job's VAE: `image` float32 [n, 3, H, W] in [0, 1] (H, W multiples of 8; any device) ->
   * `*latent` float32 [n, 4, H/8, W/8] on the daemon's device, the posterior mean times the checkpoint's
   * scale_factor (what the UNet sees; sd-webui-controlnet's reference and inpaint latents). Borrowed input; the
   * caller owns `*latent`. UNSUPPORTED outside a generation. [executor thread; during a hook of a generation] */
  atelier_status (*vae_encode)(atelier_job* job, const DLTensor* image, DLManagedTensor** latent, atelier_error* err);

  /* ---- ABI 1.3 ---- */

  /* Conditions a prompt as the job conditions its own (WebUI prompt syntax, embeddings, clip skip, emphasis, the
   * job's LoRA-patched text encoder): `*cond` receives [tokens, hidden] (77 tokens per 75-token chunk) in the
   * compute dtype on the daemon's device, what cfg_denoiser's text_cond rows hold (sd-webui-animatediff's prompt
   * travel conditions each keyframe prompt and interpolates between them). `prompt` is UTF-8, borrowed; the caller
   * owns `*cond`. Prompt-editing schedules take their first step's text. UNSUPPORTED outside a generation,
   * INVALID_ARGUMENT for a prompt the job could not condition. Check presence with ATELIER_HAS_FIELD.
   * [executor thread; during a hook of a generation] */
  atelier_status (*text_condition)(atelier_job* job, const char* prompt, DLManagedTensor** cond, atelier_error* err);

  /* ---- ABI 1.4 ---- */

  /* The next draw of the running batch's image RNG, as WebUI's p.rng.next(): the first draw of a batch is its seeded
   * initial noise (variation seed and seed resize applied), each later one a fresh per-image draw of the same
   * streams (ancestral samplers continue them). `*noise` is a new float32 [rows, 4, h, w] on the daemon's device the
   * caller owns. Draws a plugin takes in init_latent come before the sampler's own noise, as sd-webui-animatediff's
   * img2img latents do. UNSUPPORTED outside init_latent and sample. [executor thread; during init_latent / sample] */
  atelier_status (*next_noise)(atelier_job* job, DLManagedTensor** noise, atelier_error* err);

  /* Runs the pass's sampler (its sampler, steps, schedule, conditioning and every other hook) from `noise` (borrowed,
   * unit-variance float32 [rows, 4, h, w], the shape of the sample hook's `noise`; img2img passes start from their
   * init latent with it, as WebUI's sample_img2img does). `*latent` receives the new float32 [rows, 4, h, w]
   * result (UNet space) the caller owns; `*interrupted` (may be NULL) is set to 1 when Interrupt or Skip ended it,
   * and the plugin should then return that result without sampling again. May be called any number of times within
   * one sample hook (FreeInit's iterations). [executor thread; during that sample hook] */
  atelier_status (*sample_next)(atelier_sample_call* call, const DLTensor* noise, DLManagedTensor** latent,
                                int32_t* interrupted, atelier_error* err);

  /* The alwayson_scripts value another plugin (`plugin`, its name, any case) takes part in this job with, as JSON:
   * what the request gave, or what an earlier plugin fed it; "null" when neither. `*json` receives bytes the caller
   * releases with bytes_free. Read it before changing it with feed_plugin (AnimateDiff gives ControlNet units
   * without an image the frames of its video). NOT_FOUND for an unknown plugin. [executor thread; during process] */
  atelier_status (*script_args)(atelier_job* job, const char* plugin, atelier_bytes* json, atelier_error* err);
};

/* ------------------------------------------------------------------------------------------------------------------
 * Hook parameters. All are host-filled, size-prefixed, and valid only during the call. Inputs are borrowed; the
 * `*_out` fields start NULL and a plugin that sets one hands the host a tensor it now owns.
 * Batch layout (WebUI's CFG denoiser): rows [0, cond_rows) are the conditional rows, rows [cond_rows, rows) the
 * unconditional ones. With AnimateDiff, frames are batch items.
 * ---------------------------------------------------------------------------------------------------------------- */

/* Given to `model_loaded`. */
typedef struct atelier_model_info {
  uint64_t struct_size;
  const char* checkpoint_title; /* WebUI title, e.g. "anime.safetensors [0123456789]" */
  const char* checkpoint_file;  /* path below models/Stable-diffusion */
  int32_t unet_in_channels;     /* 4, or 9 for inpainting checkpoints */
} atelier_model_info;

/* Given to `process`: the job's settings after defaults were applied. Strings are valid until job_end. */
typedef struct atelier_job_info {
  uint64_t struct_size;
  const char* job_id;
  int32_t img2img; /* 0 txt2img, 1 img2img */
  int32_t width;
  int32_t height;
  int32_t batch_size;
  int32_t n_iter;
  int32_t steps;
  int64_t seed; /* seed of the first image */
  float cfg_scale;
  float denoising_strength;
  const char* prompt;
  const char* negative_prompt;
  const char* sampler_name;
  const char* scheduler;
  /* ---- ABI 1.1 ---- */
  double cfg_scale_d;          /* the request's values as given (cfg_scale / denoising_strength are float) */
  double denoising_strength_d;
  int64_t subseed;
  double subseed_strength;
  int32_t clip_skip;
  int32_t hires;               /* 1: hires fix runs a second pass (see pass_started) */
  int32_t hires_width;         /* its size, 0 without hires */
  int32_t hires_height;
  const DLTensor* init_image;  /* img2img: uint8 [H, W, 3], CPU; resized to the job's size, or as given with a mask
                                * (inpainting resizes or crops it later, see pass_started); NULL for txt2img.
                                * Valid until job_end. */
  const DLTensor* mask;        /* inpainting: uint8 [H, W] as given (255 = repaint), CPU; NULL without a mask.
                                * Valid until job_end. */
  int32_t inpaint_full_res;    /* "Only masked": pass_started gives the region that is sampled */
  const char* checkpoint_title; /* the checkpoint the job runs on */
  /* ---- ABI 1.4 ---- */
  int32_t resize_mode;          /* img2img: WebUI's resize_mode (0 just resize, 1 crop and resize, 2 resize and
                                 * fill, 3 latent upscale), how init_image became the job's size; 0 for txt2img */
  const char* loras_json;       /* the job's <lora:...> networks as a JSON array, in the order they are summed:
                                 * [{"name": "as written", "filename": "sub/x.safetensors" (open it with
                                 * tensor_file_open in ATELIER_FOLDER_LORA), "te": 1.0, "unet": 0.8, "dyn": 0}];
                                 * "[]" without any. Keys of modules a plugin adds (AnimateDiff's motion modules) are
                                 * the plugin's to apply. */
} atelier_job_info;

/* WebUI on_cfg_denoiser: before the UNet call of one sampling step. May replace x, sigma and conditioning. */
typedef struct atelier_cfg_denoiser_params {
  uint64_t struct_size;
  int32_t sampling_step;        /* as WebUI reports it (the previous callback's index) */
  int32_t total_sampling_steps; /* requested steps */
  int32_t cond_rows;            /* rows of x that are conditional; the rest are unconditional */
  const DLTensor* x;            /* [rows, 4, h, w] latent input */
  const DLTensor* sigma;        /* [rows] */
  const DLTensor* text_cond;    /* [cond_rows, tokens, 768] */
  const DLTensor* text_uncond;  /* [rows - cond_rows, tokens, 768] */
  const DLTensor* image_cond;   /* inpainting conditioning [rows, 5, h, w], or NULL */
  DLManagedTensor* x_out;
  DLManagedTensor* sigma_out;
  DLManagedTensor* text_cond_out;
  DLManagedTensor* text_uncond_out;
} atelier_cfg_denoiser_params;

/* WebUI on_cfg_denoised: after the UNet call, before the CFG mix. */
typedef struct atelier_cfg_denoised_params {
  uint64_t struct_size;
  int32_t sampling_step;
  int32_t total_sampling_steps;
  int32_t cond_rows;
  const DLTensor* x; /* [rows, 4, h, w] denoised prediction per row */
  DLManagedTensor* x_out;
} atelier_cfg_denoised_params;

/* WebUI on_cfg_after_cfg: after the CFG mix. */
typedef struct atelier_cfg_after_cfg_params {
  uint64_t struct_size;
  int32_t sampling_step;
  int32_t total_sampling_steps;
  const DLTensor* x; /* [images, 4, h, w] guided prediction */
  DLManagedTensor* x_out;
} atelier_cfg_after_cfg_params;

#define ATELIER_UNET_RESIDUALS 13

/* ControlNet's injection: called once per UNet call. A plugin sets residual_out[i] for i in 0..11 (added to the
 * UNet's 12 skip connections, input block order) and 12 (added to the middle block's output); entries left NULL
 * add nothing. Residuals of several plugins are summed. Shapes must equal the skip they are added to. */
typedef struct atelier_unet_residuals_params {
  uint64_t struct_size;
  int32_t sampling_step;
  int32_t total_sampling_steps;
  int32_t cond_rows;
  const DLTensor* x;         /* [rows, 4, h, w] scaled UNet input */
  const DLTensor* timesteps; /* [rows] fractional timesteps */
  const DLTensor* context;   /* [rows, tokens, 768] */
  DLManagedTensor* residual_out[ATELIER_UNET_RESIDUALS];
  /* ---- ABI 1.2 ---- */
  int32_t pass;              /* ATELIER_PASS_* of the call (hires fix: which pass; sd-webui-controlnet's hr_option) */
  /* ---- ABI 1.3 ---- */
  /* int64 [rows], CPU: the row of the denoiser's call (cond rows, then uncond rows) each row of x is, when a
   * model_call wrapper passed a subset (AnimateDiff's context windows); NULL: row i is row i. A per-image hint
   * (a ControlNet unit with one image per frame) is picked with it. */
  const DLTensor* batch_rows;
} atelier_unet_residuals_params;

enum {
  ATELIER_UNET_INPUT_BLOCK = 0,
  ATELIER_UNET_MIDDLE_BLOCK = 1,
  ATELIER_UNET_OUTPUT_BLOCK = 2
};

/* AnimateDiff's insertion points: the UNet passes its hidden state through this hook at 21 points (after input
 * blocks 1,2,4,5,7,8,10,11; before the middle block's last ResBlock; at the end of every output block, before the
 * upsampler in output blocks 2, 5, 8). A plugin may replace the hidden state with one of the same shape. A UNet of
 * another shape (L levels of R ResBlocks; the embedded model has 2 of 1) numbers its points the same way: after each
 * ResBlock input block (0..L*R-1), the middle (L*R), then every output block; block_kind and block_index say where. */
typedef struct atelier_unet_block_params {
  uint64_t struct_size;
  int32_t point;        /* 0..20 in the order above */
  int32_t block_kind;   /* ATELIER_UNET_*_BLOCK */
  int32_t block_index;  /* index within input_blocks / output_blocks; 0 for the middle block */
  int32_t cond_rows;
  const DLTensor* hidden;  /* [rows, channels, h, w] */
  const DLTensor* context; /* [rows, tokens, 768] */
  DLManagedTensor* hidden_out;
} atelier_unet_block_params;

/* After decoding: the job's images as frames. A plugin may return a different number of frames (RIFE). */
typedef struct atelier_frames_params {
  uint64_t struct_size;
  const DLTensor* frames; /* float32 [n, 3, H, W] in [0, 1], CPU */
  DLManagedTensor* frames_out; /* float32 [m, 3, H', W'] in [0, 1], CPU, m >= 1 */
} atelier_frames_params;

/* At the end of a job: make files from the final frames and send them with host->emit_artifact. */
typedef struct atelier_export_params {
  uint64_t struct_size;
  const DLTensor* frames;        /* float32 [n, 3, H, W] in [0, 1], CPU */
  const char* const* infotexts;  /* n infotexts (one per frame; may repeat) */
  int32_t count;                 /* n */
} atelier_export_params;

/* ------------------------------------------------------------------------------------------------------------------
 * ABI 1.1 hook parameters.
 * ---------------------------------------------------------------------------------------------------------------- */

/* The job's shape before seeds are drawn and prompts conditioned (sd-webui-animatediff sets the batch to the
 * video length). In/out: a plugin changes what it needs; the host validates the result as a request. */
typedef struct atelier_job_shape {
  uint64_t struct_size;
  int32_t batch_size;
  int32_t n_iter;
  int32_t steps;
  int32_t width;            /* read-only */
  int32_t height;           /* read-only */
  int32_t frames_per_video; /* > 0: each run of this many batch rows is one video (the UNet normalises jointly) */
} atelier_job_shape;

/* The noise schedule: replace alphas_cumprod (AnimateDiff's linear beta schedule). */
typedef struct atelier_schedule_params {
  uint64_t struct_size;
  const DLTensor* alphas_cumprod;   /* float32 [1000], CPU */
  DLManagedTensor* alphas_cumprod_out; /* same length; NULL keeps it */
} atelier_schedule_params;

enum {
  ATELIER_PASS_TXT2IMG = 0,
  ATELIER_PASS_IMG2IMG = 1,
  ATELIER_PASS_HIRES = 2
};

/* A sampling pass begins (every batch has one, or two with hires fix). */
typedef struct atelier_pass_info {
  uint64_t struct_size;
  int32_t pass;    /* ATELIER_PASS_* */
  int32_t batch;   /* n_iter index */
  int32_t batches;
  int32_t images;  /* rows of the batch */
  int32_t width;   /* pixels of this pass */
  int32_t height;
  int32_t steps;
  int32_t crop_x;  /* inpainting "Only masked": the region of the init image this pass samples; 0 x 0 when none */
  int32_t crop_y;
  int32_t crop_width;
  int32_t crop_height;
} atelier_pass_info;

/* Rows a model call runs on (what model_call_next takes). Rows [0, cond_rows) are conditional. */
struct atelier_model_call_args {
  uint64_t struct_size;
  const DLTensor* x;         /* [rows, in_channels, h, w] scaled UNet input */
  const DLTensor* timesteps; /* [rows] fractional timesteps */
  const DLTensor* context;   /* [rows, tokens, 768] */
  int32_t cond_rows;
  int32_t frames_per_video;  /* 0: the job's */
  /* ---- ABI 1.3 ---- */
  /* int64 [rows], CPU: row i of these rows is row batch_rows[i] of the call they were taken from (model_call_next:
   * set it when passing a subset or a reordering); NULL: the same rows as that call. The host composes it down to
   * the denoiser's rows for the later hooks (unet_residuals batch_rows). */
  const DLTensor* batch_rows;
};

/* One UNet call, for a plugin that wraps it (AnimateDiff's context windows; anything that needs the call as a
 * whole). The plugin calls host->model_call_next(call, ...) on the rows it chooses and sets eps_out to the call's
 * result [rows, 4, h, w]; leaving it NULL runs the call unchanged. */
typedef struct atelier_model_call_params {
  uint64_t struct_size;
  int32_t sampling_step;
  int32_t total_sampling_steps;
  atelier_model_call* call;           /* for model_call_next */
  const atelier_model_call_args* args; /* the call's own rows */
  DLManagedTensor* eps_out;
} atelier_model_call_params;

/* A finished image or animation frame on its way to the client. */
struct atelier_frame {
  uint64_t struct_size;
  int32_t index;         /* its number in the job's stream of frames */
  int64_t seed;
  int64_t subseed;
  const char* infotext;  /* the frame's own */
  const DLTensor* image; /* float32 [3, H, W] in [0, 1], CPU */
  int32_t interrupted;   /* the last x0 of an interrupted or skipped batch */
};

/* Streamed frames: each frame as soon as it is decoded. A plugin may replace the frame (image_out, same rules as
 * `image`), drop it (drop = 1; a filter that emits others with push_frame), or push frames of its own. */
typedef struct atelier_frame_params {
  uint64_t struct_size;
  const atelier_frame* frame;
  int32_t drop;
  DLManagedTensor* image_out; /* float32 [3, H', W'] in [0, 1], CPU */
} atelier_frame_params;

/* No more frames come: flush what is buffered (push_frame) and write files (emit_artifact). Called after the last
 * frame, also when the job was interrupted, cancelled or failed while sampling. An error here is reported with the
 * job's end (a warning) and does not take back the images already delivered. */
typedef struct atelier_frames_finish_params {
  uint64_t struct_size;
  int32_t frames_seen;  /* frames that reached this plugin */
  int32_t interrupted;  /* the job was interrupted or cancelled */
} atelier_frames_finish_params;

/* ------------------------------------------------------------------------------------------------------------------
 * ABI 1.2 hook parameters.
 * ---------------------------------------------------------------------------------------------------------------- */

/* Reference attention (sd-webui-controlnet's reference_only): every BasicTransformerBlock's self-attention, in
 * forward order, sees its input. A plugin may append tokens to its keys and values (`context_out`, e.g. the same
 * layer's input from a pass over a reference image) and mix each row's output with the plain self-attention:
 * out = w * attn(x, x) + (1 - w) * attn(x, [x, context]) with w = plain_weight_out[row] (0 when NULL). Returning
 * nothing leaves the attention exactly as it is. Called inside every UNet forward of the job, including the ones a
 * plugin makes with model_call_next. */
typedef struct atelier_self_attention_params {
  uint64_t struct_size;
  int32_t layer;           /* 0..N-1 in forward order (16 for SD1.x: input, middle, output blocks) */
  int32_t cond_rows;       /* rows [0, cond_rows) are conditional */
  const DLTensor* hidden;  /* norm1(x) [rows, tokens, channels], compute dtype */
  DLManagedTensor* context_out;      /* [rows, tokens', channels], any floating dtype */
  DLManagedTensor* plain_weight_out; /* [rows] */
} atelier_self_attention_params;

/* The output of every whole UNet block (input blocks 0..11, the middle block, output blocks 0..11, in forward
 * order; sd-webui-controlnet's reference_adain). A plugin may replace it with a tensor of the same shape. */
typedef struct atelier_unet_block_end_params {
  uint64_t struct_size;
  int32_t block_kind;      /* ATELIER_UNET_*_BLOCK */
  int32_t block_index;     /* index within input_blocks / output_blocks; 0 for the middle block */
  int32_t cond_rows;
  const DLTensor* hidden;  /* [rows, channels, h, w], compute dtype */
  DLManagedTensor* hidden_out;
} atelier_unet_block_end_params;

/* ------------------------------------------------------------------------------------------------------------------
 * ABI 1.4 hook parameters.
 * ---------------------------------------------------------------------------------------------------------------- */

/* img2img: a pass's init latent before the sampler's noise is drawn (WebUI's before_process_batch;
 * sd-webui-animatediff's per-frame latent_power / latent_scale). A plugin may set init_latent_out (same shape) and
 * draw noise with next_noise. */
typedef struct atelier_init_latent_params {
  uint64_t struct_size;
  const atelier_pass_info* pass;
  const DLTensor* init_latent;     /* [rows, 4, h, w], UNet space (VAE latent times the scale factor) */
  DLManagedTensor* init_latent_out;
} atelier_init_latent_params;

/* Around one sampling pass (WebUI's p.sample replaced: sd-webui-animatediff's FreeInit). The plugin calls
 * host->sample_next(call, noise, ...) as often as it likes and sets latent_out [rows, 4, h, w] to the pass's
 * result; leaving it NULL samples once from `noise`, as without the hook. */
typedef struct atelier_sample_params {
  uint64_t struct_size;
  const atelier_pass_info* pass;
  atelier_sample_call* call;   /* for sample_next */
  const DLTensor* noise;       /* [rows, 4, h, w]: what the pass would start from (initial noise multiplier applied) */
  const DLTensor* alphas_cumprod; /* float32 [1000], CPU: the schedule the pass samples on (after `schedule`) */
  DLManagedTensor* latent_out;
  int32_t interrupted_out;     /* set to 1 when the result is an interrupted pass's */
} atelier_sample_params;

/* ------------------------------------------------------------------------------------------------------------------
 * The descriptor a plugin returns from atelier_plugin_entry.
 * ---------------------------------------------------------------------------------------------------------------- */

typedef struct atelier_plugin_descriptor {
  /* ---- Identity (required). The host reads these three first. ---- */
  uint32_t abi_major;   /* ATELIER_PLUGIN_ABI_MAJOR the plugin was built against */
  uint32_t abi_minor;   /* ATELIER_PLUGIN_ABI_MINOR the plugin was built against */
  uint64_t struct_size; /* sizeof(atelier_plugin_descriptor) as the plugin compiled it */

  const char* name;               /* unique, 1..64 chars [A-Za-z0-9_.-]; the alwayson_scripts key */
  const char* version;            /* the plugin's version, e.g. "1.2.0" */
  const char* description;        /* one line; may be NULL */
  const char* params_schema_json; /* JSON Schema of the plugin's arguments; may be NULL ("{}") */

  /* ---- Lifecycle (required). ---- */

  /* Called once after the checks pass. Store `host` (valid until finalize returns) and return the plugin's state
   * (may be NULL) in `*state`. On failure the plugin is refused; it must release what it took, finalize is not
   * called. [main thread] */
  atelier_status (*init)(const atelier_host_api* host, atelier_plugin_state** state, atelier_error* err);

  /* Called once before the library is unloaded. Free everything and join every thread the plugin started.
   * [main thread; no hook runs during or after it] */
  void (*finalize)(atelier_plugin_state* state);

  /* ---- Hooks (optional: NULL = not used). A descriptor may end after any of them (struct_size). ---- */

  /* WebUI on_model_loaded: a checkpoint was loaded. [main thread for the checkpoint loaded at start-up, before the
   * daemon serves; executor thread afterwards] */
  atelier_status (*model_loaded)(atelier_plugin_state* state, const atelier_model_info* model, atelier_error* err);

  /* WebUI Script.process: called for every job before sampling. `args_json` is the JSON value under the plugin's
   * name in alwayson_scripts (usually {"args": [...]}) or "null" when the request has none. Set `*job_state` to
   * non-NULL to take part in the job (all other hooks are called only then, with that state); leave it NULL to
   * stay out. An error fails the job before it samples. [executor thread] */
  atelier_status (*process)(atelier_plugin_state* state, atelier_job* job, const atelier_job_info* info,
                            const char* args_json, atelier_job_state** job_state, atelier_error* err);

  /* Ends the plugin's part in a job (after success, failure or cancellation); free `job_state` here. Required when
   * `process` can return a non-NULL job state. [executor thread] */
  void (*job_end)(atelier_plugin_state* state, atelier_job_state* job_state);

  /* The hooks below receive the job state from `process`. Their params' inputs are borrowed for the call; a
   * `*_out` tensor the plugin sets passes to the host (deleter called once by the host), also when the hook
   * returns an error. */

  /* WebUI on_cfg_denoiser: once per UNet evaluation, before it; may replace x, sigma, conditioning.
   * [executor thread] */
  atelier_status (*cfg_denoiser)(atelier_plugin_state* state, atelier_job_state* job_state,
                                 atelier_cfg_denoiser_params* params, atelier_error* err);
  /* WebUI on_cfg_denoised: after the UNet, before the CFG mix; may replace the prediction. [executor thread] */
  atelier_status (*cfg_denoised)(atelier_plugin_state* state, atelier_job_state* job_state,
                                 atelier_cfg_denoised_params* params, atelier_error* err);
  /* WebUI on_cfg_after_cfg: after the CFG mix; may replace the guided prediction. [executor thread] */
  atelier_status (*cfg_after_cfg)(atelier_plugin_state* state, atelier_job_state* job_state,
                                  atelier_cfg_after_cfg_params* params, atelier_error* err);
  /* ControlNet-style residuals for the 12 skips and the middle block, once per UNet call. [executor thread] */
  atelier_status (*unet_residuals)(atelier_plugin_state* state, atelier_job_state* job_state,
                                   atelier_unet_residuals_params* params, atelier_error* err);
  /* AnimateDiff-style transform of the hidden state at the 21 insertion points. [executor thread] */
  atelier_status (*unet_block)(atelier_plugin_state* state, atelier_job_state* job_state,
                               atelier_unet_block_params* params, atelier_error* err);
  /* WebUI postprocess_batch_list: may change the frames and their number. [executor thread] */
  atelier_status (*postprocess_frames)(atelier_plugin_state* state, atelier_job_state* job_state,
                                       atelier_frames_params* params, atelier_error* err);
  /* Make files (video, GIF, contact sheet) from the final frames. [executor thread] */
  atelier_status (*export_media)(atelier_plugin_state* state, atelier_job_state* job_state,
                                 const atelier_export_params* params, atelier_error* err);

  /* ---- ABI 1.1 (a 1.0 descriptor ends above: these read as 0 / NULL). ---- */

  /* Hook order: ascending, ties by name. 0 is the default; in-tree plugins use 50 (AnimateDiff: its model-call
   * wrapper is outermost), 100 (ControlNet), 800 (RIFE), 900 (export). */
  int32_t priority;
  /* ATELIER_ENGINE_ABI of the engine a C++ SDK plugin links (plugins/sdk sets it), or NULL for a plugin on this
   * header alone. A host with another engine ABI refuses the plugin, naming both. */
  const char* engine_abi;

  /* The checkpoint is about to be unloaded or replaced: drop what was built from it. [executor thread] */
  void (*model_unloaded)(atelier_plugin_state* state);
  /* Before seeds and conditioning: may change the job's batch, iterations, steps and frames per video.
   * [executor thread] */
  atelier_status (*shape_job)(atelier_plugin_state* state, atelier_job_state* job_state, atelier_job_shape* shape,
                              atelier_error* err);
  /* May replace the noise schedule. [executor thread] */
  atelier_status (*schedule)(atelier_plugin_state* state, atelier_job_state* job_state,
                             atelier_schedule_params* params, atelier_error* err);
  /* A sampling pass begins. [executor thread] */
  atelier_status (*pass_started)(atelier_plugin_state* state, atelier_job_state* job_state,
                                 const atelier_pass_info* info, atelier_error* err);
  /* Wraps every UNet call (outermost first in hook order). [executor thread] */
  atelier_status (*model_call)(atelier_plugin_state* state, atelier_job_state* job_state,
                               atelier_model_call_params* params, atelier_error* err);
  /* Each finished frame, in order, as soon as it is decoded. A hook that returns ATELIER_CANCELLED for a cancelled
   * job passes the frame on unchanged (the interrupted image is still delivered). [executor thread] */
  atelier_status (*frame)(atelier_plugin_state* state, atelier_job_state* job_state, atelier_frame_params* params,
                          atelier_error* err);
  /* After the last frame (also after an interruption, a cancellation or a failure while sampling), before job_end.
   * [executor thread] */
  atelier_status (*frames_finish)(atelier_plugin_state* state, atelier_job_state* job_state,
                                  const atelier_frames_finish_params* params, atelier_error* err);
  /* Work outside a generation (Plugins.Invoke, or another plugin's call_plugin): ControlNet's detect, RIFE on
   * uploaded frames, a contact sheet of images. `job` serves progress, frames, artifacts, cancellation and
   * set_invoke_result, and is valid until invoke returns; `args_json` carries the caller's arguments (images as
   * base64 in WebUI's way).
   * UNSUPPORTED for an unknown method, naming the known ones. [executor thread] */
  atelier_status (*invoke)(atelier_plugin_state* state, atelier_job* job, const char* method,
                           const char* args_json, atelier_error* err);

  /* ---- ABI 1.2 (a 1.1 descriptor ends above). ---- */

  /* Each self-attention of each UNet forward (reference_only). [executor thread] */
  atelier_status (*self_attention)(atelier_plugin_state* state, atelier_job_state* job_state,
                                   atelier_self_attention_params* params, atelier_error* err);
  /* Each whole block's output of each UNet forward (reference_adain). [executor thread] */
  atelier_status (*unet_block_end)(atelier_plugin_state* state, atelier_job_state* job_state,
                                   atelier_unet_block_end_params* params, atelier_error* err);

  /* ---- ABI 1.4 (a 1.2 or 1.3 descriptor ends above). ---- */

  /* img2img: each batch's init latent, before the sampler's noise (per-frame init strength). [executor thread] */
  atelier_status (*init_latent)(atelier_plugin_state* state, atelier_job_state* job_state,
                                atelier_init_latent_params* params, atelier_error* err);
  /* Around each sampling pass (FreeInit); outermost first in hook order. [executor thread] */
  atelier_status (*sample)(atelier_plugin_state* state, atelier_job_state* job_state, atelier_sample_params* params,
                           atelier_error* err);
} atelier_plugin_descriptor;

/* The bytes of the descriptor the host requires: everything up to and including `finalize`. */
#define ATELIER_PLUGIN_DESCRIPTOR_MIN_SIZE \
  (offsetof(atelier_plugin_descriptor, finalize) + sizeof(((atelier_plugin_descriptor*)0)->finalize))

/* The entry point every plugin exports (extern "C", default visibility). The host passes its own ABI version;
 * the plugin returns a pointer to a descriptor with static storage duration, or NULL to decline this host.
 * [main thread, once per load] */
typedef const atelier_plugin_descriptor* (*atelier_plugin_entry_fn)(uint32_t host_abi_major,
                                                                    uint32_t host_abi_minor);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* ATELIER_PLUGIN_H_ */
