// Entry point of the `tunebench` CLI: dispatches to a subcommand and maps exceptions to
// exit codes (0 ok, 1 failure or regression, 2 bad usage or bad input), printing one line
// on stderr that names the file, line or field at fault.
#include <boost/program_options/errors.hpp>

#include <algorithm>
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

namespace {

// Boost.ProgramOptions builds what() by replacing placeholders such as %value% with the
// user's text, in a loop that never ends when that text itself contains the placeholder
// (`--limit %value%` hung; found by fuzzing). Such input gets a message built here instead.
std::string option_error_text(const boost::program_options::error& e, const tb::cli::Args& args) {
  namespace po = boost::program_options;
  const bool has_placeholder = std::any_of(args.begin(), args.end(), [](const std::string& a) {
    const auto p = a.find('%');
    return p != std::string::npos && a.find('%', p + 1) != std::string::npos;
  });
  if (!has_placeholder) return e.what();
  const auto* named = dynamic_cast<const po::error_with_option_name*>(&e);
  const std::string option = named ? named->get_option_name() : std::string();
  const char* what = dynamic_cast<const po::unknown_option*>(&e)          ? "unrecognised option"
                     : dynamic_cast<const po::validation_error*>(&e)      ? "invalid value"
                     : dynamic_cast<const po::multiple_occurrences*>(&e)  ? "given more than once"
                     : dynamic_cast<const po::ambiguous_option*>(&e)      ? "ambiguous option"
                     : dynamic_cast<const po::invalid_syntax*>(&e)        ? "invalid syntax"
                                                                          : "bad option";
  std::string text = what;
  if (!option.empty() && option.find('%') == std::string::npos) text += " " + option;
  return text + " (an argument contains '%...%'; see --help)";
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
      std::cerr << "tunebench " << name << ": " << option_error_text(e, args) << "\n";
      return 2;
    } catch (const std::exception& e) {
      std::cerr << "tunebench " << name << ": error: " << e.what() << "\n";
      return 1;
    }
  }
  std::cerr << "tunebench: unknown command '" << name << "' (see tunebench --help)\n";
  return 2;
}
