// Strict JSON parsing: nlohmann's parse callback sees every object start, key and object end,
// which is enough to keep one key set per open object and catch repeats.
#include "harness/base/strict_json.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "harness/base/errors.h"

namespace tb {

nlohmann::json parse_json_strict(const std::filesystem::path& source, std::string_view text,
                                 std::string_view what) {
  using nlohmann::json;
  std::vector<std::set<std::string>> open_objects;
  std::optional<std::string> duplicate;
  auto callback = [&](int, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::object_start) {
      open_objects.emplace_back();
    } else if (event == json::parse_event_t::object_end) {
      if (!open_objects.empty()) open_objects.pop_back();
    } else if (event == json::parse_event_t::key && !open_objects.empty()) {
      const std::string& key = parsed.get_ref<const std::string&>();
      if (!open_objects.back().insert(key).second && !duplicate) duplicate = key;
    }
    return true;
  };
  json out;
  try {
    out = json::parse(text.begin(), text.end(), callback);
  } catch (const json::exception& e) {
    throw FormatError(source.string() + ": " + std::string(what) +
                      " is not valid JSON: " + e.what());
  }
  if (duplicate)
    throw FormatError(source.string() + ": duplicate key '" + printable(*duplicate) + "' in " +
                      std::string(what));
  return out;
}

std::string printable(std::string_view s) {
  std::string out;
  for (const char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7F) {
      static const char* const kHex = "0123456789abcdef";
      out += "\\x";
      out += kHex[u >> 4];
      out += kHex[u & 15];
    } else {
      out += c;
    }
  }
  return out;
}

nlohmann::json read_json_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError(path.string() + ": cannot read: " + std::strerror(errno));
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) throw InputError(path.string() + ": cannot read: " + std::strerror(errno));
  return parse_json_strict(path, text, "file");
}

}  // namespace tb
