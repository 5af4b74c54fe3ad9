// The subcommands of the `tunebench` CLI. Each lives in its own harness/cli/cmd_*.cpp, parses
// its own flags with Boost.Program_options (every one answers --help), and returns the
// process exit code. Errors propagate as exceptions; main() maps them to exit codes:
// tb::InputError (and Boost's option errors) -> 2, anything else -> 1.
#pragma once

#include <string>
#include <vector>

namespace tb::cli {

using Args = std::vector<std::string>;  // the arguments after the subcommand name

struct Command {
  const char* name;
  const char* summary;
  int (*run)(const Args& args);
};

// The table of every subcommand, in the order `tunebench --help` lists them.
const std::vector<Command>& commands();

int cmd_inspect(const Args& args);
int cmd_tokenize(const Args& args);
int cmd_list(const Args& args);
int cmd_data(const Args& args);
int cmd_logits(const Args& args);
int cmd_generate(const Args& args);
int cmd_pretrain(const Args& args);
int cmd_run(const Args& args);
int cmd_eval(const Args& args);
int cmd_report(const Args& args);
int cmd_slurm(const Args& args);
int cmd_compare(const Args& args);
int cmd_profile(const Args& args);

}  // namespace tb::cli
