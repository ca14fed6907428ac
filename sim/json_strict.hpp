#pragma once
// Internal (not part of the public API; include only from .cpp files, it pulls in nlohmann/json):
// the one JSON reader for everything a user writes — architecture files, configuration files,
// --lr-mult objects. A file is exactly one JSON value: trailing content after it (a second object,
// stray text) and a key repeated within one object (nlohmann keeps the last silently) are
// InputErrors naming `where` and the key, as are syntax errors and numbers out of range.
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "sim/error.hpp"

namespace hepsim {

inline nlohmann::json parse_json_strict(const std::string& text, const std::string& where) {
  std::vector<std::set<std::string>> keys;  // the keys seen in each open object
  const auto callback = [&](int /*depth*/, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
    using E = nlohmann::json::parse_event_t;
    switch (event) {
      case E::object_start: keys.emplace_back(); break;
      case E::object_end:
        if (!keys.empty()) keys.pop_back();
        break;
      case E::key: {
        const std::string key = parsed.get<std::string>();
        if (!keys.empty() && !keys.back().insert(key).second)
          throw InputError(where, "key '" + key + "' appears twice in one object (a JSON object's keys must be unique)");
        break;
      }
      default: break;
    }
    return true;
  };
  try {
    // parse() of a whole string rejects anything but whitespace after the first value.
    return nlohmann::json::parse(text, callback);
  } catch (const nlohmann::json::exception& e) {
    throw InputError(where, std::string("invalid JSON: ") + e.what());
  }
}

}  // namespace hepsim
