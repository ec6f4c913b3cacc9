// The --auth-tokens file, token matching, client quotas, the loopback check and a job's size in megapixel-steps.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "server/access_tokens.h"
#include "server/client_quotas.h"
#include "server/request_work.h"
#include "server/server_security.h"
#include "server/token_auth.h"

namespace atelier {
namespace {

using server::AccessTokens;
using server::ClientLimits;
using server::ClientQuotas;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kAlice[] = "alice-secret-0123456789";
constexpr char kBob[] = "bob-secret-9876543210ab";

TEST(AccessTokensTest, ParsesNamesLimitsAndComments) {
  auto tokens = AccessTokens::Parse(absl::StrCat("# a comment\n\n  ", kAlice,
                                                 "  alice jobs=2 queued=1 work_per_job=10.5 work_per_minute=100 "
                                                 "job_seconds=60\n", kBob, " admin\n"));
  ASSERT_TRUE(tokens.ok()) << tokens.status();
  ASSERT_EQ(tokens->tokens().size(), 2u);
  const auto& alice = tokens->tokens()[0];
  EXPECT_EQ(alice.name, "alice");
  EXPECT_EQ(alice.limits.jobs, 2);
  EXPECT_EQ(alice.limits.queued, 1);
  EXPECT_DOUBLE_EQ(*alice.limits.work_per_job, 10.5);
  EXPECT_DOUBLE_EQ(*alice.limits.work_per_minute, 100);
  EXPECT_DOUBLE_EQ(*alice.limits.job_seconds, 60);
  EXPECT_FALSE(alice.admin);
  const auto& bob = tokens->tokens()[1];
  EXPECT_EQ(bob.name, "token-4");  // no name: its line
  EXPECT_TRUE(bob.admin);
  EXPECT_FALSE(bob.limits.jobs.has_value());
}

TEST(AccessTokensTest, MatchesOnlyTheWholeToken) {
  auto tokens = AccessTokens::Parse(absl::StrCat(kAlice, " alice\n", kBob, " bob\n"));
  ASSERT_TRUE(tokens.ok());
  ASSERT_NE(tokens->Match(kAlice), nullptr);
  EXPECT_EQ(tokens->Match(kAlice)->name, "alice");
  EXPECT_EQ(tokens->Match(kBob)->name, "bob");
  EXPECT_EQ(tokens->Match(std::string(kAlice).substr(0, 10)), nullptr);
  EXPECT_EQ(tokens->Match(absl::StrCat(kAlice, "x")), nullptr);
  EXPECT_EQ(tokens->Match(""), nullptr);
  EXPECT_EQ(tokens->Match("alice"), nullptr);  // a name is not a token
}

TEST(AccessTokensTest, ErrorsNameTheLineNeverTheToken) {
  const std::pair<std::string, std::string> cases[] = {
      {"short\n", "line 1: a token must be 16 to 512"},
      {absl::StrCat("# x\n", kAlice, " alice jobz=1\n"), "line 2: unknown limit 'jobz' (valid: jobs, queued"},
      {absl::StrCat(kAlice, " a jobs=-1\n"), "whole number"},
      {absl::StrCat(kAlice, " a work_per_job=lots\n"), "number >= 0"},
      {absl::StrCat(kAlice, " a\n", kAlice, " b\n"), "line 2: the same token appears twice"},
      {absl::StrCat(kAlice, " a\n", kBob, " a\n"), "the name 'a' is used twice"},
      {"# only comments\n", "no tokens"},
      {absl::StrCat(kAlice, "\x01zz a\n"), "printable ASCII"},
  };
  for (const auto& [text, expected] : cases) {
    auto tokens = AccessTokens::Parse(text);
    ASSERT_FALSE(tokens.ok()) << text;
    EXPECT_EQ(tokens.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(tokens.status().message()), HasSubstr(expected));
    EXPECT_THAT(std::string(tokens.status().message()), Not(HasSubstr("secret")));
  }
  auto missing = AccessTokens::Load("/nonexistent/secret-tokens-file");
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(std::string(missing.status().message()), Not(HasSubstr("secret-tokens-file")));
}

TEST(TokenAuthTest, BearerTokenTakesTheSchemeInAnyCase) {
  EXPECT_EQ(server::BearerToken("Bearer abc"), "abc");
  EXPECT_EQ(server::BearerToken("bearer  abc "), "abc");
  EXPECT_EQ(server::BearerToken("BEARER abc"), "abc");
  EXPECT_EQ(server::BearerToken("Basic abc"), "");
  EXPECT_EQ(server::BearerToken("Bearer "), "");
  EXPECT_EQ(server::BearerToken("abc"), "");
}

TEST(ClientQuotasTest, JobsAndQueuedCountWhatTheClientHasNow) {
  ClientQuotas quotas;
  ClientLimits limits;
  limits.jobs = 2;
  limits.queued = 1;
  EXPECT_TRUE(quotas.Admit("a", limits, 1, /*queued_now=*/0, /*active_now=*/1).ok());
  auto refused = quotas.Admit("a", limits, 1, 0, 2);
  EXPECT_EQ(refused.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(refused.message()), HasSubstr("jobs=2"));
  refused = quotas.Admit("a", limits, 1, 1, 1);
  EXPECT_EQ(refused.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(refused.message()), HasSubstr("queued=1"));
  limits.jobs = 0;  // a token switched off
  EXPECT_FALSE(quotas.Admit("a", limits, 1, 0, 0).ok());
}

TEST(ClientQuotasTest, WorkPerJobAndPerMinuteWithASlidingWindow) {
  ClientQuotas quotas;
  ClientLimits limits;
  limits.work_per_job = 5;
  limits.work_per_minute = 10;
  const absl::Time t0 = absl::FromUnixSeconds(1000000);
  auto refused = quotas.Admit("a", limits, 5.5, 0, 0, t0);
  EXPECT_THAT(std::string(refused.message()), HasSubstr("work_per_job"));
  EXPECT_TRUE(quotas.Admit("a", limits, 4, 0, 0, t0).ok());
  EXPECT_TRUE(quotas.Admit("a", limits, 4, 0, 0, t0 + absl::Seconds(20)).ok());
  refused = quotas.Admit("a", limits, 4, 0, 0, t0 + absl::Seconds(30));
  EXPECT_EQ(refused.code(), absl::StatusCode::kResourceExhausted);
  // The first 4 ages out at t0 + 60: 30 s from now.
  EXPECT_THAT(std::string(refused.message()), HasSubstr("retry in 30 s"));
  EXPECT_TRUE(quotas.Admit("b", limits, 4, 0, 0, t0 + absl::Seconds(30)).ok());  // another client's own budget
  EXPECT_DOUBLE_EQ(quotas.RecentWork("a", t0 + absl::Seconds(30)), 8);
  EXPECT_TRUE(quotas.Admit("a", limits, 4, 0, 0, t0 + absl::Seconds(61)).ok());
  quotas.Refund("a", 4);
  EXPECT_DOUBLE_EQ(quotas.RecentWork("a", t0 + absl::Seconds(61)), 4);
  limits.work_per_job.reset();
  refused = quotas.Admit("c", limits, 11, 0, 0, t0);
  EXPECT_THAT(std::string(refused.message()), HasSubstr("more than client 'c' may submit in a minute"));
}

TEST(ClientQuotasTest, TokenLimitsOverrideTheDefaults) {
  ClientLimits defaults;
  defaults.jobs = 4;
  defaults.work_per_minute = 100;
  ClientLimits own;
  own.jobs = 1;
  const ClientLimits merged = own.Over(defaults);
  EXPECT_EQ(merged.jobs, 1);
  EXPECT_EQ(merged.work_per_minute, 100);
  EXPECT_FALSE(merged.queued.has_value());
}

TEST(ServerSecurityTest, LoopbackAddresses) {
  EXPECT_TRUE(server::IsLoopbackListen("127.0.0.1:50051"));
  EXPECT_TRUE(server::IsLoopbackListen("127.1.2.3:0"));
  EXPECT_TRUE(server::IsLoopbackListen("localhost:1"));
  EXPECT_TRUE(server::IsLoopbackListen("[::1]:50051"));
  EXPECT_TRUE(server::IsLoopbackListen("unix:/run/atelier.sock"));
  EXPECT_FALSE(server::IsLoopbackListen("0.0.0.0:50051"));
  EXPECT_FALSE(server::IsLoopbackListen("[::]:50051"));
  EXPECT_FALSE(server::IsLoopbackListen("192.168.1.5:50051"));
  EXPECT_FALSE(server::IsLoopbackListen("127.0.0.1.example.com:1"));
}

TEST(ServerSecurityTest, RefusesAnOpenPortAndPlainTextTokens) {
  server::SecurityOptions options;
  options.listen = "0.0.0.0:1";
  auto refused = server::BuildServerSecurity(options);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("--insecure"));
  options.insecure = true;
  EXPECT_TRUE(server::BuildServerSecurity(options).ok());
  options.tls_cert = "/x/cert.pem";
  refused = server::BuildServerSecurity(options);
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("--tls-key"));
  options = {};
  options.listen = "127.0.0.1:1";
  options.tls_client_ca = "/x/ca.pem";
  EXPECT_THAT(std::string(server::BuildServerSecurity(options).status().message()), HasSubstr("--tls-cert"));
}

TEST(RequestWorkTest, MegapixelStepsCountPassesImagesAndFrames) {
  jobs::JobSettings s;
  s.params.width = 512;
  s.params.height = 512;
  s.params.sampling.steps = 20;
  s.params.batch_size = 2;
  s.params.n_iter = 3;
  EXPECT_NEAR(server::MegapixelSteps(s), 0.262144 * 20 * 6, 1e-9);
  s.params.hires.enabled = true;
  s.params.hires.scale = 2;
  s.params.hires.second_pass_steps = 10;
  EXPECT_NEAR(server::MegapixelSteps(s), 0.262144 * 20 * 6 + 1.048576 * 10 * 6, 1e-9);
  s.params.hires.enabled = false;
  s.plugin_args["animatediff"] = R"({"args": [{"enable": true, "video_length": 16, "batch_size": 8}]})";
  EXPECT_EQ(server::AnimateDiffFrames(s), 16);
  EXPECT_NEAR(server::MegapixelSteps(s), 0.262144 * 20 * 16 * 3, 1e-9);
  s.plugin_args["animatediff"] = R"({"args": [{"enable": true, "video_length": 0, "batch_size": 8}]})";
  EXPECT_EQ(server::AnimateDiffFrames(s), 8);
  s.plugin_args["animatediff"] = R"({"args": [{"enable": false, "video_length": 16}]})";
  EXPECT_EQ(server::AnimateDiffFrames(s), 0);
  s.plugin_args["animatediff"] = "not json";
  EXPECT_EQ(server::AnimateDiffFrames(s), 0);
}

}  // namespace
}  // namespace atelier
