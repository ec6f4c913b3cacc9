/* Claims plugin ABI 2.0: the host must refuse it (major mismatch). */
#include "broken_common.h"

ATELIER_PLUGIN_EXPORT const atelier_plugin_descriptor* atelier_plugin_entry(uint32_t major, uint32_t minor) {
  static atelier_plugin_descriptor d;
  (void)major;
  (void)minor;
  d = valid_descriptor("abi_major");
  d.abi_major = ATELIER_PLUGIN_ABI_MAJOR + 1;
  return &d;
}
