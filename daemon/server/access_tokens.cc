#include "server/access_tokens.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include <fstream>
#include <set>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace atelier::server {
namespace {

constexpr std::size_t kMinTokenLength = 16;
constexpr std::size_t kMaxTokenLength = 512;
constexpr const char* kLimitKeys = "jobs, queued, work_per_job, work_per_minute, job_seconds, admin";

std::array<std::uint8_t, 32> Sha256(absl::string_view text) {
  std::array<std::uint8_t, 32> digest{};
  SHA256(reinterpret_cast<const unsigned char*>(text.data()), text.size(), digest.data());
  return digest;
}

absl::Status LineError(int line, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("--auth-tokens, line ", line, ": ", what));
}

// One "key=value" (or "admin") of a token's line into `token`.
absl::Status ParseLimit(int line, absl::string_view field, AccessToken& token) {
  if (field == "admin") {
    token.admin = true;
    return absl::OkStatus();
  }
  const auto eq = field.find('=');
  const absl::string_view key = field.substr(0, eq), value = field.substr(eq + 1);
  if (key == "jobs" || key == "queued") {
    int n = 0;
    if (!absl::SimpleAtoi(value, &n) || n < 0) {
      return LineError(line, absl::StrCat(key, " must be a whole number of jobs (0: none allowed)"));
    }
    (key == "jobs" ? token.limits.jobs : token.limits.queued) = n;
    return absl::OkStatus();
  }
  if (key == "work_per_job" || key == "work_per_minute" || key == "job_seconds") {
    double x = 0;
    if (!absl::SimpleAtod(value, &x) || !(x >= 0) || x > 1e15) {
      return LineError(line, absl::StrCat(key, " must be a number >= 0 (",
                                          key == "job_seconds" ? "seconds" : "megapixel-steps", "; 0: no limit)"));
    }
    (key == "work_per_job" ? token.limits.work_per_job
     : key == "work_per_minute" ? token.limits.work_per_minute
                                : token.limits.job_seconds) = x;
    return absl::OkStatus();
  }
  // The key may be a mistyped limit; it is not the token (that is the line's first field), so it can be shown.
  return LineError(line, absl::StrCat("unknown limit '", key.substr(0, 40), "' (valid: ", kLimitKeys, ")"));
}

}  // namespace

absl::StatusOr<AccessTokens> AccessTokens::Load(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  // The path is the operator's secret's location: errors name the flag, not the path.
  if (!in) return absl::NotFoundError("--auth-tokens: the file cannot be opened (does it exist, is it readable?)");
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return absl::DataLossError("--auth-tokens: the file cannot be read");
  return Parse(text.str());
}

absl::StatusOr<AccessTokens> AccessTokens::Parse(absl::string_view text) {
  AccessTokens result;
  std::set<std::string> names;
  std::set<std::array<std::uint8_t, 32>> digests;
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_number;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line.front() == '#') continue;
    std::vector<absl::string_view> fields = absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    const absl::string_view secret = fields[0];
    if (secret.size() < kMinTokenLength || secret.size() > kMaxTokenLength) {
      return LineError(line_number, absl::StrCat("a token must be ", kMinTokenLength, " to ", kMaxTokenLength,
                                                 " characters (`openssl rand -hex 32` makes a good one)"));
    }
    for (char c : secret) {
      if (c < 0x21 || c > 0x7e) {
        return LineError(line_number, "a token must be printable ASCII (it travels in an HTTP/2 header)");
      }
    }
    AccessToken token;
    token.digest = Sha256(secret);
    std::size_t next = 1;
    if (fields.size() > 1 && fields[1].find('=') == absl::string_view::npos && fields[1] != "admin") {
      token.name = std::string(fields[1].substr(0, 64));
      next = 2;
    } else {
      token.name = absl::StrCat("token-", line_number);
    }
    for (; next < fields.size(); ++next) {
      if (absl::Status st = ParseLimit(line_number, fields[next], token); !st.ok()) return st;
    }
    if (!digests.insert(token.digest).second) return LineError(line_number, "the same token appears twice");
    if (!names.insert(token.name).second) {
      return LineError(line_number, absl::StrCat("the name '", token.name, "' is used twice (names tell clients "
                                                                           "apart in quotas and ListJobs)"));
    }
    result.tokens_.push_back(std::move(token));
  }
  if (result.tokens_.empty()) {
    return absl::InvalidArgumentError(
        "--auth-tokens: the file has no tokens (one per line: TOKEN [NAME] [jobs=N queued=N work_per_job=X "
        "work_per_minute=X job_seconds=X admin]; `openssl rand -hex 32` makes a token)");
  }
  return result;
}

const AccessToken* AccessTokens::Match(absl::string_view presented) const {
  // Hashing first makes every comparison 32 bytes whatever was presented; every digest is compared, and the match
  // is selected without branching on the comparison.
  const std::array<std::uint8_t, 32> digest = Sha256(presented);
  const AccessToken* found = nullptr;
  for (const AccessToken& token : tokens_) {
    const int differs = CRYPTO_memcmp(digest.data(), token.digest.data(), digest.size()) != 0;
    const std::uintptr_t mask = static_cast<std::uintptr_t>(differs) - 1;  // all ones on a match
    found = reinterpret_cast<const AccessToken*>((reinterpret_cast<std::uintptr_t>(&token) & mask) |
                                                 (reinterpret_cast<std::uintptr_t>(found) & ~mask));
  }
  return found;
}

}  // namespace atelier::server
