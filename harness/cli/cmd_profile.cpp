// `tunebench profile [--model DIR | --arch gpt2|llama --layers L --dim C --heads H --vocab V]
// [--seq T --batch B] [--methods full,lora,head,infer] [--precision f32|bf16] [--json FILE]`:
// hardware profiling of every core op and each method's train/infer step at one model
// shape, through Google Benchmark (see harness/tools/profile.h for the case definitions). The
// default shape is the "small" row of the PyTorch side-by-side table (bench/pytorch_reference.py).
#include <boost/program_options.hpp>
#include <iostream>
#include <string>

#include "harness/cli/commands.h"
#include "harness/base/errors.h"
#include "harness/base/files.h"
#include "harness/tools/profile.h"
#include "harness/runner/record.h"

namespace tb::cli {
namespace po = boost::program_options;

int cmd_profile(const Args& args) {
  tools::ProfileSpec spec;
  spec.arch = "gpt2";
  std::string methods;
  for (const auto& m : spec.methods) methods += (methods.empty() ? "" : ",") + m;
  po::options_description opts("options");
  // clang-format off
  opts.add_options()
      ("help,h", "print this help")
      ("model", po::value<std::string>(), "model directory (config.json + model.safetensors); replaces the shape flags")
      ("arch", po::value<std::string>()->default_value(spec.arch), "gpt2 | llama (random weights)")
      ("layers", po::value<int64_t>()->default_value(spec.layers), "L")
      ("dim", po::value<int64_t>()->default_value(spec.dim), "C")
      ("heads", po::value<int64_t>()->default_value(spec.heads), "NH")
      ("vocab", po::value<int64_t>()->default_value(spec.vocab), "V")
      ("seq", po::value<int64_t>()->default_value(spec.seq), "T, tokens per sequence")
      ("batch", po::value<int64_t>()->default_value(spec.batch), "B, sequences per step")
      ("methods", po::value<std::string>()->default_value(methods), "step cases to profile: full,lora,head,infer")
      ("precision", po::value<std::string>()->default_value(spec.precision), "f32 | bf16")
      ("no-ops", "skip the per-op cases (profile the steps only)")
      ("min-time", po::value<double>()->default_value(spec.min_time), "Google Benchmark's minimum time per case, seconds")
      ("peak-size", po::value<int64_t>()->default_value(spec.peak_size), "n of the n×n×n matmul timed as the peak")
      ("json", po::value<std::string>(), "write the profile as JSON (tunebench report reads profile*.json in a results directory)")
      ("reference", po::value<std::string>(), "JSON of bench/pytorch_reference.py: adds its tokens/s and the speed-up to "
                                              "step cases of the same arch, shape, case and precision");
  // clang-format on
  po::variables_map vm;
  po::store(po::command_line_parser(args).options(opts).run(), vm);
  if (vm.count("help")) {
    std::cout << "usage: tunebench profile [--model DIR | --arch gpt2|llama --layers L --dim C --heads H --vocab V]\n"
              << "                         [--seq T --batch B] [--methods full,lora,head,infer] [--precision f32|bf16]\n"
              << "                         [--no-ops] [--min-time S] [--json FILE] [--reference PYTORCH.json]\n\n"
              << "Times every core op (forward and backward) at the model's shapes and each step case:\n"
              << "  full   LM loss over the whole vocabulary + backward + AdamW step on every parameter\n"
              << "  lora   rank 8 on the attention q, k, v and output projections, LM loss, AdamW on the factors\n"
              << "  head   frozen body + linear classifier on the last position's hidden state\n"
              << "  infer  forward returning the logits of every position\n"
              << "reporting tokens/s, model GFLOP/s and the fraction of the measured matmul peak, with the\n"
              << "ISA oneDNN dispatched to and the thread count (OMP_NUM_THREADS), and for each step case its\n"
              << "analytic memory (weights, gradients, optimizer state, activations) beside the measured peak RSS.\n"
              << "Put the JSON in a results directory as profile*.json and tunebench report adds a hardware\n"
              << "section; bench/side_by_side.sh runs PyTorch and tunebench together and reports both.\n\n"
              << opts;
    return 0;
  }
  po::notify(vm);
  if (vm.count("model")) {
    for (const char* f : {"arch", "layers", "dim", "heads", "vocab"})
      if (!vm[f].defaulted()) throw InputError(std::string("--") + f + " and --model are exclusive (the model fixes its shape)");
    spec.model = vm["model"].as<std::string>();
  }
  spec.arch = vm["arch"].as<std::string>();
  spec.layers = vm["layers"].as<int64_t>();
  spec.dim = vm["dim"].as<int64_t>();
  spec.heads = vm["heads"].as<int64_t>();
  spec.vocab = vm["vocab"].as<int64_t>();
  spec.seq = vm["seq"].as<int64_t>();
  spec.batch = vm["batch"].as<int64_t>();
  spec.precision = vm["precision"].as<std::string>();
  if (vm.count("reference")) spec.reference = vm["reference"].as<std::string>();
  spec.ops = !vm.count("no-ops");
  spec.min_time = vm["min-time"].as<double>();
  spec.peak_size = vm["peak-size"].as<int64_t>();
  spec.methods.clear();
  std::string item;
  for (char c : vm["methods"].as<std::string>() + ",") {
    if (c != ',') {
      if (c != ' ') item += c;
      continue;
    }
    if (!item.empty()) spec.methods.push_back(item);
    item.clear();
  }
  std::filesystem::path json_file;
  if (vm.count("json")) {
    json_file = vm["json"].as<std::string>();
    if (json_file.has_parent_path() && !std::filesystem::is_directory(json_file.parent_path()))
      throw InputError("--json " + json_file.string() + ": directory " + json_file.parent_path().string() + " does not exist");
  }
  tools::validate_spec(spec);  // before the slow part, so bad flags fail at once

  const auto result = tools::run_profile(spec, std::cout);
  if (!json_file.empty()) {
    write_file_atomic(json_file, result.dump(1) + "\n");
    std::cout << "profile: wrote " << json_file.string() << "\n";
  }
  return 0;
}

}  // namespace tb::cli
