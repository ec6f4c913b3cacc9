/* Declares a descriptor larger than ABI 1.0 has, while claiming 1.0: the host must refuse it. */
#include "broken_common.h"

ATELIER_PLUGIN_EXPORT const atelier_plugin_descriptor* atelier_plugin_entry(uint32_t major, uint32_t minor) {
  static struct {
    atelier_plugin_descriptor d;
    void* future_hooks[8];
  } big;
  (void)major;
  (void)minor;
  big.d = valid_descriptor("descriptor_too_large");
  big.d.struct_size = sizeof(big);
  return &big.d;
}
