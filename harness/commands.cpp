// The subcommand table: one row per harness/cmd_*.cpp.
#include "harness/commands.h"

namespace tb::cli {

const std::vector<Command>& commands() {
  static const std::vector<Command> table = {
  };
  return table;
}

}  // namespace tb::cli
