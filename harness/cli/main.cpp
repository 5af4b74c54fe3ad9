// Entry point of the `tunebench` CLI: dispatches to a subcommand and maps exceptions to
// exit codes (0 ok, 1 failure or regression, 2 bad usage or bad input), printing one line
// on stderr that names the file, line or field at fault.
#include <boost/program_options/errors.hpp>
#include <cstdio>
#include <exception>
#include <iostream>
#include <string>

#include "harness/cli/commands.h"
#include "harness/base/errors.h"
#include "tb_version.h"

namespace {

void print_usage(std::ostream& os) {
  os << "tunebench " << TB_VERSION << " (" << TB_GIT_SHA << ")\n"
     << "usage: tunebench <command> [options]   (tunebench <command> --help for its options)\n\n"
     << "commands:\n";
  for (const auto& c : tb::cli::commands()) {
    std::string name = c.name;
    name.resize(10, ' ');
    os << "  " << name << c.summary << "\n";
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    print_usage(std::cerr);
    return 2;
  }
  const std::string name = argv[1];
  if (name == "--help" || name == "-h" || name == "help") {
    print_usage(std::cout);
    return 0;
  }
  if (name == "--version") {
    std::cout << "tunebench " << TB_VERSION << " (" << TB_GIT_SHA << ")\n";
    return 0;
  }
  tb::cli::Args args(argv + 2, argv + argc);
  for (const auto& c : tb::cli::commands()) {
    if (name != c.name) continue;
    try {
      return c.run(args);
    } catch (const tb::InputError& e) {
      std::cerr << "tunebench " << name << ": " << e.what() << "\n";
      return 2;
    } catch (const boost::program_options::error& e) {
      std::cerr << "tunebench " << name << ": " << e.what() << "\n";
      return 2;
    } catch (const std::exception& e) {
      std::cerr << "tunebench " << name << ": error: " << e.what() << "\n";
      return 1;
    }
  }
  std::cerr << "tunebench: unknown command '" << name << "' (see tunebench --help)\n";
  return 2;
}
