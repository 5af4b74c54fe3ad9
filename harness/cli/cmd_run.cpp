// `tunebench run`: the experiment matrix (methods × tasks × seeds) from flags or a suite
// file, one results record per run, and the summary. Method options are namespaced flags
// (--lora.rank 8 or --lora.rank=8), checked against the method's declared options; flags
// override the suite file.
#include <boost/program_options.hpp>
#include <ctime>
#include <csignal>
#include <iostream>
#include <string>

#include "harness/cli/commands.h"
#include "harness/base/errors.h"
#include "harness/runner/runner.h"
#include "methods/method.h"

namespace tb::cli {
namespace po = boost::program_options;

namespace {

std::string quote_arg(const std::string& a) {
  if (!a.empty() && a.find_first_of(" \t\n'\"\\$`*?;&|<>()") == std::string::npos) return a;
  std::string q = "'";
  for (char c : a) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

// Splits off the namespaced method options (--<method>.<name> [=] value) before Boost sees
// the rest; an unknown method or option name is an InputError naming the flag.
Args take_method_options(const Args& args, runner::MethodOptions& out) {
  Args rest;
  for (std::size_t i = 0; i < args.size(); ++i) {
    const auto& a = args[i];
    const auto eq = a.find('=');
    const auto name = a.substr(0, eq);
    const auto dot = name.find('.');
    if (a.rfind("--", 0) != 0 || dot == std::string::npos) {
      rest.push_back(a);
      continue;
    }
    const auto method = name.substr(2, dot - 2);
    const auto option = name.substr(dot + 1);
    std::string value;
    if (eq != std::string::npos) {
      value = a.substr(eq + 1);
    } else {
      if (i + 1 >= args.size()) throw InputError("option " + name + " needs a value");
      value = args[++i];
    }
    bool known = false;
    for (const auto& m : methods::registry()) known |= m.name == method;
    if (!known) throw InputError("unknown option " + name + " (no method '" + method + "')");
    runner::resolve_options(methods::find(method), {{option, value}});
    if (out[method].count(option)) throw InputError("option " + name + " given twice");
    out[method][option] = value;
  }
  return rest;
}

std::string default_out_dir() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[40];
  std::strftime(buf, sizeof buf, "results/run-%Y%m%dT%H%M%SZ", &tm);
  return buf;
}

}  // namespace

int cmd_run(const Args& args) {
  po::options_description opts("options");
  // clang-format off
  opts.add_options()
      ("help,h", "print this help")
      ("suite", po::value<std::string>(), "INI suite file: [run] methods, tasks, seeds, model, limit, threads, precision, "
                                          "train-sizes; [tune] grids; [<method>] options")
      ("methods", po::value<std::string>(), "comma-separated methods (tunebench list methods)")
      ("tasks", po::value<std::string>(), "comma-separated tasks (tunebench list tasks)")
      ("model", po::value<std::string>(), "model directory (config.json, model.safetensors, tokenizer.json); default models/default")
      ("seeds", po::value<std::string>(), "comma-separated seeds; default 0")
      ("out", po::value<std::string>(), "results directory; default results/run-<UTC time>")
      ("resume", "skip runs whose record already exists in --out")
      ("retry-failed", "with --resume: run again the runs recorded error or oom (their records are replaced)")
      ("mark-missing", po::value<std::string>(), "run nothing: write an interrupted record (what --resume runs again) with this "
                                                 "message for every run without a record (after a batch job died)")
      ("shard", po::value<std::string>(), "I/N: run only shard I of N (shards balanced by estimated run cost; several may share --out)")
      ("threads", po::value<int>(), "OpenMP threads per run (default: OMP_NUM_THREADS or all cores)")
      ("limit", po::value<int64_t>(), "at most N examples per split (smoke runs); a retrieval collection keeps the kept examples' gold documents + N distractors")
      ("precision", po::value<std::string>(), "f32 (default) | bf16: mixed-precision matmuls (bf16 operands, fp32 "
                                              "accumulation, fp32 master weights and optimizer state)")
      ("save-adaptations", "keep what each method learned in <out>/adaptations/<method>__<task>__seed<k>/ (PEFT format "
                           "for lora, prefix, softprompt) with tunebench_adaptation.json; tunebench eval applies it")
      ("train-sizes", po::value<std::string>(), "learning curves: e.g. 8,32,128,512,all; each method that learns from "
                                                "train runs at each size on a class-balanced nested subset of train")
      ("tune", po::value<std::vector<std::string>>()->composing(), "OPTION=V1,V2,... (e.g. lr=1e-4,3e-4,1e-3, or "
                                                                    "lora.lr=... for one method; repeatable): choose the "
                                                                    "option on dev per run, then score test once")
      ("task-file", po::value<std::vector<std::string>>()->composing(), "also load this task spec (repeatable)");
  // clang-format on
  runner::MethodOptions cli_options;
  const Args rest = take_method_options(args, cli_options);
  po::variables_map vm;
  po::store(po::command_line_parser(rest).options(opts).run(), vm);
  if (vm.count("help")) {
    std::cout << "usage: tunebench run [--suite FILE.ini | --methods a,b --tasks x,y] [--model DIR] [--seeds 0,1,2]\n"
              << "                     [--out DIR] [--resume [--retry-failed]] [--shard I/N] [--mark-missing MESSAGE]\n"
              << "                     [--threads N] [--limit N] [--precision f32|bf16] [--save-adaptations]\n"
              << "                     [--train-sizes 8,32,128,all] [--tune lr=1e-4,3e-4] [--task-file SPEC.ini]\n"
              << "                     [--<method>.<option> VALUE ...]\n\n"
              << "Runs methods x tasks x seeds, each in its own process, and writes one JSON record per run\n"
              << "(<method>__<task>__seed<k>.json; <method>__<task>__n<size>__seed<k>.json with --train-sizes)\n"
              << "plus summary.csv and summary.md to --out. Records are never overwritten: a record already in\n"
              << "--out is an error unless --resume, which skips it (and runs again a run recorded interrupted;\n"
              << "with --retry-failed also one recorded error or oom).\n"
              << "Method/task pairs that do not apply (e.g. lexicon on a non-sentiment task) are skipped.\n"
              << "Flags override the suite file. Exit code 1 when a run failed (its record says why).\n\n"
              << opts;
    return 0;
  }
  po::notify(vm);

  runner::RunSpec spec;
  if (vm.count("suite")) {
    const auto suite = runner::read_suite(vm["suite"].as<std::string>(), methods::registry());
    if (suite.methods) spec.methods = *suite.methods;
    if (suite.tasks) spec.tasks = *suite.tasks;
    if (suite.seeds) spec.seeds = *suite.seeds;
    if (suite.model) spec.model = *suite.model;
    if (suite.limit) spec.limit = *suite.limit;
    if (suite.threads) spec.threads = *suite.threads;
    if (suite.precision) spec.precision = *suite.precision;
    if (suite.save_adaptations) spec.save_adaptations = *suite.save_adaptations;
    spec.options = suite.options;
    if (suite.train_sizes) spec.train_sizes = *suite.train_sizes;
    spec.tune = suite.tune;
  }
  for (const auto& [method, values] : cli_options)
    for (const auto& [name, value] : values) spec.options[method][name] = value;
  auto list = [](const std::string& s) {
    std::vector<std::string> out;
    std::string item;
    for (char c : s + ",") {
      if (c == ',') {
        const auto b = item.find_first_not_of(' '), e = item.find_last_not_of(' ');
        if (b != std::string::npos) out.push_back(item.substr(b, e - b + 1));
        item.clear();
      } else {
        item += c;
      }
    }
    return out;
  };
  if (vm.count("methods")) spec.methods = list(vm["methods"].as<std::string>());
  if (vm.count("tasks")) spec.tasks = list(vm["tasks"].as<std::string>());
  if (vm.count("seeds")) spec.seeds = runner::parse_seeds(vm["seeds"].as<std::string>(), "--seeds");
  if (vm.count("model")) spec.model = vm["model"].as<std::string>();
  if (vm.count("threads")) spec.threads = vm["threads"].as<int>();
  if (vm.count("limit")) spec.limit = vm["limit"].as<int64_t>();
  if (vm.count("precision")) spec.precision = vm["precision"].as<std::string>();
  if (vm.count("train-sizes")) spec.train_sizes = runner::parse_train_sizes(vm["train-sizes"].as<std::string>(), "--train-sizes");
  if (vm.count("tune")) {
    // --tune replaces the suite's [tune] section as a whole.
    spec.tune.clear();
    for (const auto& t : vm["tune"].as<std::vector<std::string>>()) runner::add_tune_flag(spec.tune, t, methods::registry());
  }
  if (vm.count("shard")) std::tie(spec.shard_index, spec.shard_count) = runner::parse_shard(vm["shard"].as<std::string>());
  spec.resume = vm.count("resume") > 0;
  spec.retry_failed = vm.count("retry-failed") > 0;
  if (spec.retry_failed && !spec.resume) throw InputError("--retry-failed needs --resume");
  if (vm.count("save-adaptations")) spec.save_adaptations = true;
  if (vm.count("mark-missing")) {
    spec.mark_missing = vm["mark-missing"].as<std::string>();
    if (spec.mark_missing.empty()) throw InputError("--mark-missing needs a message (why the runs have no record)");
  }
  if (vm.count("task-file"))
    for (const auto& f : vm["task-file"].as<std::vector<std::string>>()) spec.task_files.emplace_back(f);
  if (vm.count("out")) {
    spec.out = vm["out"].as<std::string>();
  } else {
    if (spec.resume) throw InputError("--resume needs --out (the directory whose records to keep)");
    if (!spec.mark_missing.empty()) throw InputError("--mark-missing needs --out (the directory to complete)");
    spec.out = default_out_dir();
  }
  spec.command_line = "tunebench run";
  for (const auto& a : args) spec.command_line += " " + quote_arg(a);

  const auto result = runner::run_matrix(spec, methods::registry());
  std::cout << runner::summary_table(result.records) << "\n"
            << result.executed << " run" << (result.executed == 1 ? "" : "s") << " executed, " << result.resumed
            << " resumed, " << result.failed << " failed";
  if (!spec.mark_missing.empty()) std::cout << " (" << result.marked << " missing marked interrupted)";
  std::cout << "; " << result.records.size() << " record"
            << (result.records.size() == 1 ? "" : "s") << " in " << spec.out.string() << " (summary.csv, summary.md)\n";
  if (result.stop_signal) {
    std::cerr << "tunebench run: stopped by " << (result.stop_signal == SIGTERM ? "SIGTERM" : "SIGINT")
              << "; the run in progress is recorded as interrupted; --resume --out " << spec.out.string()
              << " continues\n";
    return 128 + result.stop_signal;
  }
  return result.failed > 0 ? 1 : 0;
}

}  // namespace tb::cli
