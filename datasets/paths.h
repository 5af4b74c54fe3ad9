// Where the data layer finds things. Every location has a default that works in a fresh
// checkout and an environment variable that overrides it (for installs, CI caches and
// machines whose packages live elsewhere):
//   TUNEBENCH_HOME           source tree (tasks/, deps/)      default: the configured source dir
//   TUNEBENCH_DATA           built, normalised data + manifests default: <home>/data-cache
//   TUNEBENCH_TASKS          task spec directory               default: <home>/tasks
//   TUNEBENCH_NPM_DIR        npm packages                      default: <home>/deps/npm/node_modules
//   TUNEBENCH_FORTUNES_DIR   fortune files                     default: /usr/share/games/fortunes
//   TUNEBENCH_WORDNET_DIR    WordNet database                  default: /usr/share/wordnet
//   TUNEBENCH_DICTD_DIR      dictd dictionaries                default: /usr/share/dictd
//   TUNEBENCH_BIBLE          the bible-kjv decoder program     default: bible (on PATH)
//   TUNEBENCH_BIBLE_DATA     the KJV text database             default: /usr/lib/bible.data
#pragma once

#include <filesystem>
#include <string>

namespace tb::data {

std::filesystem::path home_dir();
std::filesystem::path data_dir();
std::filesystem::path tasks_dir();
std::filesystem::path npm_dir();
std::filesystem::path fortunes_dir();
std::filesystem::path wordnet_dir();
std::filesystem::path dictd_dir();
std::string bible_program();
std::filesystem::path bible_data();

}  // namespace tb::data
