// Task registry and the pretraining-dedup index; see registry.h.
#include "tasks/registry.h"

#include <algorithm>

#include "datasets/paths.h"
#include "datasets/text.h"
#include "harness/base/errors.h"

namespace tb::tasks {

Registry Registry::from_dir(const std::filesystem::path& dir) {
  Registry r;
  if (!std::filesystem::is_directory(dir))
    throw InputError(dir.string() + ": task directory not found (set TUNEBENCH_TASKS)");
  std::vector<std::filesystem::path> files;
  for (const auto& e : std::filesystem::directory_iterator(dir))
    if (e.is_regular_file() && e.path().extension() == ".ini") files.push_back(e.path());
  std::sort(files.begin(), files.end());
  for (const auto& f : files) r.add_file(f);
  return r;
}

Registry Registry::standard(const std::vector<std::filesystem::path>& task_files) {
  Registry r = from_dir(data::tasks_dir());
  for (const auto& f : task_files) r.add_file(f);
  return r;
}

void Registry::add_file(const std::filesystem::path& file) {
  TaskSpec s = parse_task_spec(file);
  auto it = specs_.find(s.name);
  if (it != specs_.end())
    throw InputError(file.string() + ": task name '" + s.name + "' is already defined by " +
                     it->second.file.string());
  specs_.emplace(s.name, std::move(s));
}

std::vector<std::string> Registry::names() const {
  std::vector<std::string> n;
  for (const auto& [k, v] : specs_) n.push_back(k);
  return n;
}

const TaskSpec& Registry::spec(const std::string& name) const {
  auto it = specs_.find(name);
  if (it == specs_.end()) {
    std::string known;
    for (const auto& [k, v] : specs_) known += (known.empty() ? "" : ", ") + k;
    throw InputError("unknown task '" + name + "' (known: " + known + ")");
  }
  return it->second;
}

std::shared_ptr<const Task> Registry::load(const std::string& name) const {
  const TaskSpec& s = spec(name);
  std::lock_guard<std::mutex> lock(*mu_);
  auto it = loaded_.find(name);
  if (it != loaded_.end()) return it->second;
  auto t = Task::load(s);
  loaded_[name] = t;
  return t;
}

EvalTextIndex::EvalTextIndex(const Registry& registry) {
  for (const auto& name : registry.names()) {
    auto task = registry.load(name);
    for (const char* sp : {"dev", "test"})
      for (const auto& ex : task->split(sp)) {
        keys_.insert(data::text_key(ex.text));
        for (const auto& u : ex.units) keys_.insert(data::text_key(u));
      }
  }
}

bool EvalTextIndex::contains(std::string_view text) const { return keys_.count(data::text_key(text)) > 0; }

bool is_eval_or_heldout(std::string_view text) {
  static const EvalTextIndex index(Registry::standard());
  return index.contains(text);
}

}  // namespace tb::tasks
