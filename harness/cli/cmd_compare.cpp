// `tunebench compare BASELINE CURRENT [--tolerance FILE] [--quality-floor X] [--markdown]`:
// the regression gate of nightly runs. Prints regressions, improvements, missing and new
// runs; exit 1 on any regression, 0 otherwise, 2 on bad input (a malformed record or
// tolerance file, named in the one-line error).
#include <boost/program_options.hpp>
#include <cmath>
#include <iostream>
#include <string>
#include <vector>

#include "harness/cli/commands.h"
#include "harness/base/errors.h"
#include "harness/runner/runner.h"
#include "methods/method.h"
#include "reports/compare.h"

namespace tb::cli {
namespace po = boost::program_options;

int cmd_compare(const Args& args) {
  po::options_description opts("options");
  // clang-format off
  opts.add_options()
      ("help,h", "print this help")
      ("tolerance", po::value<std::string>(), "JSON tolerance file (see --help)")
      ("quality-floor", po::value<double>(), "smallest quality drop that counts as a regression (default 0.01)")
      ("markdown", "print the findings as Markdown (for CI summaries)")
      ("dirs", po::value<std::vector<std::string>>(), "BASELINE and CURRENT results directories");
  // clang-format on
  po::positional_options_description positional;
  positional.add("dirs", -1);
  po::variables_map vm;
  po::store(po::command_line_parser(args).options(opts).positional(positional).run(), vm);
  if (vm.count("help")) {
    std::cout << "usage: tunebench compare BASELINE_DIR CURRENT_DIR [--tolerance FILE] [--quality-floor X] [--markdown]\n\n"
              << "Matches runs by (method, task, seed, configuration hash) and reports, per matched run:\n"
              << "  a metric moving the wrong way by more than max(1 stderr, 0.01)  (quality)\n"
              << "  the median per-step (per eval batch) tokens/s of a timed phase dropping by more\n"
              << "  than max(10%, the spread of either run: half its interquartile range)   (speed)\n"
              << "  peak RSS rising by more than 10%                                 (memory)\n"
              << "  a run that was ok and no longer is                               (status)\n"
              << "and lists runs missing from CURRENT or new in it. Exit code 1 on any regression.\n\n"
              << "Tolerance file (JSON, every key optional):\n"
              << "  {\"quality_stderr\": 1.0, \"quality_floor\": 0.01, \"tokens_per_s_drop\": 0.10,\n"
              << "   \"peak_memory_rise\": 0.10, \"fail_on_missing\": false,\n"
              << "   \"metrics\": {\"perplexity\": {\"floor\": 0.5}, \"accuracy\": {\"stderr\": 2.0}}}\n\n"
              << opts;
    return 0;
  }
  po::notify(vm);
  const auto dirs = vm.count("dirs") ? vm["dirs"].as<std::vector<std::string>>() : std::vector<std::string>{};
  if (dirs.size() != 2)
    throw InputError("expected two results directories, BASELINE and CURRENT (usage: tunebench compare BASELINE CURRENT)");
  auto tol = vm.count("tolerance") ? reports::Tolerance::read(vm["tolerance"].as<std::string>()) : reports::Tolerance{};
  if (vm.count("quality-floor")) {
    const double f = vm["quality-floor"].as<double>();
    if (!std::isfinite(f) || f < 0) throw InputError("--quality-floor must be a non-negative number");
    tol.quality_floor = f;
  }
  const auto baseline = reports::read_results({dirs[0]}, runner::method_names(methods::registry()));
  const auto current = reports::read_results({dirs[1]}, runner::method_names(methods::registry()));
  // An empty side is never a pass: a nightly run that wrote nothing must fail the gate.
  if (baseline.records.empty()) throw InputError("baseline " + dirs[0] + " has no records");
  if (current.records.empty()) throw InputError("current " + dirs[1] + " has no records");
  const auto c = reports::compare_results(baseline, current, tol);
  std::cout << reports::comparison_text(c, vm.count("markdown") > 0);
  return c.regressed() ? 1 : 0;
}

}  // namespace tb::cli
