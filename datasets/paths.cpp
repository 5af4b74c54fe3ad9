// Default data locations and their environment overrides (see paths.h).
#include "datasets/paths.h"

#include <cstdlib>

namespace tb::data {
namespace {

std::string env_or(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return (v && *v) ? std::string(v) : fallback;
}

}  // namespace

std::filesystem::path home_dir() { return env_or("TUNEBENCH_HOME", TB_DATA_SOURCE_DIR); }
std::filesystem::path data_dir() {
  return env_or("TUNEBENCH_DATA", (home_dir() / "data-cache").string());
}
std::filesystem::path tasks_dir() {
  return env_or("TUNEBENCH_TASKS", (home_dir() / "tasks").string());
}
std::filesystem::path npm_dir() {
  return env_or("TUNEBENCH_NPM_DIR", (home_dir() / "deps" / "npm" / "node_modules").string());
}
std::filesystem::path fortunes_dir() {
  return env_or("TUNEBENCH_FORTUNES_DIR", "/usr/share/games/fortunes");
}
std::filesystem::path wordnet_dir() { return env_or("TUNEBENCH_WORDNET_DIR", "/usr/share/wordnet"); }
std::filesystem::path dictd_dir() { return env_or("TUNEBENCH_DICTD_DIR", "/usr/share/dictd"); }
std::string bible_program() { return env_or("TUNEBENCH_BIBLE", "bible"); }
std::filesystem::path bible_data() { return env_or("TUNEBENCH_BIBLE_DATA", "/usr/lib/bible.data"); }

}  // namespace tb::data
