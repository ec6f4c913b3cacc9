#include "server/job_context.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace atelier::server {

JobContext::JobContext(std::shared_ptr<Job> job, int max_message_bytes)
    : job_(std::move(job)), max_message_bytes_(max_message_bytes), started_(absl::Now()) {}

void JobContext::Started(std::vector<std::int64_t> seeds, std::vector<std::int64_t> subseeds, int image_count) {
  v1::GenerateEvent event;
  v1::Started* started = event.mutable_started();
  for (auto s : seeds) started->add_all_seeds(s);
  for (auto s : subseeds) started->add_all_subseeds(s);
  started->set_image_count(image_count);
  started->set_queued_seconds(absl::ToDoubleSeconds(job_->started_at() - job_->submitted_at()));
  if (job_->prepared() != nullptr) started->set_estimated_seconds(job_->prepared()->estimated_seconds().value_or(0));
  job_->PublishReliable(std::move(event));
}

void JobContext::Progress(v1::Progress progress) {
  const double elapsed = absl::ToDoubleSeconds(absl::Now() - started_);
  const float fraction = std::clamp(progress.progress(), 0.0f, 1.0f);
  progress.set_progress(fraction);
  progress.set_elapsed_seconds(elapsed);
  progress.set_eta_seconds(fraction > 0 ? elapsed / fraction - elapsed : 0.0);
  job_->set_progress(fraction);
  const bool has_preview = progress.has_preview();
  v1::GenerateEvent event;
  *event.mutable_progress() = std::move(progress);
  job_->PublishLossy(has_preview ? LossySlot::kPreview : LossySlot::kProgress, std::move(event));
}

absl::Status JobContext::CheckSize(const v1::GenerateEvent& event, const char* what) const {
  const size_t size = event.ByteSizeLong();
  if (size > static_cast<size_t>(max_message_bytes_)) {
    return absl::ResourceExhaustedError(absl::StrCat(what, " of ", size, " bytes exceeds the daemon's message limit of ",
                                                     max_message_bytes_, " bytes (--max-message-mb)"));
  }
  return absl::OkStatus();
}

absl::Status JobContext::Result(v1::Result result) {
  v1::GenerateEvent event;
  *event.mutable_result() = std::move(result);
  if (auto status = CheckSize(event, "a result image"); !status.ok()) return status;
  job_->PublishReliable(std::move(event));
  return absl::OkStatus();
}

absl::Status JobContext::Frame(v1::Frame frame) {
  v1::GenerateEvent event;
  *event.mutable_frame() = std::move(frame);
  if (auto status = CheckSize(event, "a frame"); !status.ok()) return status;
  job_->PublishReliable(std::move(event));
  return absl::OkStatus();
}

absl::Status JobContext::Artifact(v1::Artifact artifact) {
  // Chunks that leave room for the envelope below the message limit.
  const size_t chunk = static_cast<size_t>(std::max(max_message_bytes_ - 64 * 1024, 4096));
  const std::string data = std::move(*artifact.mutable_data());
  artifact.clear_data();
  artifact.set_total_size(data.size());
  size_t offset = 0;
  do {
    const size_t n = std::min(chunk, data.size() - offset);
    v1::GenerateEvent event;
    v1::Artifact* part = event.mutable_artifact();
    *part = artifact;
    part->set_data(data.substr(offset, n));
    part->set_offset(offset);
    part->set_last(offset + n == data.size());
    if (auto status = CheckSize(event, "an artifact chunk"); !status.ok()) return status;
    job_->PublishReliable(std::move(event));
    offset += n;
  } while (offset < data.size());
  return absl::OkStatus();
}

namespace {
v1::Image ToProto(jobs::EncodedImage image) {
  v1::Image out;
  out.set_data(std::move(image.data));
  out.set_mime_type(std::move(image.mime_type));
  out.set_width(image.width);
  out.set_height(image.height);
  return out;
}
}  // namespace

void JobContext::Progress(jobs::ProgressEvent p) {
  v1::Progress progress;
  progress.set_job_no(p.job_no);
  progress.set_job_count(p.job_count);
  progress.set_sampling_step(p.sampling_step);
  progress.set_sampling_steps(p.sampling_steps);
  progress.set_progress(static_cast<float>(p.progress));
  progress.set_pass(std::move(p.pass));
  progress.set_text(std::move(p.text));
  if (p.preview) *progress.mutable_preview() = ToProto(*std::move(p.preview));
  Progress(std::move(progress));
}

absl::Status JobContext::Result(jobs::ResultEvent r) {
  v1::Result result;
  result.set_index(r.index);
  *result.mutable_image() = ToProto(std::move(r.image));
  result.set_infotext(std::move(r.infotext));
  result.set_seed(r.seed);
  result.set_subseed(r.subseed);
  result.set_interrupted(r.interrupted);
  return Result(std::move(result));
}

void JobContext::Warn(const std::string& message) { warnings_.push_back(message); }

void JobContext::AddTiming(const std::string& stage, double seconds) {
  for (auto& [name, total] : timings_) {
    if (name == stage) {
      total += seconds;
      return;
    }
  }
  timings_.emplace_back(stage, seconds);
}

absl::Status JobContext::ReportPluginProgress(const std::string& plugin, const std::string& stage, int done,
                                              int total, const std::string& text) {
  v1::Progress progress;
  progress.set_pass(stage.empty() ? plugin : stage);
  progress.set_text(text.empty() ? absl::StrCat(plugin, ": ", done, "/", total) : text);
  progress.set_sampling_step(done);
  progress.set_sampling_steps(total);
  progress.set_progress(job_->progress());
  Progress(std::move(progress));
  return absl::OkStatus();
}

absl::Status JobContext::EmitFrame(const std::string& plugin, int index, std::string png, int width, int height) {
  v1::Frame frame;
  frame.set_index(index);
  frame.set_plugin(plugin);
  frame.mutable_image()->set_data(std::move(png));
  frame.mutable_image()->set_mime_type("image/png");
  frame.mutable_image()->set_width(width);
  frame.mutable_image()->set_height(height);
  return Frame(std::move(frame));
}

absl::Status JobContext::EmitArtifact(const std::string& plugin, std::string name, std::string mime_type,
                                      std::string data) {
  if (outputs_ != nullptr && plugin == "export") {
    const bool img2img = request().mode() == v1::MODE_IMG2IMG || request().init_images_size() > 0;
    auto saved = outputs_->Save(job_id(), img2img, name, data);
    if (!saved.ok()) Warn(std::string(saved.status().message()));
  }
  v1::Artifact artifact;
  artifact.set_name(std::move(name));
  artifact.set_mime_type(std::move(mime_type));
  artifact.set_data(std::move(data));
  artifact.set_plugin(plugin);
  return Artifact(std::move(artifact));
}

}  // namespace atelier::server
