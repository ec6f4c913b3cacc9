// A C++ plugin whose `process` hook throws (what the ABI forbids): the host must turn it into the job's error,
// naming the plugin, and keep serving (tests/python/test_faults.py).
#include <cstring>
#include <stdexcept>

#include "broken_common.h"

namespace {

// Throws only in jobs that name it (alwayson_scripts "throws"); others get "null" and it takes no part.
atelier_status Process(atelier_plugin_state*, atelier_job*, const atelier_job_info*, const char* args,
                       atelier_job_state** job_state, atelier_error*) {
  *job_state = nullptr;
  if (args == nullptr || std::strcmp(args, "null") == 0) return ATELIER_OK;
  throw std::runtime_error("the throws plugin threw");
}

void JobEnd(atelier_plugin_state*, atelier_job_state*) {}

}  // namespace

extern "C" ATELIER_PLUGIN_EXPORT const atelier_plugin_descriptor* atelier_plugin_entry(uint32_t, uint32_t) {
  static atelier_plugin_descriptor d = [] {
    atelier_plugin_descriptor v = valid_descriptor("throws");
    v.description = "throws from its process hook (tests)";
    v.process = Process;
    v.job_end = JobEnd;
    return v;
  }();
  return &d;
}
