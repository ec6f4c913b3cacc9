/* A plugin "built against a newer header" that needs tensor_file_close: it checks the host table's struct_size
 * with ATELIER_HAS_FIELD and declines (init fails with a clear message) when the host is too old. */
#include "broken_common.h"

static atelier_status probe_init(const atelier_host_api* host, atelier_plugin_state** state, atelier_error* err) {
  *state = NULL;
  if (!ATELIER_HAS_FIELD(host, atelier_host_api, tensor_file_close)) {
    return atelier_fail(err, ATELIER_UNSUPPORTED, "host function table too old (struct_size %llu): needs tensor_file_close",
                        (unsigned long long)host->struct_size);
  }
  host->log(host, ATELIER_LOG_DEBUG, "host table has every function");
  return ATELIER_OK;
}

ATELIER_PLUGIN_EXPORT const atelier_plugin_descriptor* atelier_plugin_entry(uint32_t major, uint32_t minor) {
  static atelier_plugin_descriptor d;
  (void)major;
  (void)minor;
  d = valid_descriptor("host_api_probe");
  d.init = probe_init;
  return &d;
}
