// Builders of the standard suite's data: each turns installed packages into normalised JSONL
// files in data_dir(), one record per line with at least {"id", "text", "split"} and the
// task's fields ("label", "slice", "choices", "gold_doc", ...), plus a manifest
// <group>.manifest.json with the builder version, the sha256 of every source file read,
// package versions and per-split counts.
//
// Builds are deterministic (same sources → byte-identical files: splits come from FNV-1a
// of the example text, see harness/base/hash.h) and cached: a group is rebuilt only when its manifest is
// missing, its builder version changed, or a source file changed size. Loading a builtin
// dataset builds it on first use, so a fresh checkout needs no manual step; files are
// written atomically, so concurrent test processes may race to build safely.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace tb::data {

// Names of the builtin datasets (what a task spec references as builtin:<name>).
std::vector<std::string> builtin_dataset_names();

// Path of builtin dataset `name`'s JSONL, building its group first if needed.
// InputError naming the dataset if there is no such builtin.
std::filesystem::path builtin_dataset(const std::string& name);

// Builder groups (one manifest each) and the datasets each produces.
struct BuilderInfo {
  std::string group;
  int version;
  std::vector<std::string> datasets;
};
const std::vector<BuilderInfo>& builders();

// Builds a group into `dir` (default data_dir()) unconditionally, returning its manifest.
nlohmann::json build_group(const std::string& group, const std::filesystem::path& dir);
// Builds a group only if its cached manifest is stale; returns the (new or cached) manifest.
nlohmann::json ensure_group(const std::string& group, const std::filesystem::path& dir);
// Reads <dir>/<group>.manifest.json, or null if absent.
nlohmann::json read_manifest(const std::string& group, const std::filesystem::path& dir);

// The held-out KJV chapters of heldout-lm (about 0.5% of chapters, chosen by hash); the
// kjv-testament task never samples verses from them.
bool kjv_chapter_heldout(const std::string& book, int chapter);

// The fortune-topics categories (≥ 500 records each after clean-up).
const std::vector<std::string>& fortune_topic_categories();

}  // namespace tb::data
