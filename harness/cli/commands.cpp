// The subcommand table: one row per harness/cli/cmd_*.cpp.
#include "harness/cli/commands.h"

namespace tb::cli {

const std::vector<Command>& commands() {
  static const std::vector<Command> table = {
      {"run", "run methods x tasks x seeds and write one results record per run", cmd_run},
      {"eval", "evaluate a saved adaptation (run --save-adaptations, or a PEFT adapter) on tasks without training", cmd_eval},
      {"slurm", "submit the matrix of a suite as a Slurm job array plus a report job (slurm submit)", cmd_slurm},
      {"report", "write the HTML/Markdown/CSV comparison report of results directories", cmd_report},
      {"compare", "regression gate: compare two results directories, exit 1 on a regression", cmd_compare},
      {"profile", "profile every core op and method step (Google Benchmark) at a model shape", cmd_profile},
      {"inspect", "print tensors, shapes, dtypes and config of a checkpoint", cmd_inspect},
      {"tokenize", "encode a text with a model directory's tokenizer and print the ids", cmd_tokenize},
      {"list", "list tasks (with split sizes), methods or models", cmd_list},
      {"logits", "print the logits of every position of a token sequence", cmd_logits},
      {"generate", "sample a continuation of a prompt", cmd_generate},
      {"pretrain", "pretrain a base model on the installed text packages", cmd_pretrain},
      {"data", "build the task suite's normalised data (done on demand otherwise)", cmd_data},
  };
  return table;
}

}  // namespace tb::cli
