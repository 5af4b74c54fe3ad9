// `tunebench pretrain --out DIR [--minutes M | --tokens N] [--resume]`: makes a base model
// from the installed text packages (see harness/tools/pretrain.h for the recipe).
#include <boost/program_options.hpp>
#include <iostream>

#include "harness/cli/commands.h"
#include "harness/base/errors.h"
#include "harness/tools/pretrain.h"

namespace tb::cli {

namespace po = boost::program_options;

int cmd_pretrain(const Args& args) {
  tools::PretrainOptions o;
  std::string out;
  po::options_description opts("options");
  opts.add_options()("help,h", "print this help")("out", po::value(&out), "output model directory")(
      "tokens", po::value(&o.tokens), "training budget in tokens (deterministic)")(
      "minutes", po::value(&o.minutes), "training budget in wall-clock minutes")(
      "resume", "continue from DIR/ckpt after an interruption")(
      "seed", po::value(&o.seed)->default_value(0), "random seed")(
      "vocab", po::value(&o.vocab)->default_value(4096), "BPE vocabulary size")(
      "arch", po::value(&o.arch)->default_value("llama"), "llama | gpt2")(
      "layers", po::value(&o.layers)->default_value(6), "transformer blocks")(
      "dim", po::value(&o.dim)->default_value(256), "hidden size")(
      "heads", po::value(&o.heads)->default_value(8), "attention heads")(
      "kv-heads", po::value(&o.kv_heads)->default_value(4), "key/value heads (llama)")(
      "ffn", po::value(&o.ffn)->default_value(0), "MLP width (0 = 8/3·dim rounded to 64 for llama, 4·dim for gpt2)")(
      "context", po::value(&o.context)->default_value(256), "context length of the model")(
      "batch", po::value(&o.batch)->default_value(16), "sequences per step")(
      "seq", po::value(&o.seq)->default_value(256), "tokens per sequence")(
      "lr", po::value(&o.lr)->default_value(2e-3f), "peak learning rate")(
      "warmup", po::value(&o.warmup)->default_value(50), "warm-up steps")(
      "checkpoint-minutes", po::value(&o.checkpoint_minutes)->default_value(2.0), "checkpoint interval")(
      "quiet", "no progress line");
  po::variables_map vm;
  po::store(po::command_line_parser(args).options(opts).run(), vm);
  if (vm.count("help")) {
    std::cout << "usage: tunebench pretrain --out DIR [--minutes M | --tokens N] [--resume] [options]\n\n"
              << "Build a corpus from the installed text packages (eval items removed), train a BPE\n"
              << "tokenizer and a small model, and write a Hugging Face model directory with a model card.\n\n"
              << opts;
    return 0;
  }
  po::notify(vm);
  if (out.empty()) throw InputError("missing --out DIR");
  if (o.tokens < 0 || o.minutes < 0) throw InputError("--tokens and --minutes must be positive");
  if (o.batch <= 0 || o.seq <= 0) throw InputError("--batch and --seq must be positive");
  o.out = out;
  o.resume = vm.count("resume") > 0;
  o.quiet = vm.count("quiet") > 0;
  tools::pretrain(o);
  return 0;
}

}  // namespace tb::cli
