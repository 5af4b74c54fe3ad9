// `tunebench eval --model DIR --adapter DIR --tasks x,y`: a saved adaptation (what `run
// --save-adaptations` keeps, or a Hugging Face PEFT adapter) applied to the model and
// evaluated on the tasks' test splits without training, one ordinary record per task
// (method "eval", details.adapted_method naming the saved method). methods/saved.h has the
// formats; a mismatch with the base model is exit 2 naming the file and the key.
#include <boost/program_options.hpp>
#include <csignal>
#include <iostream>
#include <string>

#include "harness/cli/commands.h"
#include "harness/base/errors.h"
#include "harness/base/strict_json.h"
#include "harness/core/model.h"
#include "harness/runner/runner.h"
#include "methods/saved.h"

namespace tb::cli {
namespace po = boost::program_options;
namespace fs = std::filesystem;

int cmd_eval(const Args& args) {
  po::options_description opts("options");
  // clang-format off
  opts.add_options()
      ("help,h", "print this help")
      ("model", po::value<std::string>(), "base model directory (config.json, model.safetensors, tokenizer files); default models/default")
      ("adapter", po::value<std::string>(), "the saved adaptation: <run out>/adaptations/<method>__<task>__seed<k>/ or a PEFT adapter directory")
      ("tasks", po::value<std::string>(), "comma-separated tasks (tunebench list tasks)")
      ("out", po::value<std::string>(), "results directory (records, summary.csv, summary.md)")
      ("limit", po::value<int64_t>(), "at most N examples per split, as run --limit (use the run's to reproduce it)")
      ("threads", po::value<int>(), "OpenMP threads (default: OMP_NUM_THREADS or all cores)")
      ("precision", po::value<std::string>(), "f32 (default) | bf16")
      ("resume", "skip tasks whose record already exists in --out")
      ("task-file", po::value<std::vector<std::string>>()->composing(), "also load this task spec (repeatable)");
  // clang-format on
  po::variables_map vm;
  po::store(po::command_line_parser(args).options(opts).run(), vm);
  if (vm.count("help")) {
    std::cout << "usage: tunebench eval --adapter DIR --tasks x,y --out DIR [--model DIR] [--limit N]\n"
              << "                      [--precision f32|bf16] [--threads N] [--resume] [--task-file SPEC.ini]\n\n"
              << "Applies a saved adaptation to the base model without training and evaluates it on the\n"
              << "tasks' test splits, writing one record per task (method \"eval\") as tunebench run does.\n"
              << "DIR is what tunebench run --save-adaptations keeps (PEFT format for lora, prefix and\n"
              << "softprompt; tunebench format for adapter, head and full), or a PEFT adapter directory\n"
              << "(adapter_config.json + adapter_model.safetensors: LORA, PREFIX_TUNING, PROMPT_TUNING), which\n"
              << "is scored with the lm objective (no classification head). A saved run's head, objective,\n"
              << "pooling, batch and length are reused, and a merged LoRA is merged again, so with the run's\n"
              << "--limit the test metrics are the run's.\n\n"
              << opts;
    return 0;
  }
  po::notify(vm);
  if (!vm.count("adapter")) throw InputError("missing --adapter DIR");
  if (!vm.count("tasks")) throw InputError("missing --tasks");
  if (!vm.count("out")) throw InputError("missing --out DIR");
  runner::RunSpec spec;
  spec.methods = {"eval"};
  std::string item;
  for (char c : vm["tasks"].as<std::string>() + ",") {
    if (c == ',') {
      const auto b = item.find_first_not_of(' '), e = item.find_last_not_of(' ');
      if (b != std::string::npos) spec.tasks.push_back(item.substr(b, e - b + 1));
      item.clear();
    } else {
      item += c;
    }
  }
  spec.options["eval"]["adapter"] = vm["adapter"].as<std::string>();
  if (vm.count("model")) spec.model = vm["model"].as<std::string>();
  if (vm.count("limit")) spec.limit = vm["limit"].as<int64_t>();
  if (vm.count("threads")) spec.threads = vm["threads"].as<int>();
  if (vm.count("precision")) spec.precision = vm["precision"].as<std::string>();
  spec.resume = vm.count("resume") > 0;
  if (vm.count("task-file"))
    for (const auto& f : vm["task-file"].as<std::vector<std::string>>()) spec.task_files.emplace_back(f);
  spec.out = vm["out"].as<std::string>();
  spec.command_line = "tunebench eval";
  for (const auto& a : args) spec.command_line += " " + a;

  const fs::path adapter = vm["adapter"].as<std::string>();
  spec.precheck = [adapter](const fs::path& model_dir, const std::string& sha) {
    const auto cfg = ModelConfig::from_hf_json(read_json_file(model_dir / "config.json"), (model_dir / "config.json").string());
    methods::load_adaptation(adapter, cfg, nullptr, sha);
  };
  const auto result = runner::run_matrix(spec, {methods::eval_method_info()});
  std::cout << runner::summary_table(result.records) << "\n"
            << result.executed << " run" << (result.executed == 1 ? "" : "s") << " executed, " << result.failed
            << " failed; records in " << spec.out.string() << "\n";
  if (result.stop_signal) return 128 + result.stop_signal;
  return result.failed > 0 ? 1 : 0;
}

}  // namespace tb::cli
