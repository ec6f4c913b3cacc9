// An infotext's fields as the gateway's JSON needs them (util/infotext_text.h does the reading).
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

namespace atelier::web {

struct InfotextFields {
  bool found = false;  // the text had a parameter line
  std::string prompt, negative_prompt;
  std::map<std::string, std::string> params;
  // The pairs that are not one of Processed.js()'s own fields (WebUI's extra_generation_params), in order.
  std::vector<std::pair<std::string, std::string>> extra;

  const std::string* Find(const std::string& key) const {
    const auto it = params.find(key);
    return it == params.end() ? nullptr : &it->second;
  }
};

InfotextFields ParseInfotextFields(const std::string& infotext);

}  // namespace atelier::web
