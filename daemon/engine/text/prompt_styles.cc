#include "engine/text/prompt_styles.h"

#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"

namespace atelier::engine {

absl::StatusOr<std::vector<std::vector<std::string>>> ParseCsv(const std::string& text) {
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> row;
  std::string field;
  bool quoted = false, any = false;
  int line = 1;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (quoted) {
      if (c == '"') {
        if (i + 1 < text.size() && text[i + 1] == '"') {
          field.push_back('"');
          ++i;
        } else {
          quoted = false;
        }
      } else {
        if (c == '\n') ++line;
        field.push_back(c);
      }
      continue;
    }
    if (c == '"' && field.empty()) {
      quoted = any = true;
    } else if (c == ',') {
      row.push_back(std::move(field));
      field.clear();
      any = true;
    } else if (c == '\n' || c == '\r') {
      if (c == '\r' && i + 1 < text.size() && text[i + 1] == '\n') ++i;
      if (any || !field.empty()) {
        row.push_back(std::move(field));
        rows.push_back(std::move(row));
      }
      row.clear();
      field.clear();
      any = false;
      ++line;
    } else {
      field.push_back(c);
      any = true;
    }
  }
  if (quoted) return absl::InvalidArgumentError(absl::StrCat("line ", line, ": a quoted field is not closed"));
  if (any || !field.empty()) {
    row.push_back(std::move(field));
    rows.push_back(std::move(row));
  }
  return rows;
}

std::string MergeStylePrompt(const std::string& style_prompt, const std::string& prompt) {
  if (style_prompt.find("{prompt}") != std::string::npos) return absl::StrReplaceAll(style_prompt, {{"{prompt}", prompt}});
  std::vector<std::string> parts;
  for (const std::string& p : {std::string(absl::StripAsciiWhitespace(prompt)), std::string(absl::StripAsciiWhitespace(style_prompt))}) {
    if (!p.empty()) parts.push_back(p);
  }
  return absl::StrJoin(parts, ", ");
}

absl::StatusOr<PromptStyles> PromptStyles::Load(const std::vector<std::filesystem::path>& files) {
  PromptStyles out;
  for (const auto& path : files) {
    std::error_code ec;
    if (!std::filesystem::is_regular_file(path, ec)) continue;
    std::ifstream in(path, std::ios::binary);
    std::stringstream buffer;
    buffer << in.rdbuf();
    std::string text = buffer.str();
    if (text.rfind("\xEF\xBB\xBF", 0) == 0) text = text.substr(3);  // a BOM, as Excel writes it
    auto rows = ParseCsv(text);
    if (!rows.ok()) return absl::InvalidArgumentError(absl::StrCat(path.string(), ": ", rows.status().message()));
    if (rows->empty()) continue;
    const auto& header = (*rows)[0];
    int name = -1, prompt = -1, negative = -1;
    for (size_t i = 0; i < header.size(); ++i) {
      const std::string h = absl::AsciiStrToLower(absl::StripAsciiWhitespace(header[i]));
      if (h == "name") name = static_cast<int>(i);
      if (h == "prompt" || h == "text") prompt = static_cast<int>(i);
      if (h == "negative_prompt") negative = static_cast<int>(i);
    }
    if (name < 0) return absl::InvalidArgumentError(absl::StrCat(path.string(), ": no \"name\" column in the header"));
    for (size_t r = 1; r < rows->size(); ++r) {
      const auto& row = (*rows)[r];
      auto cell = [&](int i) { return i >= 0 && static_cast<size_t>(i) < row.size() ? row[static_cast<size_t>(i)] : std::string(); };
      PromptStyle s{cell(name), cell(prompt), cell(negative), path.string()};
      if (s.name.empty() || out.Find(s.name) != nullptr) continue;  // the first file wins a name
      out.styles_.push_back(std::move(s));
    }
  }
  return out;
}

const PromptStyle* PromptStyles::Find(const std::string& name) const {
  for (const auto& s : styles_) {
    if (s.name == name) return &s;
  }
  return nullptr;
}

absl::Status PromptStyles::Apply(const std::vector<std::string>& names, std::string& prompt,
                                 std::string& negative_prompt) const {
  for (const auto& n : names) {
    const PromptStyle* s = Find(n);
    if (s == nullptr) {
      std::vector<std::string> known;
      for (const auto& k : styles_) known.push_back(absl::StrCat("\"", k.name, "\""));
      const std::string shown = n.size() > 64 ? n.substr(0, 64) + "..." : n;
      return absl::NotFoundError(absl::StrCat("style \"", shown, "\" not found; styles: ",
                                              known.empty() ? "none (add them to styles.csv)" : absl::StrJoin(known, ", ")));
    }
    prompt = MergeStylePrompt(s->prompt, prompt);
    negative_prompt = MergeStylePrompt(s->negative_prompt, negative_prompt);
  }
  return absl::OkStatus();
}

}  // namespace atelier::engine
