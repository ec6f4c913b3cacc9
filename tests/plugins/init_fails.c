/* init fails with a message: the host must refuse the plugin and show the message. */
#include "broken_common.h"

static atelier_status failing_init(const atelier_host_api* host, atelier_plugin_state** state, atelier_error* err) {
  (void)host;
  (void)state;
  return atelier_fail(err, ATELIER_UNAVAILABLE, "license file %s is missing", "probe.lic");
}

ATELIER_PLUGIN_EXPORT const atelier_plugin_descriptor* atelier_plugin_entry(uint32_t major, uint32_t minor) {
  static atelier_plugin_descriptor d;
  (void)major;
  (void)minor;
  d = valid_descriptor("init_fails");
  d.init = failing_init;
  return &d;
}
