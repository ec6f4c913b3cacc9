/* A plugin that fails on request, for the daemon's fault tests. Its `process` hook reads alwayson_scripts
 * {"fault": {"args": [{"mode": MODE, "marker": PATH}]}}:
 *   "error"       returns ATELIER_INVALID_ARGUMENT with a message;
 *   "hang"        never returns (the daemon's --plugin-hook-timeout must act);
 *   "crash"       dereferences NULL (SIGSEGV);
 *   "crash_once"  crashes when the file at "marker" does not exist yet (creating it first), else takes no part:
 *                 the job succeeds after the daemon restarted and the client retried it. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "broken_common.h"

/* The string value of "key" in a small JSON text, copied into out (empty when absent). */
static void json_string(const char* json, const char* key, char* out, size_t size) {
  char pattern[64];
  snprintf(pattern, sizeof(pattern), "\"%s\"", key);
  out[0] = '\0';
  const char* at = strstr(json, pattern);
  if (at == NULL) return;
  at = strchr(at + strlen(pattern), '"');
  if (at == NULL) return;
  const char* end = strchr(at + 1, '"');
  if (end == NULL || (size_t)(end - at - 1) >= size) return;
  memcpy(out, at + 1, (size_t)(end - at - 1));
  out[end - at - 1] = '\0';
}

static atelier_status process(atelier_plugin_state* state, atelier_job* job, const atelier_job_info* info,
                              const char* args, atelier_job_state** job_state, atelier_error* err) {
  (void)state;
  (void)job;
  (void)info;
  *job_state = NULL;
  char mode[32], marker[512];
  json_string(args, "mode", mode, sizeof(mode));
  json_string(args, "marker", marker, sizeof(marker));
  if (strcmp(mode, "error") == 0) {
    snprintf(err->message, sizeof(err->message), "the fault plugin was asked to fail");
    return ATELIER_INVALID_ARGUMENT;
  }
  if (strcmp(mode, "hang") == 0) {
    for (;;) sleep(1);
  }
  if (strcmp(mode, "crash_once") == 0) {
    if (marker[0] == '\0' || access(marker, F_OK) == 0) return ATELIER_OK;
    FILE* f = fopen(marker, "w");
    if (f != NULL) fclose(f);
    strcpy(mode, "crash");
  }
  if (strcmp(mode, "crash") == 0) {
    volatile int* nothing = NULL;
    *nothing = 1;
  }
  return ATELIER_OK;
}

static void job_end(atelier_plugin_state* state, atelier_job_state* job_state) {
  (void)state;
  (void)job_state;
}

ATELIER_PLUGIN_EXPORT const atelier_plugin_descriptor* atelier_plugin_entry(uint32_t major, uint32_t minor) {
  static atelier_plugin_descriptor d;
  (void)major;
  (void)minor;
  d = valid_descriptor("fault");
  d.description = "fails on request (tests)";
  d.process = process;
  d.job_end = job_end;
  return &d;
}
