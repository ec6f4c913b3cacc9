/* Declares a descriptor that ends before the required init/finalize fields: the host must refuse it. */
#include "broken_common.h"

ATELIER_PLUGIN_EXPORT const atelier_plugin_descriptor* atelier_plugin_entry(uint32_t major, uint32_t minor) {
  static atelier_plugin_descriptor d;
  (void)major;
  (void)minor;
  d = valid_descriptor("descriptor_too_small");
  d.struct_size = offsetof(atelier_plugin_descriptor, init);
  return &d;
}
