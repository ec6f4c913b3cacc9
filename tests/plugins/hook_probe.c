/* hook_probe: implements every hook with a simple, checkable transformation, so tests can see that the host calls
 * each hook with the right tensors and takes the right results back:
 *   cfg_denoiser   x -> 2x           cfg_denoised   x -> x + 1      cfg_after_cfg  x -> -x
 *   unet_residuals r[0] = 1, r[12] = 3x                             unet_block     h -> h + point
 *   postprocess_frames  every frame twice (n -> 2n)
 *   export         artifact "probe.txt" = "frames=<n> first=<infotext 0>", frame 0, a progress report
 *   job_end        reports progress stage "job_end" (job-scoped host calls stay valid until job_end returns)
 *   model_loaded   remembers "title|file|in_channels" (refuses titles containing "reject"); a job whose
 *                  arguments contain "report_model" gets it back as artifact "model.txt" from process
 * It joins a job when its arguments are not null. Arguments containing "fail_process", "fail_postprocess" or
 * "bad_shape" make the matching hook misbehave; "no_residuals" leaves the residuals out (their shapes follow x, so
 * a real UNet refuses them: the generation tests use that to see them arrive). */
#include <atelier/plugin.h>
#include <stdlib.h>
#include <string.h>

#include "probe_tensors.h"

typedef struct {
  const atelier_host_api* host;
  char model[256]; /* title from the last model_loaded */
} probe_state;

typedef struct {
  atelier_job* job;
  int fail_postprocess;
  int bad_shape;
  int no_residuals;
} probe_job;

static int is_float32_cpu(const DLTensor* t) {
  return t != NULL && t->dtype.code == kDLFloat && t->dtype.bits == 32 && t->device.device_type == kDLCPU;
}

static atelier_status probe_init(const atelier_host_api* host, atelier_plugin_state** state, atelier_error* err) {
  probe_state* s = (probe_state*)calloc(1, sizeof(probe_state));
  if (s == NULL) return atelier_fail(err, ATELIER_RESOURCE_EXHAUSTED, "out of memory");
  s->host = host;
  *state = (atelier_plugin_state*)s;
  return ATELIER_OK;
}

static void probe_finalize(atelier_plugin_state* state) { free(state); }

static atelier_status probe_model_loaded(atelier_plugin_state* state, const atelier_model_info* model,
                                         atelier_error* err) {
  probe_state* s = (probe_state*)state;
  if (strstr(model->checkpoint_title, "reject") != NULL) {
    return atelier_fail(err, ATELIER_UNSUPPORTED, "probe: cannot work with %s", model->checkpoint_title);
  }
  snprintf(s->model, sizeof(s->model), "%s|%s|%d", model->checkpoint_title, model->checkpoint_file,
           model->unet_in_channels);
  return ATELIER_OK;
}

static atelier_status probe_process(atelier_plugin_state* state, atelier_job* job, const atelier_job_info* info,
                                    const char* args, atelier_job_state** job_state, atelier_error* err) {
  probe_state* s = (probe_state*)state;
  if (strcmp(args, "null") == 0) return ATELIER_OK;
  if (strstr(args, "report_model") != NULL) {
    /* Job-scoped host functions are valid from process on. */
    atelier_status status = s->host->emit_artifact(job, "model.txt", "text/plain", s->model, strlen(s->model), err);
    if (status != ATELIER_OK) return status;
  }
  if (strstr(args, "fail_process") != NULL) {
    return atelier_fail(err, ATELIER_INVALID_ARGUMENT, "probe: fail_process requested for job %s", info->job_id);
  }
  probe_job* j = (probe_job*)calloc(1, sizeof(probe_job));
  if (j == NULL) return atelier_fail(err, ATELIER_RESOURCE_EXHAUSTED, "out of memory");
  j->job = job;
  j->fail_postprocess = strstr(args, "fail_postprocess") != NULL;
  j->bad_shape = strstr(args, "bad_shape") != NULL;
  j->no_residuals = strstr(args, "no_residuals") != NULL;
  *job_state = (atelier_job_state*)j;
  return ATELIER_OK;
}

static void probe_job_end(atelier_plugin_state* state, atelier_job_state* job_state) {
  probe_state* s = (probe_state*)state;
  probe_job* j = (probe_job*)job_state;
  atelier_error err;
  memset(&err, 0, sizeof(err));
  s->host->report_progress(j->job, "job_end", 0, 0, NULL, &err);
  free(j);
}

static atelier_status probe_cfg_denoiser(atelier_plugin_state* state, atelier_job_state* job_state,
                                         atelier_cfg_denoiser_params* p, atelier_error* err) {
  (void)state;
  (void)job_state;
  if (!is_float32_cpu(p->x)) return atelier_fail(err, ATELIER_INVALID_ARGUMENT, "probe: x must be float32 CPU");
  p->x_out = affine(p->x, 2.0f, 0.0f);
  return ATELIER_OK;
}

static atelier_status probe_cfg_denoised(atelier_plugin_state* state, atelier_job_state* job_state,
                                         atelier_cfg_denoised_params* p, atelier_error* err) {
  (void)state;
  (void)err;
  const probe_job* j = (const probe_job*)job_state;
  if (j->bad_shape) {
    const int64_t shape[1] = {3};
    p->x_out = new_tensor(shape, 1);
    return ATELIER_OK;
  }
  p->x_out = affine(p->x, 1.0f, 1.0f);
  return ATELIER_OK;
}

static atelier_status probe_cfg_after_cfg(atelier_plugin_state* state, atelier_job_state* job_state,
                                          atelier_cfg_after_cfg_params* p, atelier_error* err) {
  (void)state;
  (void)job_state;
  (void)err;
  p->x_out = affine(p->x, -1.0f, 0.0f);
  return ATELIER_OK;
}

static atelier_status probe_unet_residuals(atelier_plugin_state* state, atelier_job_state* job_state,
                                           atelier_unet_residuals_params* p, atelier_error* err) {
  (void)state;
  (void)err;
  if (((const probe_job*)job_state)->no_residuals) return ATELIER_OK;
  p->residual_out[0] = affine(p->x, 0.0f, 1.0f);
  p->residual_out[12] = affine(p->x, 3.0f, 0.0f);
  return ATELIER_OK;
}

static atelier_status probe_unet_block(atelier_plugin_state* state, atelier_job_state* job_state,
                                       atelier_unet_block_params* p, atelier_error* err) {
  (void)state;
  (void)job_state;
  (void)err;
  p->hidden_out = affine(p->hidden, 1.0f, (float)p->point);
  return ATELIER_OK;
}

static atelier_status probe_postprocess(atelier_plugin_state* state, atelier_job_state* job_state,
                                        atelier_frames_params* p, atelier_error* err) {
  (void)state;
  const probe_job* j = (const probe_job*)job_state;
  if (j->fail_postprocess) return atelier_fail(err, ATELIER_INTERNAL, "probe: fail_postprocess requested");
  const DLTensor* in = p->frames;
  if (!is_float32_cpu(in) || in->ndim != 4) return atelier_fail(err, ATELIER_INVALID_ARGUMENT, "probe: bad frames");
  int64_t shape[4] = {in->shape[0] * 2, in->shape[1], in->shape[2], in->shape[3]};
  DLManagedTensor* out = new_tensor(shape, 4);
  if (out == NULL) return atelier_fail(err, ATELIER_RESOURCE_EXHAUSTED, "out of memory");
  const int64_t per_frame = in->shape[1] * in->shape[2] * in->shape[3];
  float* data = (float*)out->dl_tensor.data;
  for (int64_t f = 0; f < in->shape[0]; ++f) {
    for (int64_t i = 0; i < per_frame; ++i) {
      const float v = read_at(in, f * per_frame + i);
      data[(2 * f) * per_frame + i] = v;
      data[(2 * f + 1) * per_frame + i] = v;
    }
  }
  p->frames_out = out;
  return ATELIER_OK;
}

static atelier_status probe_export(atelier_plugin_state* state, atelier_job_state* job_state,
                                   const atelier_export_params* p, atelier_error* err) {
  probe_state* s = (probe_state*)state;
  probe_job* j = (probe_job*)job_state;
  char text[512];
  const int length = snprintf(text, sizeof(text), "frames=%d first=%s", p->count,
                              p->count > 0 ? p->infotexts[0] : "");
  atelier_status status = s->host->emit_artifact(j->job, "probe.txt", "text/plain", text, (size_t)length, err);
  if (status != ATELIER_OK) return status;
  /* Frame 0 as a [3, H, W] view into the borrowed input. */
  DLTensor frame = *p->frames;
  frame.ndim = 3;
  frame.shape = p->frames->shape + 1;
  frame.strides = p->frames->strides ? p->frames->strides + 1 : NULL;
  status = s->host->emit_frame(j->job, 0, &frame, err);
  if (status != ATELIER_OK) return status;
  return s->host->report_progress(j->job, "probe-export", 1, 1, "exported", err);
}

ATELIER_PLUGIN_EXPORT const atelier_plugin_descriptor* atelier_plugin_entry(uint32_t major, uint32_t minor) {
  static atelier_plugin_descriptor d;
  (void)minor;
  if (major != ATELIER_PLUGIN_ABI_MAJOR) return NULL;
  memset(&d, 0, sizeof(d));
  d.abi_major = ATELIER_PLUGIN_ABI_MAJOR;
  d.abi_minor = ATELIER_PLUGIN_ABI_MINOR;
  d.struct_size = sizeof(d);
  d.name = "hook_probe";
  d.version = "1.0.0";
  d.description = "test plugin implementing every hook";
  d.params_schema_json = "{\"type\": \"object\"}";
  d.init = probe_init;
  d.finalize = probe_finalize;
  d.model_loaded = probe_model_loaded;
  d.process = probe_process;
  d.job_end = probe_job_end;
  d.cfg_denoiser = probe_cfg_denoiser;
  d.cfg_denoised = probe_cfg_denoised;
  d.cfg_after_cfg = probe_cfg_after_cfg;
  d.unet_residuals = probe_unet_residuals;
  d.unet_block = probe_unet_block;
  d.postprocess_frames = probe_postprocess;
  d.export_media = probe_export;
  return &d;
}
