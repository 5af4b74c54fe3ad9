// JSON parsing for files that come from outside (safetensors headers, config.json, shard
// indexes): every failure is a tb::FormatError naming the file, and a key repeated within one
// object is an error, because nlohmann silently keeps the last of duplicate keys and a
// checkpoint with two different values for one name has no right answer.
#pragma once

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace tb {

// Parses `text`, which came from `source`; `what` names the part of the file in messages
// ("header", "file"), e.g. "<source>: header is not valid JSON: ...".
nlohmann::json parse_json_strict(const std::filesystem::path& source, std::string_view text,
                                 std::string_view what);

// `s` with control characters written as \xNN, so a name from a file cannot break the
// one-line error message the CLI prints.
std::string printable(std::string_view s);

// Reads and strictly parses a whole JSON file; a file that cannot be read is tb::InputError.
nlohmann::json read_json_file(const std::filesystem::path& path);

}  // namespace tb
