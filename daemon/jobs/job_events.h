// What a running job tells the world, without saying how it travels: the server maps these to its gRPC events
// (server/job_context.cc); tests can collect them directly. Also the plugins' job-scoped services (host::JobSink).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "host/job_sink.h"

namespace atelier::jobs {

// An encoded image file (PNG, JPEG or WebP) with its pixel size.
struct EncodedImage {
  std::string data;
  std::string mime_type;
  int width = 0, height = 0;
};

// Sampling progress (WebUI's state): lossy, the latest wins.
struct ProgressEvent {
  int job_no = 0, job_count = 1;          // batch index and count
  int sampling_step = 0, sampling_steps = 0;
  double progress = 0;                    // 0..1 over the whole job
  std::string pass;                       // "txt2img", "img2img", "hires", or a plugin's stage
  std::string text;
  std::optional<EncodedImage> preview;
};

// A finished image: reliable.
struct ResultEvent {
  int index = 0;
  EncodedImage image;
  std::string infotext;
  std::int64_t seed = 0, subseed = 0;
  bool interrupted = false;
};

class JobEvents : public host::JobSink {
 public:
  virtual const std::string& job_id() const = 0;
  // True once the job must stop (Cancel, the submitting client gone, shutdown). Cheap; check every step.
  virtual bool ShouldStop() const = 0;
  // True once per Skip request (WebUI's Skip: end the current batch early, go on with the next).
  virtual bool TakeSkip() = 0;
  // True when the job was stopped and its remaining work should be dropped: no stream is left to receive it, or
  // other jobs wait for the worker.
  virtual bool Abandoned() const = 0;

  // The job began: every image's seed and variation seed.
  virtual void Started(std::vector<std::int64_t> seeds, std::vector<std::int64_t> subseeds, int image_count) = 0;
  virtual void Progress(ProgressEvent progress) = 0;
  // RESOURCE_EXHAUSTED when the image cannot be delivered (over the message limit).
  virtual absl::Status Result(ResultEvent result) = 0;
  // Adds wall time to a stage (kept in order of first use).
  virtual void AddTiming(const std::string& stage, double seconds) = 0;
  // A problem that does not fail the job (a plugin's export failed after the images were delivered): reported with
  // the job's end.
  virtual void Warn(const std::string& message) = 0;
};

}  // namespace atelier::jobs
