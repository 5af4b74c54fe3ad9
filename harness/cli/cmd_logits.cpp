// `tunebench logits --model DIR --tokens 1,2,3 [--json]`: the model's logits at every
// position of one token sequence. Needs only config.json + weights (no tokenizer), so it
// is the command to compare a checkpoint against another implementation.
#include <boost/program_options.hpp>
#include <cstdio>
#include <iostream>
#include <sstream>

#include "harness/cli/commands.h"
#include "harness/base/errors.h"
#include "harness/core/model_io.h"
#include "methods/saved.h"

namespace tb::cli {

namespace po = boost::program_options;

std::vector<int32_t> parse_token_list(const std::string& s, const char* flag) {
  std::vector<int32_t> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    size_t used = 0;
    long long v = 0;
    try {
      v = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used == 0 || used != item.size() || v < 0 || v > INT32_MAX)
      throw InputError(std::string(flag) + ": '" + item + "' is not a token id");
    out.push_back(static_cast<int32_t>(v));
  }
  if (out.empty()) throw InputError(std::string(flag) + ": empty token list");
  return out;
}

int cmd_logits(const Args& args) {
  po::options_description opts("options");
  opts.add_options()("help,h", "print this help")(
      "model", po::value<std::string>(), "checkpoint directory (config.json + model.safetensors)")(
      "tokens", po::value<std::string>(), "comma-separated token ids, e.g. 1,2,3")(
      "precision", po::value<std::string>()->default_value("f32"), "f32 | bf16 (mixed-precision matmuls)")(
      "adapter", po::value<std::string>(), "apply a saved adaptation (PEFT adapter or run --save-adaptations directory; "
                                           "LoRA unmerged, a classification head is not used)")(
      "json", "print {\"logits\": [[...], ...]}, one row per position");
  po::variables_map vm;
  po::store(po::command_line_parser(args).options(opts).run(), vm);
  if (vm.count("help")) {
    std::cout << "usage: tunebench logits --model DIR --tokens 1,2,3 [--adapter DIR] [--precision f32|bf16] [--json]\n\n"
              << "Print the logits of every position of the token sequence (with a prompt-tuning adapter,\n"
              << "the positions of the given tokens only, not the virtual tokens).\n\n" << opts;
    return 0;
  }
  po::notify(vm);
  if (!vm.count("model")) throw InputError("missing --model DIR");
  if (!vm.count("tokens")) throw InputError("missing --tokens");
  const auto ids = parse_token_list(vm["tokens"].as<std::string>(), "--tokens");
  const Precision precision = parse_precision(vm["precision"].as<std::string>(), "--precision");
  auto model = load_model(vm["model"].as<std::string>());
  model->set_precision(precision);
  methods::SavedAdaptation saved;
  if (vm.count("adapter")) {
    saved = methods::load_adaptation(vm["adapter"].as<std::string>(), model->config(), &model->params());
    methods::apply_base_tensors(saved, *model);
  }
  const int64_t T = static_cast<int64_t>(ids.size()), V = model->config().vocab_size;
  model->forward(ids.data(), 1, T, saved.hooks.get());
  const int64_t Pv = model->virtual_tokens();
  std::vector<float> all((Pv + T) * V);
  model->logits(all.data());
  const std::vector<float> logits(all.begin() + Pv * V, all.end());
  const bool json = vm.count("json") > 0;
  std::string out = json ? "{\"logits\": [" : "";
  char buf[32];
  for (int64_t t = 0; t < T; ++t) {
    if (json) out += t ? ", [" : "[";
    for (int64_t v = 0; v < V; ++v) {
      std::snprintf(buf, sizeof buf, "%.9g", logits[t * V + v]);
      if (v) out += json ? ", " : " ";
      out += buf;
    }
    out += json ? "]" : "\n";
  }
  if (json) out += "]}\n";
  std::cout << out;
  return 0;
}

}  // namespace tb::cli
