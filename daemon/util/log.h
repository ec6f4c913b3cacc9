// A small thread-safe logger writing timestamped lines to stderr: text ("2026-11-26T04:47:38.123Z I message
// job=ab12 client=alice") or, with --log-format json, one JSON object per line for log shippers
// ({"time":"...","level":"info","msg":"message","job":"ab12","client":"alice"}).
#pragma once

#include <initializer_list>
#include <string>

#include "absl/strings/string_view.h"

#include "absl/status/statusor.h"

namespace atelier {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };
enum class LogFormat { kText, kJson };

// One key=value of a structured line (job ids, clients, states, seconds).
struct LogField {
  absl::string_view key;
  std::string value;
};

// Parses "debug", "info", "warning" (or "warn"), "error".
absl::StatusOr<LogLevel> ParseLogLevel(absl::string_view name);
void SetLogLevel(LogLevel level);
// "text" or "json".
absl::StatusOr<LogFormat> ParseLogFormat(absl::string_view name);
void SetLogFormat(LogFormat format);
bool LogEnabled(LogLevel level);
// Writes one line: "2026-11-26T04:47:38.123Z I message". Safe from any thread.
void Log(LogLevel level, absl::string_view message);
// The same with fields after the message.
void Log(LogLevel level, absl::string_view message, std::initializer_list<LogField> fields);

inline void LogDebug(absl::string_view m) { Log(LogLevel::kDebug, m); }
inline void LogInfo(absl::string_view m) { Log(LogLevel::kInfo, m); }
inline void LogWarning(absl::string_view m) { Log(LogLevel::kWarning, m); }
inline void LogError(absl::string_view m) { Log(LogLevel::kError, m); }

}  // namespace atelier
