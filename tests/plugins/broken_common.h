/* Shared bits of the deliberately broken test plugins: a valid descriptor each test then breaks one way. */
#ifndef ATELIER_TESTS_BROKEN_COMMON_H_
#define ATELIER_TESTS_BROKEN_COMMON_H_

#include <atelier/plugin.h>
#include <string.h>

__attribute__((unused)) static atelier_status broken_init(const atelier_host_api* host, atelier_plugin_state** state, atelier_error* err) {
  (void)host;
  (void)err;
  *state = NULL;
  return ATELIER_OK;
}

__attribute__((unused)) static void broken_finalize(atelier_plugin_state* state) { (void)state; }

__attribute__((unused)) static atelier_plugin_descriptor valid_descriptor(const char* name) {
  atelier_plugin_descriptor d;
  memset(&d, 0, sizeof(d));
  d.abi_major = ATELIER_PLUGIN_ABI_MAJOR;
  d.abi_minor = ATELIER_PLUGIN_ABI_MINOR;
  d.struct_size = sizeof(atelier_plugin_descriptor);
  d.name = name;
  d.version = "0.0.1";
  d.description = "deliberately broken test plugin";
  d.init = broken_init;
  d.finalize = broken_finalize;
  return d;
}

#endif
