/* probe_v11: the ABI 1.1 additions, each with a checkable effect. Priority -10 (before the template plugin).
 * It joins a job when its arguments are not null; words in the arguments choose what it does:
 *   "shape"     shape_job: batch_size 2, frames_per_video 2
 *   "schedule"  schedule: alphas_cumprod squared (a different noise schedule)
 *   "windows"   model_call: runs the call as two windows of rows (the first row, then the rest) through
 *               model_call_next and joins them (the result equals the unwrapped call's)
 *   "frames"    frame: before every frame after the first, pushes the mean of it and the previous one (an
 *               in-between, as RIFE); frames_finish pushes a black frame and emits "frames.txt" = "seen=<n>"
 *   "fail_finish"  frames_finish fails (after pushing nothing)
 *   "feed"      process: enables the template plugin ("invert", strength 1) for this job with feed_plugin
 *   "feed_export" process: enables the export plugin with AnimateDiff's way of asking (format list, fps, loop)
 *   "passes"    pass_started: records "<pass>:<w>x<h>:<steps>" and emits it as "passes.txt" at frames_finish
 * and always adds the infotext key "Probe11: on".
 * invoke methods: "echo" (result = arguments), "encode" (a 4x4 PNG through image_encode, decoded again with
 * image_decode: result {"w":4,"h":4,"c":3}, the PNG as artifact "tiny.png"), "big" (an artifact of N bytes, N the
 * number in the arguments), "call" (call_plugin probe_v11.emit), "emit" (artifact "called.txt"), "wait" (reports
 * progress until cancelled, at most ~20 s), "read" (tensor_file_open of the ControlNet file named in the
 * arguments: result {"count": n, "first": "name"}), "stats" (result {"unloaded": n}). */
#include <atelier/plugin.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "probe_tensors.h"

typedef struct {
  const atelier_host_api* host;
  int unloaded;
} v11_state;

typedef struct {
  atelier_job* job;
  int shape, schedule, windows, frames, fail_finish, passes;
  int seen;
  DLManagedTensor* previous; /* the last frame (frames), owned */
  char pass_log[512];
} v11_job;

static DLManagedTensor* copy_of(const DLTensor* in) { return affine(in, 1.0f, 0.0f); }

/* A view of rows [first, first + count) of a contiguous-or-strided tensor (shares data; shape/strides in `buf`). */
static DLTensor rows_view(const DLTensor* t, int64_t first, int64_t count, int64_t* shape_buf, int64_t* stride_buf) {
  DLTensor v = *t;
  int64_t stride = 1;
  for (int d = t->ndim - 1; d >= 0; --d) {
    shape_buf[d] = t->shape[d];
    stride_buf[d] = t->strides ? t->strides[d] : stride;
    stride *= t->shape[d];
  }
  shape_buf[0] = count;
  v.shape = shape_buf;
  v.strides = stride_buf;
  v.byte_offset = t->byte_offset + (uint64_t)(first * stride_buf[0]) * (t->dtype.bits / 8);
  return v;
}

static atelier_status v11_init(const atelier_host_api* host, atelier_plugin_state** state, atelier_error* err) {
  if (!ATELIER_HAS_FIELD(host, atelier_host_api, set_invoke_result)) {
    return atelier_fail(err, ATELIER_UNSUPPORTED, "probe_v11 needs a 1.1 host");
  }
  v11_state* s = (v11_state*)calloc(1, sizeof(v11_state));
  if (s == NULL) return atelier_fail(err, ATELIER_RESOURCE_EXHAUSTED, "out of memory");
  s->host = host;
  *state = (atelier_plugin_state*)s;
  return ATELIER_OK;
}

static void v11_finalize(atelier_plugin_state* state) { free(state); }

static void v11_model_unloaded(atelier_plugin_state* state) { ((v11_state*)state)->unloaded++; }

static atelier_status v11_process(atelier_plugin_state* state, atelier_job* job, const atelier_job_info* info,
                                  const char* args, atelier_job_state** job_state, atelier_error* err) {
  v11_state* s = (v11_state*)state;
  (void)info;
  if (args == NULL || strcmp(args, "null") == 0) return ATELIER_OK;
  v11_job* j = (v11_job*)calloc(1, sizeof(v11_job));
  if (j == NULL) return atelier_fail(err, ATELIER_RESOURCE_EXHAUSTED, "out of memory");
  j->job = job;
  j->shape = strstr(args, "shape") != NULL;
  j->schedule = strstr(args, "schedule") != NULL;
  j->windows = strstr(args, "windows") != NULL;
  j->frames = strstr(args, "frames") != NULL;
  j->fail_finish = strstr(args, "fail_finish") != NULL;
  j->passes = strstr(args, "passes") != NULL;
  *job_state = (atelier_job_state*)j;
  atelier_status st = s->host->add_infotext(job, -1, "Probe11", "on", err);
  if (st != ATELIER_OK) return st;
  if (strstr(args, "feed_export") != NULL) {
    /* As AnimateDiff hands export its format list and fps. */
    st = s->host->feed_plugin(job, "export",
                              "{\"args\": [{\"enabled\": true, \"format\": [\"GIF\", \"TXT\", \"Frame\"], "
                              "\"fps\": 4, \"loop_number\": 1}]}",
                              err);
    if (st != ATELIER_OK) return st;
  } else if (strstr(args, "feed") != NULL) {
    st = s->host->feed_plugin(job, "invert", "{\"args\": [true, 1.0]}", err);
    if (st != ATELIER_OK) return st;
  }
  return ATELIER_OK;
}

static void v11_job_end(atelier_plugin_state* state, atelier_job_state* job_state) {
  v11_job* j = (v11_job*)job_state;
  (void)state;
  if (j->previous != NULL) j->previous->deleter(j->previous);
  free(j);
}

static atelier_status v11_shape_job(atelier_plugin_state* state, atelier_job_state* job_state, atelier_job_shape* shape,
                                    atelier_error* err) {
  (void)state;
  (void)err;
  if (!((v11_job*)job_state)->shape) return ATELIER_OK;
  shape->batch_size = 2;
  shape->frames_per_video = 2;
  return ATELIER_OK;
}

static atelier_status v11_schedule(atelier_plugin_state* state, atelier_job_state* job_state,
                                   atelier_schedule_params* p, atelier_error* err) {
  (void)state;
  if (!((v11_job*)job_state)->schedule) return ATELIER_OK;
  p->alphas_cumprod_out = copy_of(p->alphas_cumprod);
  if (p->alphas_cumprod_out == NULL) return atelier_fail(err, ATELIER_RESOURCE_EXHAUSTED, "out of memory");
  float* a = (float*)p->alphas_cumprod_out->dl_tensor.data;
  for (int64_t i = 0; i < numel(p->alphas_cumprod); ++i) a[i] = a[i] * a[i];
  return ATELIER_OK;
}

static atelier_status v11_pass_started(atelier_plugin_state* state, atelier_job_state* job_state,
                                       const atelier_pass_info* info, atelier_error* err) {
  v11_job* j = (v11_job*)job_state;
  (void)state;
  (void)err;
  if (!j->passes) return ATELIER_OK;
  const char* name = info->pass == ATELIER_PASS_HIRES ? "hires" : info->pass == ATELIER_PASS_IMG2IMG ? "img2img" : "txt2img";
  char entry[64];
  snprintf(entry, sizeof(entry), "%s%s:%dx%d:%d", j->pass_log[0] ? " " : "", name, info->width, info->height,
           info->steps);
  strncat(j->pass_log, entry, sizeof(j->pass_log) - strlen(j->pass_log) - 1);
  return ATELIER_OK;
}

static atelier_status v11_model_call(atelier_plugin_state* state, atelier_job_state* job_state,
                                     atelier_model_call_params* p, atelier_error* err) {
  v11_state* s = (v11_state*)state;
  v11_job* j = (v11_job*)job_state;
  if (!j->windows) return ATELIER_OK; /* eps_out NULL: the call runs unchanged */
  const atelier_model_call_args* a = p->args;
  const int64_t rows = a->x->shape[0];
  if (rows < 2) return ATELIER_OK;
  DLManagedTensor* parts[2] = {NULL, NULL};
  const int64_t first[2] = {0, 1}, count[2] = {1, rows - 1};
  for (int w = 0; w < 2; ++w) {
    int64_t xs[8], xst[8], ts[8], tst[8], cs[8], cst[8];
    DLTensor x = rows_view(a->x, first[w], count[w], xs, xst);
    DLTensor t = rows_view(a->timesteps, first[w], count[w], ts, tst);
    DLTensor c = rows_view(a->context, first[w], count[w], cs, cst);
    atelier_model_call_args sub;
    memset(&sub, 0, sizeof(sub));
    sub.struct_size = sizeof(sub);
    sub.x = &x;
    sub.timesteps = &t;
    sub.context = &c;
    const int64_t cond_end = a->cond_rows;
    sub.cond_rows = (int32_t)(cond_end <= first[w] ? 0 : (cond_end - first[w] < count[w] ? cond_end - first[w] : count[w]));
    atelier_status st = s->host->model_call_next(p->call, &sub, &parts[w], err);
    if (st != ATELIER_OK) {
      if (parts[0] != NULL) parts[0]->deleter(parts[0]);
      return st;
    }
  }
  int64_t shape[4];
  for (int d = 0; d < 4; ++d) shape[d] = parts[0]->dl_tensor.shape[d];
  shape[0] = rows;
  DLManagedTensor* out = new_tensor(shape, 4);
  if (out != NULL) {
    const int64_t n0 = numel(&parts[0]->dl_tensor), n1 = numel(&parts[1]->dl_tensor);
    float* o = (float*)out->dl_tensor.data;
    for (int64_t i = 0; i < n0; ++i) o[i] = read_at(&parts[0]->dl_tensor, i);
    for (int64_t i = 0; i < n1; ++i) o[n0 + i] = read_at(&parts[1]->dl_tensor, i);
  }
  parts[0]->deleter(parts[0]);
  parts[1]->deleter(parts[1]);
  if (out == NULL) return atelier_fail(err, ATELIER_RESOURCE_EXHAUSTED, "out of memory");
  p->eps_out = out;
  return ATELIER_OK;
}

static atelier_status v11_frame(atelier_plugin_state* state, atelier_job_state* job_state, atelier_frame_params* p,
                                atelier_error* err) {
  v11_state* s = (v11_state*)state;
  v11_job* j = (v11_job*)job_state;
  j->seen++;
  if (!j->frames) return ATELIER_OK;
  const DLTensor* img = p->frame->image;
  if (j->previous != NULL) {
    DLManagedTensor* mid = new_tensor(img->shape, img->ndim);
    if (mid == NULL) return atelier_fail(err, ATELIER_RESOURCE_EXHAUSTED, "out of memory");
    float* m = (float*)mid->dl_tensor.data;
    for (int64_t i = 0; i < numel(img); ++i) m[i] = 0.5f * (read_at(img, i) + read_at(&j->previous->dl_tensor, i));
    atelier_frame between = *p->frame;
    between.image = &mid->dl_tensor;
    between.infotext = "in-between";
    atelier_status st = s->host->push_frame(j->job, &between, err);
    mid->deleter(mid);
    if (st != ATELIER_OK) return st;
    j->previous->deleter(j->previous);
  }
  j->previous = copy_of(img);
  return ATELIER_OK;
}

static atelier_status v11_frames_finish(atelier_plugin_state* state, atelier_job_state* job_state,
                                        const atelier_frames_finish_params* p, atelier_error* err) {
  v11_state* s = (v11_state*)state;
  v11_job* j = (v11_job*)job_state;
  if (j->fail_finish) return atelier_fail(err, ATELIER_INTERNAL, "probe_v11: fail_finish requested");
  if (j->passes) {
    atelier_status st = s->host->emit_artifact(j->job, "passes.txt", "text/plain", j->pass_log, strlen(j->pass_log), err);
    if (st != ATELIER_OK) return st;
  }
  if (!j->frames) return ATELIER_OK;
  if (j->previous != NULL) {
    DLManagedTensor* black = new_tensor(j->previous->dl_tensor.shape, 3);
    if (black == NULL) return atelier_fail(err, ATELIER_RESOURCE_EXHAUSTED, "out of memory");
    atelier_frame last;
    memset(&last, 0, sizeof(last));
    last.struct_size = sizeof(last);
    last.index = -1;
    last.seed = 7;
    last.infotext = "black";
    last.image = &black->dl_tensor;
    atelier_status st = s->host->push_frame(j->job, &last, err);
    black->deleter(black);
    if (st != ATELIER_OK) return st;
  }
  char text[64];
  const int n = snprintf(text, sizeof(text), "seen=%d", p->frames_seen);
  return s->host->emit_artifact(j->job, "frames.txt", "text/plain", text, (size_t)n, err);
}

static atelier_status v11_invoke(atelier_plugin_state* state, atelier_job* job, const char* method, const char* args,
                                 atelier_error* err) {
  v11_state* s = (v11_state*)state;
  const atelier_host_api* h = s->host;
  if (strcmp(method, "echo") == 0) return h->set_invoke_result(job, args, err);
  if (strcmp(method, "echo_raw") == 0) return h->set_invoke_result(job, "not json {", err);
  if (strcmp(method, "emit") == 0) return h->emit_artifact(job, "called.txt", "text/plain", "called", 6, err);
  if (strcmp(method, "call") == 0) {
    atelier_status st = h->call_plugin(job, "probe_v11", "emit", "{}", NULL, err);
    if (st != ATELIER_OK) return st;
    atelier_bytes echoed;
    st = h->call_plugin(job, "probe_v11", "echo", "{\"called\": true}", &echoed, err);
    if (st != ATELIER_OK) return st;
    char text[128];
    snprintf(text, sizeof(text), "%.*s", (int)echoed.size, (const char*)echoed.data);
    h->bytes_free(&echoed);
    return h->set_invoke_result(job, text, err);
  }
  if (strcmp(method, "loop") == 0) return h->call_plugin(job, "probe_v11", "loop", "{}", NULL, err);
  if (strcmp(method, "stats") == 0) {
    char text[64];
    snprintf(text, sizeof(text), "{\"unloaded\": %d}", s->unloaded);
    return h->set_invoke_result(job, text, err);
  }
  if (strcmp(method, "big") == 0) {
    const long n = strtol(args, NULL, 10);
    if (n <= 0 || n > (64l << 20)) return atelier_fail(err, ATELIER_INVALID_ARGUMENT, "big: a size in bytes");
    char* data = (char*)malloc((size_t)n);
    if (data == NULL) return atelier_fail(err, ATELIER_RESOURCE_EXHAUSTED, "out of memory");
    for (long i = 0; i < n; ++i) data[i] = (char)('a' + (i * 7 + i / 1000) % 26);
    atelier_status st = h->emit_artifact(job, "big.bin", "application/octet-stream", data, (size_t)n, err);
    free(data);
    return st;
  }
  if (strcmp(method, "encode") == 0) {
    int64_t shape[3] = {3, 4, 4};
    DLManagedTensor* img = new_tensor(shape, 3);
    if (img == NULL) return atelier_fail(err, ATELIER_RESOURCE_EXHAUSTED, "out of memory");
    for (int i = 0; i < 48; ++i) ((float*)img->dl_tensor.data)[i] = (float)(i % 16) / 15.0f;
    atelier_bytes png;
    atelier_status st = h->image_encode(h, &img->dl_tensor, "png", 95, "probe infotext", &png, err);
    img->deleter(img);
    if (st != ATELIER_OK) return st;
    st = h->emit_artifact(job, "tiny.png", "image/png", png.data, png.size, err);
    DLManagedTensor* decoded = NULL;
    if (st == ATELIER_OK) st = h->image_decode(h, png.data, png.size, &decoded, err);
    h->bytes_free(&png);
    if (st != ATELIER_OK) return st;
    char text[64];
    snprintf(text, sizeof(text), "{\"w\": %lld, \"h\": %lld, \"c\": %lld}", (long long)decoded->dl_tensor.shape[1],
             (long long)decoded->dl_tensor.shape[0], (long long)decoded->dl_tensor.shape[2]);
    decoded->deleter(decoded);
    return h->set_invoke_result(job, text, err);
  }
  if (strcmp(method, "wait") == 0) {
    for (int i = 0; i < 2000; ++i) {
      if (h->is_cancelled(job)) return atelier_fail(err, ATELIER_CANCELLED, "probe_v11: cancelled while waiting");
      atelier_status st = h->report_progress(job, "waiting", i, 2000, NULL, err);
      if (st != ATELIER_OK) return st;
      struct timespec ts = {0, 10 * 1000 * 1000};
      nanosleep(&ts, NULL);
    }
    return h->set_invoke_result(job, "\"done\"", err);
  }
  if (strcmp(method, "read") == 0) {
    char name[256];
    const char* q = strchr(args, '"');
    const char* e = q ? strchr(q + 1, '"') : NULL;
    if (q == NULL || e == NULL || e - q - 1 >= (long)sizeof(name)) {
      return atelier_fail(err, ATELIER_INVALID_ARGUMENT, "read: a file name in quotes");
    }
    memcpy(name, q + 1, (size_t)(e - q - 1));
    name[e - q - 1] = '\0';
    atelier_tensor_file* file = NULL;
    atelier_status st = h->tensor_file_open(h, ATELIER_FOLDER_CONTROLNET, name, &file, err);
    if (st != ATELIER_OK) return st;
    const char* first = "";
    DLManagedTensor* t = NULL;
    const int64_t count = h->tensor_file_count(file);
    if (count > 0) st = h->tensor_file_get(file, 0, &first, &t, err);
    char text[512];
    if (st == ATELIER_OK) {
      snprintf(text, sizeof(text), "{\"count\": %lld, \"first\": \"%s\", \"first_numel\": %lld}", (long long)count,
               first, (long long)(t ? numel(&t->dl_tensor) : 0));
    }
    if (t != NULL) t->deleter(t);
    h->tensor_file_close(file);
    if (st != ATELIER_OK) return st;
    return h->set_invoke_result(job, text, err);
  }
  return atelier_fail(err, ATELIER_UNSUPPORTED,
                      "probe_v11 has no method '%s' (echo, emit, call, stats, big, encode, wait, read)", method);
}

ATELIER_PLUGIN_EXPORT const atelier_plugin_descriptor* atelier_plugin_entry(uint32_t major, uint32_t minor) {
  static atelier_plugin_descriptor d;
  (void)minor;
  if (major != ATELIER_PLUGIN_ABI_MAJOR) return NULL;
  memset(&d, 0, sizeof(d));
  d.abi_major = ATELIER_PLUGIN_ABI_MAJOR;
  d.abi_minor = ATELIER_PLUGIN_ABI_MINOR;
  d.struct_size = sizeof(d);
  d.name = "probe_v11";
  d.version = "1.1.0";
  d.description = "test plugin for the ABI 1.1 additions";
  d.priority = -10;
  d.init = v11_init;
  d.finalize = v11_finalize;
  d.process = v11_process;
  d.job_end = v11_job_end;
  d.model_unloaded = v11_model_unloaded;
  d.shape_job = v11_shape_job;
  d.schedule = v11_schedule;
  d.pass_started = v11_pass_started;
  d.model_call = v11_model_call;
  d.frame = v11_frame;
  d.frames_finish = v11_frames_finish;
  d.invoke = v11_invoke;
  return &d;
}
