#include "server/client_quotas.h"

#include "absl/strings/str_format.h"

namespace atelier::server {
namespace {

template <typename T>
std::optional<T> Either(const std::optional<T>& own, const std::optional<T>& fallback) {
  return own.has_value() ? own : fallback;
}

}  // namespace

ClientLimits ClientLimits::Over(const ClientLimits& defaults) const {
  return {Either(jobs, defaults.jobs), Either(queued, defaults.queued), Either(work_per_job, defaults.work_per_job),
          Either(work_per_minute, defaults.work_per_minute), Either(job_seconds, defaults.job_seconds)};
}

void ClientQuotas::Expire(std::deque<std::pair<absl::Time, double>>& window, absl::Time now) {
  while (!window.empty() && window.front().first <= now - absl::Minutes(1)) window.pop_front();
}

double ClientQuotas::RecentWork(const std::string& client, absl::Time now) {
  std::lock_guard<std::mutex> lock(mu_);
  auto& window = recent_[client];
  Expire(window, now);
  double total = 0;
  for (const auto& [at, work] : window) total += work;
  return total;
}

absl::Status ClientQuotas::Admit(const std::string& client, const ClientLimits& limits, double work, int queued_now,
                                 int active_now, absl::Time now) {
  // A limit of 0 on jobs / queued means none allowed (a token kept but switched off); on work, no limit.
  if (limits.jobs && active_now >= *limits.jobs) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "client '%s' already has %d job(s) queued or running, its limit (jobs=%d): wait for one to finish or cancel "
        "one", client, active_now, *limits.jobs));
  }
  if (limits.queued && queued_now >= *limits.queued) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "client '%s' already has %d job(s) waiting in the queue, its limit (queued=%d): wait for one to start",
        client, queued_now, *limits.queued));
  }
  if (limits.work_per_job && *limits.work_per_job > 0 && work > *limits.work_per_job) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "this job is %.1f megapixel-steps (width x height x steps x images or frames, over every pass), over the "
        "limit of %.1f per job (work_per_job): use fewer steps, images or frames, or a smaller size",
        work, *limits.work_per_job));
  }
  std::lock_guard<std::mutex> lock(mu_);
  auto& window = recent_[client];
  Expire(window, now);
  if (limits.work_per_minute && *limits.work_per_minute > 0) {
    double recent = 0;
    for (const auto& [at, w] : window) recent += w;
    if (work > *limits.work_per_minute) {
      return absl::ResourceExhaustedError(absl::StrFormat(
          "this job is %.1f megapixel-steps, more than client '%s' may submit in a minute (work_per_minute=%.1f): "
          "use fewer steps, images or frames, or a smaller size",
          work, client, *limits.work_per_minute));
    }
    if (recent + work > *limits.work_per_minute) {
      // When enough of the window's work will have aged out for this job to fit.
      double freed = 0;
      absl::Duration wait = absl::Minutes(1);
      for (const auto& [at, w] : window) {
        freed += w;
        if (recent - freed + work <= *limits.work_per_minute) {
          wait = at + absl::Minutes(1) - now;
          break;
        }
      }
      return absl::ResourceExhaustedError(absl::StrFormat(
          "client '%s' submitted %.1f megapixel-steps in the last minute; this job's %.1f would pass the limit of "
          "%.1f per minute (work_per_minute): retry in %.0f s",
          client, recent, work, *limits.work_per_minute, std::max(1.0, absl::ToDoubleSeconds(wait))));
    }
  }
  window.emplace_back(now, work);
  return absl::OkStatus();
}

void ClientQuotas::Refund(const std::string& client, double work) {
  std::lock_guard<std::mutex> lock(mu_);
  auto& window = recent_[client];
  for (auto it = window.rbegin(); it != window.rend(); ++it) {
    if (it->second == work) {
      window.erase(std::next(it).base());
      return;
    }
  }
}

}  // namespace atelier::server
