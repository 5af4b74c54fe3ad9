// `tunebench report RESULTS_DIR... [--html FILE] [--markdown FILE] [--csv FILE] [--out DIR]`:
// the method-comparison report of one or more results directories (the shards of a
// matrix, or runs made apart): report.html, report.md and summary.csv. Files are written
// atomically, so a report being regenerated is never seen half-written.
#include <boost/program_options.hpp>
#include <iostream>
#include <string>
#include <vector>

#include "harness/cli/commands.h"
#include "harness/base/errors.h"
#include "harness/base/files.h"
#include "harness/runner/record.h"
#include "harness/runner/runner.h"
#include "methods/method.h"
#include "reports/report.h"

namespace tb::cli {
namespace po = boost::program_options;

int cmd_report(const Args& args) {
  po::options_description opts("options");
  // clang-format off
  opts.add_options()
      ("help,h", "print this help")
      ("html", po::value<std::string>(), "HTML report file (default: OUT/report.html)")
      ("markdown", po::value<std::string>(), "Markdown report file (default: OUT/report.md)")
      ("csv", po::value<std::string>(), "summary CSV file (default: OUT/summary.csv)")
      ("out", po::value<std::string>(), "directory of the default file names (default: the results directory, "
                                        "or the current directory when several are given)")
      ("dirs", po::value<std::vector<std::string>>(), "results directories");
  // clang-format on
  po::positional_options_description positional;
  positional.add("dirs", -1);
  po::variables_map vm;
  po::store(po::command_line_parser(args).options(opts).positional(positional).run(), vm);
  if (vm.count("help")) {
    std::cout << "usage: tunebench report RESULTS_DIR... [--html FILE] [--markdown FILE] [--csv FILE] [--out DIR]\n\n"
              << "Writes the comparison report of every record in the results directories (several\n"
              << "directories, e.g. the shards of one matrix, are merged): a self-contained HTML page with\n"
              << "tables and inline SVG charts, the same tables in Markdown, and summary.csv. A profile.json\n"
              << "(from tunebench profile --json) in a results directory adds a hardware section.\n\n"
              << opts;
    return 0;
  }
  po::notify(vm);
  if (!vm.count("dirs")) throw InputError("missing RESULTS_DIR (usage: tunebench report RESULTS_DIR... [--html FILE])");
  std::vector<std::filesystem::path> dirs;
  for (const auto& d : vm["dirs"].as<std::vector<std::string>>()) dirs.emplace_back(d);
  const std::filesystem::path out =
      vm.count("out") ? std::filesystem::path(vm["out"].as<std::string>()) : dirs.size() == 1 ? dirs.front() : ".";
  auto file = [&](const char* flag, const char* name) {
    return vm.count(flag) ? std::filesystem::path(vm[flag].as<std::string>()) : out / name;
  };

  const auto results = reports::read_results(dirs, runner::method_names(methods::registry()));
  if (results.records.empty() && results.profiles.empty())
    throw InputError("no records (<method>__<task>__seed<k>.json) or profile.json in the results directories");
  const auto html = file("html", "report.html"), md = file("markdown", "report.md"), csv = file("csv", "summary.csv");
  for (const auto& f : {html, md, csv})
    if (f.has_parent_path() && !std::filesystem::is_directory(f.parent_path()))
      throw InputError("cannot write " + f.string() + ": directory " + f.parent_path().string() + " does not exist");
  write_file_atomic(html, reports::report_html(results));
  write_file_atomic(md, reports::report_markdown(results));
  write_file_atomic(csv, reports::report_csv(results));
  std::cout << "report of " << results.records.size() << " records" << (results.profiles.empty() ? "" : " and a hardware profile")
            << ": " << html.string() << ", " << md.string() << ", " << csv.string() << "\n";
  return 0;
}

}  // namespace tb::cli
