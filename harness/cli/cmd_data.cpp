// `tunebench data build [--group G ...] [--force]`: builds the standard suite's normalised
// data into $TUNEBENCH_DATA (default <home>/data-cache) and prints what each builder wrote.
// Loading a task builds its data on demand anyway; this command is for warming a cache
// (CI, a shared machine) and for forcing a rebuild.
#include <boost/program_options.hpp>
#include <chrono>
#include <iomanip>
#include <iostream>
#include <string>

#include "datasets/builders.h"
#include "datasets/paths.h"
#include "harness/cli/commands.h"
#include "harness/base/errors.h"

namespace tb::cli {
namespace po = boost::program_options;

int cmd_data(const Args& args) {
  po::options_description opts("options");
  // clang-format off
  opts.add_options()
      ("help,h", "print this help")
      ("action", po::value<std::string>(), "build")
      ("group", po::value<std::vector<std::string>>()->composing(), "only this builder group (repeatable)")
      ("force", "rebuild even if the cached data is fresh");
  // clang-format on
  po::positional_options_description pos;
  pos.add("action", 1);
  po::variables_map vm;
  po::store(po::command_line_parser(args).options(opts).positional(pos).run(), vm);
  if (vm.count("help")) {
    std::cout << "usage: tunebench data build [--group G ...] [--force]\n\n"
              << "Builds normalised task data into " << data::data_dir().string() << "\n"
              << "(TUNEBENCH_DATA overrides). Groups:";
    for (const auto& b : data::builders()) std::cout << " " << b.group;
    std::cout << "\n\n" << opts;
    return 0;
  }
  po::notify(vm);
  if (!vm.count("action") || vm["action"].as<std::string>() != "build")
    throw InputError("expected 'tunebench data build' (see --help)");
  std::vector<std::string> groups;
  if (vm.count("group")) groups = vm["group"].as<std::vector<std::string>>();
  else for (const auto& b : data::builders()) groups.push_back(b.group);
  const auto dir = data::data_dir();
  for (const auto& g : groups) {
    const auto t0 = std::chrono::steady_clock::now();
    const auto m = vm.count("force") ? data::build_group(g, dir) : data::ensure_group(g, dir);
    const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    for (const auto& [name, o] : m["outputs"].items()) {
      std::cout << std::left << std::setw(18) << name << std::right << std::setw(7)
                << o["records"].get<std::size_t>() << " records ";
      for (const auto& [sp, n] : o["splits"].items()) std::cout << " " << sp << "=" << n.get<std::size_t>();
      std::cout << "\n";
    }
    std::cout << "  (" << g << ": " << std::fixed << std::setprecision(2) << sec << " s, "
              << m["sources"]["files"].size() << " source files)\n";
  }
  std::cout << "data: " << dir.string() << "\n";
  return 0;
}

}  // namespace tb::cli
