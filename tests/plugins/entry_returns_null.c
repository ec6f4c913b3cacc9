/* Declines every host by returning NULL from the entry point. */
#include "broken_common.h"

ATELIER_PLUGIN_EXPORT const atelier_plugin_descriptor* atelier_plugin_entry(uint32_t major, uint32_t minor) {
  (void)major;
  (void)minor;
  return NULL;
}
