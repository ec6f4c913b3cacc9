#include "event_printer.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace atelier::cli {

std::string FormatSeconds(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  if (seconds < 60) return absl::StrFormat("%.1fs", seconds);
  const int total = static_cast<int>(seconds + 0.5);
  if (total < 3600) return absl::StrFormat("%dm%02ds", total / 60, total % 60);
  return absl::StrFormat("%dh%02dm", total / 3600, (total / 60) % 60);
}

void EventPrinter::Line(const std::string& text) {
  Flush();
  std::fprintf(out_, "%s\n", text.c_str());
  std::fflush(out_);
}

void EventPrinter::Flush() {
  if (bar_open_) {
    std::fprintf(out_, "\n");
    bar_open_ = false;
  }
}

void EventPrinter::Print(const v1::GenerateEvent& event) {
  switch (event.event_case()) {
    case v1::GenerateEvent::kQueued:
      Line(absl::StrCat("job ", event.job_id(), " queued: position ", event.queued().position() + 1, " of ",
                        event.queued().queue_length()));
      break;
    case v1::GenerateEvent::kStarted:
      Line(absl::StrCat("job ", event.job_id(), " started: ", event.started().image_count(), " image(s), seeds ",
                        absl::StrJoin(event.started().all_seeds(), ", ")));
      break;
    case v1::GenerateEvent::kProgress: {
      const v1::Progress& p = event.progress();
      const int percent = static_cast<int>(p.progress() * 100.0f + 0.5f);
      const std::string pass = p.pass().empty() ? "" : absl::StrCat(p.pass(), " ");
      const std::string counts = absl::StrCat(pass, "step ", p.sampling_step(), "/", p.sampling_steps(),
                                              p.job_count() > 1 ? absl::StrCat(", batch ", p.job_no() + 1, "/",
                                                                               p.job_count())
                                                                : "");
      const std::string preview = p.has_preview() ? " [preview]" : "";
      if (tty_) {
        constexpr int kWidth = 30;
        const int filled = std::min(kWidth, percent * kWidth / 100);
        std::fprintf(out_, "\r[%s%s] %3d%% %s, ETA %s%s\033[K", std::string(filled, '#').c_str(),
                     std::string(kWidth - filled, '.').c_str(), percent, counts.c_str(),
                     FormatSeconds(p.eta_seconds()).c_str(), preview.c_str());
        std::fflush(out_);
        bar_open_ = true;
      } else if (percent != last_percent_ || p.has_preview()) {
        Line(absl::StrFormat("progress %3d%% %s, elapsed %s, ETA %s%s", percent, counts,
                             FormatSeconds(p.elapsed_seconds()), FormatSeconds(p.eta_seconds()), preview));
      }
      last_percent_ = percent;
      break;
    }
    case v1::GenerateEvent::kFrame:
      Line(absl::StrCat("frame ", event.frame().index(), " (", event.frame().image().width(), "x",
                        event.frame().image().height(), ")",
                        event.frame().plugin().empty() ? "" : absl::StrCat(" from ", event.frame().plugin())));
      break;
    case v1::GenerateEvent::kResult:
      Line(absl::StrCat("result ", event.result().index(), ": seed ", event.result().seed(), ", ",
                        event.result().image().data().size(), " bytes ", event.result().image().mime_type(),
                        event.result().interrupted() ? " (interrupted)" : ""));
      break;
    case v1::GenerateEvent::kArtifact: {
      const v1::Artifact& a = event.artifact();
      // Chunked files are announced once, with their whole size, after the last chunk.
      if (!a.last() && !(a.total_size() == 0 && a.offset() == 0)) break;
      Line(absl::StrCat("artifact ", a.name(), " (", a.mime_type(), ", ",
                        a.total_size() > 0 ? a.total_size() : a.data().size(), " bytes) from ", a.plugin()));
      break;
    }
    case v1::GenerateEvent::kFinished: {
      const v1::Finished& f = event.finished();
      std::vector<std::string> stages;
      for (const auto& t : f.timings()) stages.push_back(absl::StrCat(t.stage(), " ", FormatSeconds(t.seconds())));
      for (const auto& warning : f.warnings()) Line(absl::StrCat("warning: ", warning));
      Line(absl::StrCat("finished: ", v1::JobState_Name(f.state()), f.message().empty() ? "" : " (" + f.message() + ")",
                        ", queued ", FormatSeconds(f.queued_seconds()), ", ran ", FormatSeconds(f.run_seconds()),
                        stages.empty() ? "" : absl::StrCat(" [", absl::StrJoin(stages, ", "), "]")));
      break;
    }
    case v1::GenerateEvent::EVENT_NOT_SET:
      break;
  }
}

}  // namespace atelier::cli
