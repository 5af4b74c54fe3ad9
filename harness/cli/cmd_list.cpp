// `tunebench list tasks|methods|models`: what the harness can run. `tasks` prints each task
// of the registry (standard suite + --task-file specs) with its version, output type and
// split sizes, loading (and on first use building) its data; `models` lists directories
// under <home>/models that hold a config.json; `methods` prints the method registry with
// every option and its default.
#include <boost/program_options.hpp>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>

#include "datasets/paths.h"
#include "harness/cli/commands.h"
#include "harness/base/errors.h"
#include "methods/method.h"
#include "tasks/registry.h"

namespace tb::cli {
namespace po = boost::program_options;

namespace {

int list_tasks(const std::vector<std::string>& task_files) {
  std::vector<std::filesystem::path> files(task_files.begin(), task_files.end());
  const auto reg = tasks::Registry::standard(files);
  std::cout << std::left << std::setw(22) << "task" << std::setw(4) << "v" << std::setw(17)
            << "output_type" << std::right << std::setw(7) << "train" << std::setw(7) << "dev"
            << std::setw(7) << "test" << std::setw(7) << "docs" << "  metrics\n";
  for (const auto& name : reg.names()) {
    auto t = reg.load(name);
    std::string metrics;
    for (const auto& m : t->metrics()) metrics += (metrics.empty() ? "" : ",") + m;
    std::cout << std::left << std::setw(22) << name << std::setw(4) << t->version() << std::setw(17)
              << tasks::to_string(t->output_type()) << std::right << std::setw(7)
              << t->split("train").size() << std::setw(7) << t->split("dev").size() << std::setw(7)
              << t->split("test").size() << std::setw(7) << t->documents().size() << "  " << metrics
              << "\n";
  }
  return 0;
}

int list_models() {
  const auto dir = data::home_dir() / "models";
  int n = 0;
  if (std::filesystem::is_directory(dir)) {
    std::vector<std::filesystem::path> dirs;
    for (const auto& e : std::filesystem::directory_iterator(dir))
      if (e.is_directory() && std::filesystem::exists(e.path() / "config.json")) dirs.push_back(e.path());
    std::sort(dirs.begin(), dirs.end());
    for (const auto& d : dirs) {
      std::string type = "?";
      try {
        std::ifstream in(d / "config.json");
        auto j = nlohmann::json::parse(in);
        if (j.contains("model_type") && j["model_type"].is_string()) type = j["model_type"].get<std::string>();
      } catch (const nlohmann::json::exception&) {
        type = "(unreadable config.json)";
      }
      std::cout << std::left << std::setw(22) << d.filename().string() << std::setw(12) << type << d.string() << "\n";
      ++n;
    }
  }
  if (n == 0) std::cout << "no models under " << dir.string() << " (make one with tunebench pretrain)\n";
  return 0;
}

// Each method with its summary, the output types it runs on and its options with defaults
// (as flags: --<method>.<option>).
int list_methods() {
  for (const auto& m : methods::registry()) {
    std::string types;
    for (auto t : m.supports) types += (types.empty() ? "" : ", ") + std::string(tasks::to_string(t));
    std::cout << m.name << " — " << m.summary << "\n    tasks: " << (types.empty() ? "(none)" : types) << "\n";
    for (const auto& o : m.options) {
      std::string flag = "--" + m.name + "." + o.name;
      flag.resize(std::max<std::size_t>(flag.size() + 1, 30), ' ');
      std::cout << "    " << flag << o.help << " (default: " << (o.default_value.empty() ? "none" : o.default_value)
                << ")\n";
    }
  }
  return 0;
}

}  // namespace

int cmd_list(const Args& args) {
  po::options_description opts("options");
  // clang-format off
  opts.add_options()
      ("help,h", "print this help")
      ("what", po::value<std::string>(), "tasks | methods | models")
      ("task-file", po::value<std::vector<std::string>>()->composing(), "also load this task spec (repeatable)");
  // clang-format on
  po::positional_options_description pos;
  pos.add("what", 1);
  po::variables_map vm;
  po::store(po::command_line_parser(args).options(opts).positional(pos).run(), vm);
  if (vm.count("help")) {
    std::cout << "usage: tunebench list tasks|methods|models [--task-file SPEC.ini ...]\n\n"
              << "tasks:   each task with version, output type, split sizes, documents, metrics\n"
              << "         (builds missing data into $TUNEBENCH_DATA first)\n"
              << "methods: the registered methods with their options and defaults\n"
              << "models:  model directories under <home>/models holding a config.json\n\n"
              << opts;
    return 0;
  }
  po::notify(vm);
  if (!vm.count("what")) throw InputError("missing what to list: tasks, methods or models");
  const std::string what = vm["what"].as<std::string>();
  if (what == "tasks")
    return list_tasks(vm.count("task-file") ? vm["task-file"].as<std::vector<std::string>>()
                                            : std::vector<std::string>{});
  if (what == "models") return list_models();
  if (what == "methods") return list_methods();
  throw InputError("cannot list '" + what + "' (expected tasks, methods or models)");
}

}  // namespace tb::cli
