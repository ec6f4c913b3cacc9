/* An "older" plugin whose descriptor ends right after model_loaded. The bytes after it hold non-NULL pointers to a
 * function that aborts: a host honouring struct_size never sees them as hooks. It must load, with model_loaded
 * as its only hook. */
#include <stdlib.h>

#include "broken_common.h"

static atelier_status on_model_loaded(atelier_plugin_state* state, const atelier_model_info* model,
                                      atelier_error* err) {
  (void)state;
  (void)model;
  (void)err;
  return ATELIER_OK;
}

static void must_not_be_called(void) { abort(); }

ATELIER_PLUGIN_EXPORT const atelier_plugin_descriptor* atelier_plugin_entry(uint32_t major, uint32_t minor) {
  static atelier_plugin_descriptor d;
  (void)major;
  (void)minor;
  d = valid_descriptor("old_small_descriptor");
  d.model_loaded = on_model_loaded;
  d.struct_size = offsetof(atelier_plugin_descriptor, model_loaded) + sizeof(d.model_loaded);
  /* Garbage beyond struct_size. */
  d.process = (void*)must_not_be_called;
  d.job_end = (void*)must_not_be_called;
  d.postprocess_frames = (void*)must_not_be_called;
  d.export_media = (void*)must_not_be_called;
  return &d;
}
