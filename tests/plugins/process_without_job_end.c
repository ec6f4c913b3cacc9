/* Has a process hook but no job_end to free its job state: refused. */
#include "broken_common.h"

static atelier_status process(atelier_plugin_state* state, atelier_job* job, const atelier_job_info* info,
                              const char* args, atelier_job_state** job_state, atelier_error* err) {
  (void)state;
  (void)job;
  (void)info;
  (void)args;
  (void)job_state;
  (void)err;
  return ATELIER_OK;
}

ATELIER_PLUGIN_EXPORT const atelier_plugin_descriptor* atelier_plugin_entry(uint32_t major, uint32_t minor) {
  static atelier_plugin_descriptor d;
  (void)major;
  (void)minor;
  d = valid_descriptor("process_without_job_end");
  d.process = process;
  return &d;
}
