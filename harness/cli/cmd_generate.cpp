// `tunebench generate --model DIR --prompt "..."`: sample a continuation with the model's
// tokenizer (greedy, temperature, top-k, top-p, seed, stop strings, max new tokens).
#include <boost/program_options.hpp>
#include <iostream>
#include <nlohmann/json.hpp>

#include "harness/cli/commands.h"
#include "harness/base/errors.h"
#include "harness/core/generate.h"
#include "harness/core/model_io.h"
#include "harness/core/tokenizer.h"
#include "methods/saved.h"

namespace tb::cli {

namespace po = boost::program_options;

int cmd_generate(const Args& args) {
  po::options_description opts("options");
  GenerateOptions g;
  int64_t max_new = 64, top_k = 0;
  float temperature = 0.8f, top_p = 1.0f;
  uint64_t seed = 0;
  opts.add_options()("help,h", "print this help")(
      "model", po::value<std::string>(), "checkpoint directory with tokenizer files")(
      "prompt", po::value<std::string>(), "prompt text")(
      "max-new", po::value(&max_new)->default_value(64), "maximum number of new tokens")(
      "temperature", po::value(&temperature)->default_value(0.8f), "sampling temperature; 0 = greedy")(
      "top-k", po::value(&top_k)->default_value(0), "sample among the k most likely tokens; 0 = off")(
      "top-p", po::value(&top_p)->default_value(1.0f), "nucleus sampling mass; 1 = off")(
      "seed", po::value(&seed)->default_value(0), "random seed")(
      "stop", po::value<std::vector<std::string>>(), "stop token (string; repeatable); the EOS token always stops")(
      "precision", po::value<std::string>()->default_value("f32"), "f32 | bf16 (mixed-precision matmuls)")(
      "adapter", po::value<std::string>(), "apply a saved adaptation (PEFT adapter or run --save-adaptations directory; "
                                           "a classification head is not used)")(
      "json", "print {\"text\", \"ids\", \"stop_reason\"}");
  po::variables_map vm;
  po::store(po::command_line_parser(args).options(opts).run(), vm);
  if (vm.count("help")) {
    std::cout << "usage: tunebench generate --model DIR --prompt \"...\" [--max-new N] [--temperature T]\n"
              << "                          [--top-k K] [--top-p P] [--seed S] [--stop TOKEN] [--adapter DIR] [--precision f32|bf16] [--json]\n\n"
              << opts;
    return 0;
  }
  po::notify(vm);
  if (!vm.count("model")) throw InputError("missing --model DIR");
  if (!vm.count("prompt")) throw InputError("missing --prompt");
  if (max_new < 0) throw InputError("--max-new must be >= 0");
  if (temperature < 0) throw InputError("--temperature must be >= 0");
  if (top_k < 0) throw InputError("--top-k must be >= 0");
  if (!(top_p > 0 && top_p <= 1)) throw InputError("--top-p must be in (0, 1]");
  const std::string dir = vm["model"].as<std::string>();
  const Precision precision = parse_precision(vm["precision"].as<std::string>(), "--precision");
  const auto tok = Tokenizer::from_dir(dir);
  auto model = load_model(dir);
  model->set_precision(precision);
  if (tok.vocab_size() > model->config().vocab_size)
    throw InputError(dir + ": tokenizer has " + std::to_string(tok.vocab_size()) +
                     " tokens but the model's vocab_size is " + std::to_string(model->config().vocab_size));
  g.max_new_tokens = max_new;
  g.temperature = temperature;
  g.top_k = top_k;
  g.top_p = top_p;
  g.seed = seed;
  if (auto eos = tok.eos_id()) g.stop_tokens.push_back(*eos);
  if (vm.count("stop"))
    for (const auto& s : vm["stop"].as<std::vector<std::string>>()) {
      auto ids = tok.encode(s);
      if (ids.size() != 1) throw InputError("--stop '" + s + "' is not a single token");
      g.stop_tokens.push_back(ids[0]);
    }
  auto prompt = tok.encode(vm["prompt"].as<std::string>());
  if (prompt.empty()) {
    if (auto bos = tok.bos_id()) prompt.push_back(*bos);
    else throw InputError("--prompt is empty and the tokenizer has no BOS token");
  }
  methods::SavedAdaptation saved;
  if (vm.count("adapter")) {
    saved = methods::load_adaptation(vm["adapter"].as<std::string>(), model->config(), &model->params());
    methods::apply_base_tensors(saved, *model);
  }
  const auto gen = generate(*model, {prompt}, g, saved.hooks.get()).at(0);
  std::vector<int32_t> shown;
  for (int32_t t : gen.tokens)
    if (std::find(g.stop_tokens.begin(), g.stop_tokens.end(), t) == g.stop_tokens.end()) shown.push_back(t);
  const std::string text = tok.decode(shown);
  if (vm.count("json")) {
    nlohmann::json j = {{"prompt", vm["prompt"].as<std::string>()}, {"text", text}, {"ids", gen.tokens},
                        {"stop_reason", gen.stop_reason}};
    std::cout << j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
  } else {
    std::cout << vm["prompt"].as<std::string>() << text << "\n";
  }
  return 0;
}

}  // namespace tb::cli
