/* Built against a newer minor than the host's: the host must refuse it. */
#include "broken_common.h"

ATELIER_PLUGIN_EXPORT const atelier_plugin_descriptor* atelier_plugin_entry(uint32_t major, uint32_t minor) {
  static atelier_plugin_descriptor d;
  (void)major;
  (void)minor;
  d = valid_descriptor("abi_minor_newer");
  d.abi_minor = ATELIER_PLUGIN_ABI_MINOR + 3;
  return &d;
}
