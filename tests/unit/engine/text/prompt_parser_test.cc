// WebUI prompt syntax against the reference outputs: every "prompt-parser" fixture case (emphasis weights bit for
// bit, schedules with and without hires fix, the AND split, the whole positive-prompt pipeline, the batched flat
// list), plus malformed input that must come back quickly without crashing.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "absl/status/status.h"
#include "engine/text/prompt_parser.h"
#include "fixture_case.h"
#include "test_support.h"

namespace atelier {
namespace {

namespace fs = std::filesystem;
using engine::AttentionRun;
using engine::ScheduleEntry;
using engine::WeightedPrompt;
using json = nlohmann::json;

// Every fixture folder whose case.json says "case": "prompt-parser" (values.json parsed); none is a test failure
// naming the folder searched.
std::vector<testing::FixtureCase> PromptParserCases() { return testing::CasesOf("prompt-parser"); }

// The step counts a case's schedules were computed for (config.steps and config.hires_steps: 20 and 10 in the
// public case), and the names of the outputs that carry them.
struct CaseSteps {
  int steps = 0, hires_steps = 0;
  std::string schedules, schedules_hires, pipeline;  // "schedules_steps20", "schedules_steps20_hires10", ...
};
CaseSteps StepsOf(const testing::FixtureCase& c) {
  CaseSteps s;
  s.steps = c.json["config"]["steps"].get<int>();
  s.hires_steps = c.json["config"]["hires_steps"].get<int>();
  s.schedules = "schedules_steps" + std::to_string(s.steps);
  s.schedules_hires = s.schedules + "_hires" + std::to_string(s.hires_steps);
  s.pipeline = "pipeline_steps" + std::to_string(s.steps);
  return s;
}

// Bit-exact, except that 0.0 == -0.0 (the reference's JSON may not keep the sign of zero).
bool SameWeight(double a, double b) { return a == b || (std::isnan(a) && std::isnan(b)); }

std::string Repr(double w) {
  std::ostringstream out;
  out.precision(17);
  out << w;
  return out.str();
}

std::string Show(const std::vector<AttentionRun>& runs) {
  json out = json::array();
  for (const auto& r : runs) out.push_back({r.text, Repr(r.weight)});
  return out.dump();
}
std::string Show(const std::vector<ScheduleEntry>& entries) {
  json out = json::array();
  for (const auto& e : entries) out.push_back({e.end_at_step, e.text});
  return out.dump();
}
std::string Show(const std::vector<WeightedPrompt>& parts) {
  json out = json::array();
  for (const auto& p : parts) out.push_back({p.text, Repr(p.weight)});
  return out.dump();
}

// Expected attention: [[text, weight], ...] or {"error": ...}.
void CheckAttention(const std::string& text, const json& expected) {
  const auto actual = engine::ParsePromptAttention(text);
  if (expected.is_object()) {
    EXPECT_FALSE(actual.ok()) << "attention of " << json(text).dump() << ": expected error " << expected["error"].dump()
                              << ", got " << Show(*actual);
    return;
  }
  ASSERT_TRUE(actual.ok()) << "attention of " << json(text).dump() << ": " << actual.status();
  bool same = actual->size() == expected.size();
  for (size_t i = 0; same && i < expected.size(); ++i) {
    same = (*actual)[i].text == expected[i][0].get<std::string>() &&
           SameWeight((*actual)[i].weight, expected[i][1].get<double>());
  }
  EXPECT_TRUE(same) << "attention of " << json(text).dump() << "\n  expected " << expected.dump() << "\n  actual   "
                    << Show(*actual);
}

std::vector<ScheduleEntry> ToSchedule(const json& expected) {
  std::vector<ScheduleEntry> out;
  for (const auto& e : expected) out.push_back({e[0].get<int>(), e[1].get<std::string>()});
  return out;
}

void CheckSchedule(const std::string& prompt, const std::vector<ScheduleEntry>& actual, const json& expected,
                   const char* what) {
  EXPECT_TRUE(actual == ToSchedule(expected))
      << what << " of " << json(prompt).dump() << "\n  expected " << expected.dump() << "\n  actual   " << Show(actual);
}

void CheckAndSplit(const std::string& prompt, const std::vector<WeightedPrompt>& actual, const json& expected) {
  bool same = actual.size() == expected.size();
  for (size_t i = 0; same && i < expected.size(); ++i) {
    same = actual[i].text == expected[i][0].get<std::string>() &&
           SameWeight(actual[i].weight, expected[i][1].get<double>());
  }
  EXPECT_TRUE(same) << "and_split of " << json(prompt).dump() << "\n  expected " << expected.dump() << "\n  actual   "
                    << Show(actual);
}

TEST(PromptParserTest, MatchesEveryFixturePrompt) {
  for (const auto& c : PromptParserCases()) {
    SCOPED_TRACE(c.dir.string());
    const json& values = c.values;
    const CaseSteps steps = StepsOf(c);
    ASSERT_TRUE(values.contains("prompts"));
    EXPECT_FALSE(values["prompts"].empty()) << "no prompt in " << c.dir / "values.json";
    for (const json& p : values["prompts"]) {
      const std::string prompt = p["prompt"].get<std::string>();
      SCOPED_TRACE("prompt " + json(prompt).dump());
      CheckAttention(prompt, p["attention"]);
      CheckSchedule(prompt, engine::GetPromptSchedules(prompt, steps.steps), p[steps.schedules],
                    steps.schedules.c_str());
      CheckSchedule(prompt, engine::GetPromptSchedules(prompt, steps.steps, steps.hires_steps),
                    p[steps.schedules_hires], steps.schedules_hires.c_str());
      const auto parts = engine::GetMulticondPromptList(prompt);
      CheckAndSplit(prompt, parts, p["and_split"]);

      // The positive-prompt pipeline: AND split, then each part's schedule, then each schedule text's attention.
      const json& pipeline = p[steps.pipeline];
      ASSERT_EQ(parts.size(), pipeline.size()) << steps.pipeline << " of " << json(prompt).dump();
      for (size_t i = 0; i < parts.size(); ++i) {
        EXPECT_EQ(parts[i].text, pipeline[i]["text"].get<std::string>());
        EXPECT_TRUE(SameWeight(parts[i].weight, pipeline[i]["weight"].get<double>()));
        const auto schedule = engine::GetPromptSchedules(parts[i].text, steps.steps);
        json expected_schedule = json::array();
        for (const auto& e : pipeline[i]["schedule"]) expected_schedule.push_back({e["end_at_step"], e["text"]});
        CheckSchedule(parts[i].text, schedule, expected_schedule, (steps.pipeline + " schedule").c_str());
        if (schedule.size() != pipeline[i]["schedule"].size()) continue;
        for (size_t k = 0; k < schedule.size(); ++k) {
          CheckAttention(schedule[k].text, pipeline[i]["schedule"][k]["attention"]);
        }
      }
    }
  }
}

TEST(PromptParserTest, BatchSharesIdenticalPartsInOneFlatList) {
  int checked = 0;
  for (const auto& c : PromptParserCases()) {
    const json& values = c.values;
    if (!values.contains("batch_multicond")) continue;
    SCOPED_TRACE(c.dir.string());
    ++checked;
    const json& batch = values["batch_multicond"];
    const auto actual = engine::GetMulticondPromptLists(batch["prompts"].get<std::vector<std::string>>());
    EXPECT_EQ(actual.flat_list, batch["flat_list"].get<std::vector<std::string>>());
    ASSERT_EQ(actual.indexes.size(), batch["indexes"].size());
    for (size_t i = 0; i < actual.indexes.size(); ++i) {
      const json& expected = batch["indexes"][i];
      ASSERT_EQ(actual.indexes[i].size(), expected.size()) << "prompt " << i;
      for (size_t k = 0; k < expected.size(); ++k) {
        EXPECT_EQ(actual.indexes[i][k].first, expected[k][0].get<int>()) << "prompt " << i << " part " << k;
        EXPECT_TRUE(SameWeight(actual.indexes[i][k].second, expected[k][1].get<double>()))
            << "prompt " << i << " part " << k;
      }
    }
  }
  EXPECT_GT(checked, 0) << "no prompt-parser case with values.batch_multicond under " << testing::FixturesDir();
}

// Prompts where WebUI itself depends on Python's hash seed: any outcome the reference produced is accepted (only
// the public case lists them).
TEST(PromptParserTest, HashSeedDependentPromptsGiveAReferenceOutcome) {
  for (const auto& c : PromptParserCases()) {
    const json& values = c.values;
    if (!values.contains("hash_seed_dependent")) continue;
    SCOPED_TRACE(c.dir.string());
    const CaseSteps steps = StepsOf(c);
    const std::string possible = steps.schedules + "_possible";
    for (const json& p : values["hash_seed_dependent"]) {
      const std::string prompt = p["prompt"].get<std::string>();
      const auto actual = engine::GetPromptSchedules(prompt, steps.steps);
      bool found = false;
      for (const json& outcome : p[possible]) found = found || actual == ToSchedule(outcome);
      EXPECT_TRUE(found) << json(prompt).dump() << ": " << Show(actual) << " is none of " << p[possible].dump();
    }
  }
}

TEST(PromptParserTest, ExamplesFromTheWebUIWiki) {
  const auto schedule = engine::GetPromptSchedules("a [dog:cat:0.5] in a [field|city]", 4);
  EXPECT_EQ(Show(schedule),
            R"([[1,"a dog in a field"],[2,"a dog in a city"],[3,"a cat in a field"],[4,"a cat in a city"]])");
  const auto attention = engine::ParsePromptAttention("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).");
  ASSERT_TRUE(attention.ok());
  EXPECT_EQ(attention->size(), 9u);
  const auto parts = engine::GetMulticondPromptList("a cat :1.2 AND a dog AND a bird:-0.5");
  EXPECT_EQ(Show(parts), R"([["a cat","1.2"],[" a dog","1"],[" a bird","-0.5"]])");
}

TEST(PromptParserTest, StripsExtraNetworkTags) {
  std::vector<engine::ExtraNetworkTag> tags;
  EXPECT_EQ(engine::StripExtraNetworkTags("a <lora:cat:0.8> cat, <hypernet:x>, <notag>, <a:>, <:b>", &tags),
            "a  cat, , <notag>, <a:>, <:b>");
  ASSERT_EQ(tags.size(), 2u);
  EXPECT_EQ(tags[0].name, "lora");
  EXPECT_THAT(tags[0].args, ::testing::ElementsAre("cat", "0.8"));
  EXPECT_EQ(tags[1].name, "hypernet");
  EXPECT_THAT(tags[1].args, ::testing::ElementsAre("x"));
  EXPECT_EQ(engine::StripExtraNetworkTags("<lora:a<b:1>>"), ">");
}

// Runs everything on one malformed input; it must finish quickly and without crashing.
void RunAll(const std::string& prompt) {
  const auto start = std::chrono::steady_clock::now();
  (void)engine::ParsePromptAttention(prompt);
  const auto schedule = engine::GetPromptSchedules(prompt, 20);
  EXPECT_FALSE(schedule.empty());
  EXPECT_FALSE(engine::GetPromptSchedules(prompt, 20, 10).empty());
  EXPECT_FALSE(engine::GetMulticondPromptList(prompt).empty());
  (void)engine::StripExtraNetworkTags(prompt);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_LT(seconds, 10.0) << "prompt of " << prompt.size() << " bytes";
}

TEST(PromptParserTest, DeepNestingIsHandledWithoutRecursion) {
  for (const char* open_close : {"()", "[]"}) {
    const std::string open(100000, open_close[0]), close(100000, open_close[1]);
    RunAll(open + "a" + close);
    RunAll(open + "a");
    RunAll("a" + close);
    const std::string deep = std::string(1000, open_close[0]) + "x" + std::string(1000, open_close[1]);
    const auto attention = engine::ParsePromptAttention(deep);
    ASSERT_TRUE(attention.ok());
    ASSERT_EQ(attention->size(), 1u);
    EXPECT_EQ((*attention)[0].text, "x");
  }
  // Nested schedules and alternations 1000 deep still resolve.
  std::string nested = "x";
  for (int i = 0; i < 1000; ++i) nested = "[" + nested + "|y]";
  const auto schedule = engine::GetPromptSchedules(nested, 20);
  ASSERT_EQ(schedule.size(), 20u);
  EXPECT_EQ(schedule[0].text, "x");
  EXPECT_EQ(schedule[1].text, "y");
}

TEST(PromptParserTest, UnbalancedAndPathologicalInputIsBounded) {
  std::string unbalanced;
  for (int i = 0; i < 10000; ++i) unbalanced += "([)]:|"[i % 6];
  RunAll(unbalanced);
  RunAll(std::string(10000, ']') + std::string(10000, '('));
  // Each level adds entries, so exact weights cost depth x entries multiplications.
  std::string heavy;
  for (int i = 0; i < 40000; ++i) heavy += "(a:";
  heavy += std::string(40000, ')');
  RunAll(heavy);
  EXPECT_EQ(engine::ParsePromptAttention(heavy).status().code(), absl::StatusCode::kResourceExhausted);
  std::string fine;  // 1000 levels with text at each still gets exact weights
  for (int i = 0; i < 1000; ++i) fine += "(a ";
  const auto fine_runs = engine::ParsePromptAttention(fine + std::string(1000, ')'));
  ASSERT_TRUE(fine_runs.ok());
  EXPECT_EQ(fine_runs->size(), 1000u);
  std::string schedules;
  for (int i = 0; i < 20000; ++i) schedules += "[a:b:" + std::to_string(i % 25) + "]";
  RunAll(schedules);
  std::string tags;
  for (int i = 0; i < 50000; ++i) tags += "<lora:";
  RunAll(tags);
  RunAll(std::string(50000, '\\'));
  RunAll(std::string(20000, ':') + "1)");
}

TEST(PromptParserTest, NulAndInvalidUtf8AreOrdinaryText) {
  const std::string nul("a\0b (c\0:1.5) [d\0|e]", 19);
  RunAll(nul);
  const auto attention = engine::ParsePromptAttention(nul);
  ASSERT_TRUE(attention.ok());
  EXPECT_EQ((*attention)[0].text, std::string("a\0b ", 4));
  const auto schedule = engine::GetPromptSchedules(nul, 2);
  ASSERT_EQ(schedule.size(), 2u);
  EXPECT_EQ(schedule[0].text, std::string("a\0b (c\0:1.5) d\0", 15));
  for (const std::string& bad : {std::string("\xff\xfe BREAK \xc3"), std::string("\xe3\x80 AND \xf0\x9f\x98"),
                                 std::string("(\x80:1.1) [\xc0\xaf:0.5] \xed\xa0\x80")}) {
    RunAll(bad);
  }
  // A trailing backslash or '|' outside an alternation fails lark's grammar: the prompt is used unchanged.
  EXPECT_EQ(Show(engine::GetPromptSchedules("[a:b:5] \\", 20)), R"([[20,"[a:b:5] \\"]])");
  EXPECT_EQ(Show(engine::GetPromptSchedules("[a:b:5] x|y", 20)), R"([[20,"[a:b:5] x|y"]])");
}

TEST(PromptParserTest, UnicodeSpacesAndWordCharacters) {
  // U+3000 (ideographic space) is \s; CJK ideographs are \w, so no word boundary before "AND" / "BREAK".
  const auto attention = engine::ParsePromptAttention(
      "a\xe3\x80\x80"
      "BREAK\xe3\x80\x80"
      "b \xe7\x8c\xab"
      "BREAK");
  ASSERT_TRUE(attention.ok());
  EXPECT_EQ(Show(*attention),
            "[[\"a\",\"1\"],[\"BREAK\",\"-1\"],[\"b \xe7\x8c\xab"
            "BREAK\",\"1\"]]");
  EXPECT_EQ(engine::GetMulticondPromptList("\xe7\x8c\xab"
                                           "AND\xe7\x8a\xac")
                .size(),
            1u);
  EXPECT_EQ(engine::GetMulticondPromptList("\xe7\x8c\xab AND \xe7\x8a\xac").size(), 2u);
  const auto weighted = engine::ParsePromptAttention(
      "(x:\xe3\x80\x80"
      "1.5\xe3\x80\x80)");
  ASSERT_TRUE(weighted.ok());
  EXPECT_EQ(Show(*weighted), R"([["x","1.5"]])");
}

}  // namespace
}  // namespace atelier
