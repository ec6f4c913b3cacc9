/* A name with characters the host does not allow in alwayson_scripts keys: refused. */
#include "broken_common.h"

ATELIER_PLUGIN_EXPORT const atelier_plugin_descriptor* atelier_plugin_entry(uint32_t major, uint32_t minor) {
  static atelier_plugin_descriptor d;
  (void)major;
  (void)minor;
  d = valid_descriptor("bad name!");
  return &d;
}
