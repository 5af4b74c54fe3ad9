// The task registry: every spec file in tasks_dir() (the standard suite, see
// datasets/paths.h for TUNEBENCH_TASKS), plus user specs added with --task-file. Specs are
// parsed eagerly (so a broken spec fails at start-up, naming its file and key); data is
// loaded on first use of a task and cached.
//
// Also the pretraining-dedup oracle: is_eval_or_heldout(text) says whether a text is a
// dev/test item of a standard task or a unit of heldout-lm, so the pretraining corpus
// builder can drop it (exact match after whitespace and ASCII case normalisation; feed it the
// units read through datasets/sources.h — verses, fortunes, dictionary entries, glosses).
#pragma once

#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_set>
#include <vector>

#include "tasks/task.h"

namespace tb::tasks {

class Registry {
 public:
  // The standard suite (tasks_dir()/*.ini) plus the given user spec files.
  static Registry standard(const std::vector<std::filesystem::path>& task_files = {});
  // Specs of one directory only (tests).
  static Registry from_dir(const std::filesystem::path& dir);

  // Adds one spec; InputError if the name is taken (naming both files).
  void add_file(const std::filesystem::path& file);

  std::vector<std::string> names() const;  // sorted
  bool contains(const std::string& name) const { return specs_.count(name) > 0; }
  const TaskSpec& spec(const std::string& name) const;           // InputError listing known names
  std::shared_ptr<const Task> load(const std::string& name) const;  // cached

 private:
  std::map<std::string, TaskSpec> specs_;
  mutable std::shared_ptr<std::mutex> mu_ = std::make_shared<std::mutex>();
  mutable std::map<std::string, std::shared_ptr<const Task>> loaded_;
};

// Normalised texts of every dev/test example of the
// standard tasks and every heldout-lm unit.
class EvalTextIndex {
 public:
  explicit EvalTextIndex(const Registry& registry);
  bool contains(std::string_view text) const;
  std::size_t size() const { return keys_.size(); }

 private:
  std::unordered_set<std::string> keys_;
};

// The index over the standard registry, built on first call (this builds all task data).
bool is_eval_or_heldout(std::string_view text);

}  // namespace tb::tasks
