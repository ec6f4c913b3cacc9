/* engine_abi_mismatch: claims to be built against another engine (an SDK plugin from another Atelier or libtorch
 * build): the host must refuse it, naming both engine ABI tags. */
#include "broken_common.h"

ATELIER_PLUGIN_EXPORT const atelier_plugin_descriptor* atelier_plugin_entry(uint32_t major, uint32_t minor) {
  static atelier_plugin_descriptor d;
  (void)major;
  (void)minor;
  d = valid_descriptor("engine_abi_mismatch");
  d.engine_abi = "atelier-engine 0.0.1; libtorch 9.9.9; cxx11-abi 0";
  return &d;
}
