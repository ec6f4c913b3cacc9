// WebUI's prompt styles (modules/styles.py): styles.csv files with the columns name, prompt, negative_prompt (more
// columns ignored; several files, the first wins a name), applied to a job's prompts by name: a style prompt holding
// "{prompt}" gets the prompt put in its place, otherwise it is appended after ", " (empty parts skipped).
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace atelier::engine {

struct PromptStyle {
  std::string name, prompt, negative_prompt;
  std::string file;  // where it came from
};

class PromptStyles {
 public:
  // Reads each file that exists (a missing file is no error: WebUI starts without styles.csv); INVALID_ARGUMENT
  // naming the file and line for a CSV it cannot read (an unterminated quote, no "name" column).
  static absl::StatusOr<PromptStyles> Load(const std::vector<std::filesystem::path>& files);

  const std::vector<PromptStyle>& styles() const { return styles_; }
  const PromptStyle* Find(const std::string& name) const;

  // The prompts with `names` applied in order (WebUI's apply_styles_to_prompt / _to_negative_prompt). NOT_FOUND
  // naming the missing style and listing the known ones.
  absl::Status Apply(const std::vector<std::string>& names, std::string& prompt, std::string& negative_prompt) const;

 private:
  std::vector<PromptStyle> styles_;
};

// merge_prompts: the style with {prompt} replaced by the prompt, else "prompt, style" (blank parts dropped).
std::string MergeStylePrompt(const std::string& style_prompt, const std::string& prompt);

// The rows of a CSV text (RFC 4180: quoted fields with "" escapes and newlines inside quotes).
absl::StatusOr<std::vector<std::vector<std::string>>> ParseCsv(const std::string& text);

}  // namespace atelier::engine
