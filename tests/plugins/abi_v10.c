/* abi_v10: a plugin as a binary built against the ABI 1.0 header presents itself: abi_minor 0 and a descriptor that
 * ends at export_media (its 1.0 size; the 1.0 layout is the start of 1.1's). It must load and run unchanged under a
 * 1.1 host. When its arguments are not null it takes part: cfg_after_cfg halves the guided prediction, and
 * postprocess_frames inverts every frame (1 - x), export_media emits "v10.txt" = "frames=<n>". */
#include <atelier/plugin.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
  const atelier_host_api* host;
} v10_state;

typedef struct {
  atelier_job* job;
} v10_job;

typedef struct {
  DLManagedTensor managed;
  int64_t shape[8];
  float data[];
} v10_tensor;

static void v10_delete(DLManagedTensor* self) { free(self->manager_ctx); }

static DLManagedTensor* mapped(const DLTensor* in, float scale, float add) {
  int64_t count = 1;
  for (int i = 0; i < in->ndim; ++i) count *= in->shape[i];
  v10_tensor* t = (v10_tensor*)calloc(1, sizeof(v10_tensor) + (size_t)count * sizeof(float));
  if (t == NULL) return NULL;
  memcpy(t->shape, in->shape, sizeof(int64_t) * (size_t)in->ndim);
  t->managed.dl_tensor = *in;
  t->managed.dl_tensor.data = t->data;
  t->managed.dl_tensor.shape = t->shape;
  t->managed.dl_tensor.strides = NULL;
  t->managed.dl_tensor.byte_offset = 0;
  t->managed.manager_ctx = t;
  t->managed.deleter = v10_delete;
  const float* base = (const float*)((const char*)in->data + in->byte_offset);
  for (int64_t flat = 0; flat < count; ++flat) {
    int64_t rest = flat, offset = 0, stride = 1;
    for (int d = in->ndim - 1; d >= 0; --d) {
      offset += (rest % in->shape[d]) * (in->strides ? in->strides[d] : stride);
      rest /= in->shape[d];
      stride *= in->shape[d];
    }
    t->data[flat] = base[offset] * scale + add;
  }
  return &t->managed;
}

static atelier_status v10_init(const atelier_host_api* host, atelier_plugin_state** state, atelier_error* err) {
  v10_state* s = (v10_state*)calloc(1, sizeof(v10_state));
  if (s == NULL) return atelier_fail(err, ATELIER_RESOURCE_EXHAUSTED, "out of memory");
  s->host = host;
  *state = (atelier_plugin_state*)s;
  return ATELIER_OK;
}

static void v10_finalize(atelier_plugin_state* state) { free(state); }

static atelier_status v10_process(atelier_plugin_state* state, atelier_job* job, const atelier_job_info* info,
                                  const char* args, atelier_job_state** job_state, atelier_error* err) {
  (void)state;
  /* A 1.0 plugin reads only the 1.0 fields of the job info. */
  if (info->struct_size < offsetof(atelier_job_info, scheduler) + sizeof(info->scheduler)) {
    return atelier_fail(err, ATELIER_INTERNAL, "job info too small");
  }
  if (args == NULL || strcmp(args, "null") == 0) return ATELIER_OK;
  v10_job* j = (v10_job*)calloc(1, sizeof(v10_job));
  if (j == NULL) return atelier_fail(err, ATELIER_RESOURCE_EXHAUSTED, "out of memory");
  j->job = job;
  *job_state = (atelier_job_state*)j;
  return ATELIER_OK;
}

static void v10_job_end(atelier_plugin_state* state, atelier_job_state* job_state) {
  (void)state;
  free(job_state);
}

static atelier_status v10_after_cfg(atelier_plugin_state* state, atelier_job_state* job_state,
                                    atelier_cfg_after_cfg_params* p, atelier_error* err) {
  (void)state;
  (void)job_state;
  p->x_out = mapped(p->x, 0.5f, 0.0f);
  return p->x_out != NULL ? ATELIER_OK : atelier_fail(err, ATELIER_RESOURCE_EXHAUSTED, "out of memory");
}

static atelier_status v10_postprocess(atelier_plugin_state* state, atelier_job_state* job_state,
                                      atelier_frames_params* p, atelier_error* err) {
  (void)state;
  (void)job_state;
  p->frames_out = mapped(p->frames, -1.0f, 1.0f);
  return p->frames_out != NULL ? ATELIER_OK : atelier_fail(err, ATELIER_RESOURCE_EXHAUSTED, "out of memory");
}

static atelier_status v10_export(atelier_plugin_state* state, atelier_job_state* job_state,
                                 const atelier_export_params* p, atelier_error* err) {
  v10_state* s = (v10_state*)state;
  char text[64];
  const int n = snprintf(text, sizeof(text), "frames=%d", p->count);
  return s->host->emit_artifact(((v10_job*)job_state)->job, "v10.txt", "text/plain", text, (size_t)n, err);
}

ATELIER_PLUGIN_EXPORT const atelier_plugin_descriptor* atelier_plugin_entry(uint32_t major, uint32_t minor) {
  static atelier_plugin_descriptor d;
  (void)minor;
  if (major != ATELIER_PLUGIN_ABI_MAJOR) return NULL;
  memset(&d, 0, sizeof(d));
  d.abi_major = 1;
  d.abi_minor = 0;
  d.struct_size = offsetof(atelier_plugin_descriptor, export_media) + sizeof(d.export_media); /* the 1.0 size */
  d.name = "abi_v10";
  d.version = "1.0.0";
  d.description = "a plugin with the ABI 1.0 descriptor";
  d.init = v10_init;
  d.finalize = v10_finalize;
  d.process = v10_process;
  d.job_end = v10_job_end;
  d.cfg_after_cfg = v10_after_cfg;
  d.postprocess_frames = v10_postprocess;
  d.export_media = v10_export;
  /* What a 1.1 header appended stays zero, as the 1.0 binary has no such bytes (the host reads struct_size). */
  d.priority = 12345;
  return &d;
}
