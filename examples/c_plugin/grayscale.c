/*
 * c_plugin: an Atelier plugin in plain C on the C header alone (no libtorch, nothing of the daemon linked).
 *
 * "grayscale" turns every image of a job to grey as it is made (ABI 1.1 `frame` hook), with ITU-R BT.601 luma
 * weights mixed in by `amount` (1 = fully grey), and records itself in the infotext ("Grayscale: 0.75"). Enabled
 * per request, WebUI-style: "alwayson_scripts": {"grayscale": {"args": [0.75]}} (any non-null value; a number is
 * the amount, default 1).
 *
 * What it shows: the descriptor and size-prefixed structs, a job state from process to job_end, reading a borrowed
 * DLPack tensor with its strides, handing an owned tensor back (the host calls its deleter once), and host services
 * (add_infotext).
 */
#include <atelier/plugin.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct gray_state {
  const atelier_host_api* host;
} gray_state;

typedef struct gray_job {
  atelier_job* job;
  float amount;
} gray_job;

/* An output tensor: the DLManagedTensor, its shape and its data in one allocation, freed by its deleter. */
typedef struct owned_tensor {
  DLManagedTensor managed;
  int64_t shape[3];
  float data[];
} owned_tensor;

static void owned_delete(DLManagedTensor* self) { free(self->manager_ctx); }

static atelier_status gray_init(const atelier_host_api* host, atelier_plugin_state** state, atelier_error* err) {
  gray_state* s = (gray_state*)calloc(1, sizeof(gray_state));
  if (s == NULL) return atelier_fail(err, ATELIER_RESOURCE_EXHAUSTED, "out of memory");
  s->host = host;
  *state = (atelier_plugin_state*)s;
  return ATELIER_OK;
}

static void gray_finalize(atelier_plugin_state* state) { free(state); }

static atelier_status gray_process(atelier_plugin_state* state, atelier_job* job, const atelier_job_info* info,
                                   const char* args_json, atelier_job_state** job_state, atelier_error* err) {
  gray_state* s = (gray_state*)state;
  (void)info;
  if (args_json == NULL || strcmp(args_json, "null") == 0) return ATELIER_OK; /* not enabled: stay out */
  float amount = 1.0f;
  const char* list = strstr(args_json, "\"args\"");
  if (list != NULL) {
    const char* open = strchr(list, '[');
    if (open != NULL) {
      char* end = NULL;
      const double v = strtod(open + 1, &end);
      if (end != open + 1) amount = (float)v;
    }
  }
  if (!(amount >= 0.0f && amount <= 1.0f)) {
    return atelier_fail(err, ATELIER_INVALID_ARGUMENT, "amount %g is outside [0, 1]", (double)amount);
  }
  char value[32];
  snprintf(value, sizeof(value), "%g", (double)amount);
  if (strchr(value, '.') == NULL) strncat(value, ".0", sizeof(value) - strlen(value) - 1); /* Python's "1.0" */
  atelier_status status = s->host->add_infotext(job, -1, "Grayscale", value, err);
  if (status != ATELIER_OK) return status;
  gray_job* j = (gray_job*)calloc(1, sizeof(gray_job));
  if (j == NULL) return atelier_fail(err, ATELIER_RESOURCE_EXHAUSTED, "out of memory");
  j->job = job;
  j->amount = amount;
  *job_state = (atelier_job_state*)j;
  return ATELIER_OK;
}

static void gray_job_end(atelier_plugin_state* state, atelier_job_state* job_state) {
  (void)state;
  free(job_state);
}

static atelier_status gray_frame(atelier_plugin_state* state, atelier_job_state* job_state,
                                 atelier_frame_params* params, atelier_error* err) {
  gray_state* s = (gray_state*)state;
  gray_job* j = (gray_job*)job_state;
  const DLTensor* in = params->frame->image; /* float32 [3, H, W] in [0, 1], CPU; borrowed */
  (void)s; /* cheap per-image work runs even for a cancelled job: the interrupted image still reaches the client */
  if (in->ndim != 3 || in->shape[0] != 3 || in->dtype.code != kDLFloat || in->dtype.bits != 32) {
    return atelier_fail(err, ATELIER_INVALID_ARGUMENT, "expected a float32 [3, H, W] frame");
  }
  const int64_t h = in->shape[1], w = in->shape[2];
  const int64_t contiguous[3] = {h * w, w, 1};
  const int64_t* st = in->strides != NULL ? in->strides : contiguous;
  const float* base = (const float*)((const char*)in->data + in->byte_offset);
  owned_tensor* out = (owned_tensor*)malloc(sizeof(owned_tensor) + sizeof(float) * (size_t)(3 * h * w));
  if (out == NULL) return atelier_fail(err, ATELIER_RESOURCE_EXHAUSTED, "out of memory");
  for (int64_t y = 0; y < h; ++y) {
    for (int64_t x = 0; x < w; ++x) {
      const float r = base[y * st[1] + x * st[2]];
      const float g = base[st[0] + y * st[1] + x * st[2]];
      const float b = base[2 * st[0] + y * st[1] + x * st[2]];
      const float luma = 0.299f * r + 0.587f * g + 0.114f * b;
      const float rgb[3] = {r, g, b};
      for (int c = 0; c < 3; ++c) out->data[c * h * w + y * w + x] = rgb[c] + j->amount * (luma - rgb[c]);
    }
  }
  out->shape[0] = 3;
  out->shape[1] = h;
  out->shape[2] = w;
  memset(&out->managed, 0, sizeof(out->managed));
  out->managed.dl_tensor.data = out->data;
  out->managed.dl_tensor.device.device_type = kDLCPU;
  out->managed.dl_tensor.ndim = 3;
  out->managed.dl_tensor.dtype.code = kDLFloat;
  out->managed.dl_tensor.dtype.bits = 32;
  out->managed.dl_tensor.dtype.lanes = 1;
  out->managed.dl_tensor.shape = out->shape;
  out->managed.manager_ctx = out;
  out->managed.deleter = owned_delete;
  params->image_out = &out->managed; /* the host owns it now */
  return ATELIER_OK;
}

ATELIER_PLUGIN_EXPORT const atelier_plugin_descriptor* atelier_plugin_entry(uint32_t host_abi_major,
                                                                           uint32_t host_abi_minor) {
  static atelier_plugin_descriptor d;
  /* `frame` and add_infotext need a 1.1 host: decline an older one instead of failing in a job. */
  if (host_abi_major != ATELIER_PLUGIN_ABI_MAJOR || host_abi_minor < 1) return NULL;
  memset(&d, 0, sizeof(d));
  d.abi_major = ATELIER_PLUGIN_ABI_MAJOR;
  d.abi_minor = ATELIER_PLUGIN_ABI_MINOR;
  d.struct_size = sizeof(d);
  d.name = "grayscale";
  d.version = "1.0.0";
  d.description = "Example C plugin: turns the job's images grey as they are made (frame)";
  d.params_schema_json = "{\"type\": \"object\", \"properties\": {\"args\": {\"type\": \"array\", "
                         "\"items\": [{\"type\": \"number\", \"minimum\": 0, \"maximum\": 1}]}}}";
  d.priority = 500;
  d.init = gray_init;
  d.finalize = gray_finalize;
  d.process = gray_process;
  d.job_end = gray_job_end;
  d.frame = gray_frame;
  return &d;
}
