// Tests of `tunebench report` and the reports library on the hand-written records of
// tests/runner/fixtures/results (two shards: sentiment-imdb with two seeds of full and lora;
// spam with a failed and a diverged run): seed aggregation, the Pareto front, failed runs
// kept as failed, merged shards, the self-contained HTML, Markdown and CSV, the hardware
// section from a profile.json, and the errors on bad input. The page in a real browser is
// checked by tests/runner/check_html.sh.
#include <gtest/gtest.h>

#include <fstream>

#include <cmath>
#include <regex>

#include "harness/runner/record.h"
#include "harness/runner/runner.h"
#include "methods/method.h"
#include "reports/report.h"
#include "reports/results.h"
#include "reports/svg.h"
#include "tests/runner/test_report_cli.h"

namespace tb::test {
namespace {

using reports::MethodRow;
using reports::TaskSection;

const MethodRow& row(const TaskSection& s, const std::string& method) {
  for (const auto& r : s.rows)
    if (r.method == method) return r;
  throw std::runtime_error("no row " + method + " in " + s.task);
}

std::vector<TaskSection> fixture_sections() {
  static const auto rs = reports::read_results({fixtures() / "results" / "shard0", fixtures() / "results" / "shard1"}, runner::method_names(methods::registry()));
  return reports::build_sections(rs);
}

int count(const std::string& s, const std::string& what) {
  int n = 0;
  for (auto p = s.find(what); p != std::string::npos; p = s.find(what, p + 1)) ++n;
  return n;
}

TEST(ReportModel, MergesShardsIntoOneSectionPerTask) {
  const auto rs = reports::read_results({fixtures() / "results" / "shard0", fixtures() / "results" / "shard1"}, runner::method_names(methods::registry()));
  EXPECT_EQ(rs.records.size(), 15u);
  const auto sections = reports::build_sections(rs);
  ASSERT_EQ(sections.size(), 2u);
  EXPECT_EQ(sections[0].task, "sentiment-imdb");
  EXPECT_EQ(sections[1].task, "spam");
  EXPECT_EQ(sections[0].metric, "accuracy");
  // Registry order, reference rows last.
  std::vector<std::string> order;
  for (const auto& r : sections[0].rows) order.push_back(r.method);
  EXPECT_EQ(order, (std::vector<std::string>{"feature", "head", "full", "softprompt", "lora", "majority", "lexicon"}));
  EXPECT_TRUE(row(sections[0], "majority").reference);
  EXPECT_TRUE(row(sections[0], "lexicon").reference);
  EXPECT_FALSE(row(sections[0], "full").reference);
}

// Reports know only the record type: the method order is the caller's, and a method the
// order does not name comes after those it names, by name; reference rows stay last.
TEST(ReportModel, ListsMethodsInTheOrderTheCallerGives) {
  const auto rs = reports::read_results({fixtures() / "results" / "shard0"}, {"lora", "softprompt", "full"});
  const auto sections = reports::build_sections(rs);
  ASSERT_EQ(sections.size(), 1u);
  std::vector<std::string> order;
  for (const auto& r : sections[0].rows) order.push_back(r.method);
  EXPECT_EQ(order, (std::vector<std::string>{"lora", "softprompt", "full", "feature", "head", "lexicon", "majority"}));
}

TEST(ReportModel, AggregatesSeedsWithTestAndSeedUncertainty) {
  const auto s = fixture_sections();
  const auto& full = row(s[0], "full");
  EXPECT_EQ(full.runs.size(), 2u);
  EXPECT_EQ(full.ok, 2);
  EXPECT_NEAR(full.value, 0.78, 1e-12);
  // sqrt(mean_se² + s²/n): mean_se = 0.0235, s² = 0.0002, n = 2.
  EXPECT_NEAR(full.stderr_, std::sqrt(0.0235 * 0.0235 + 0.0002 / 2), 1e-12);
  EXPECT_NEAR(full.forgetting, 0.41, 1e-12);
  EXPECT_NEAR(full.train_seconds, 118.5, 1e-12);
  // A single run keeps its own stderr.
  const auto& head = row(s[0], "head");
  EXPECT_NEAR(head.value, 0.71, 1e-12);
  EXPECT_NEAR(head.stderr_, 0.026, 1e-12);
  EXPECT_TRUE(std::isnan(head.forgetting));
}

TEST(ReportModel, MarksTheParetoFrontOfQualityAgainstTrainableParameters) {
  const auto s = fixture_sections();
  // imdb: head (514, .71), lora (16k, .76), full (5.3M, .78) are on the front; feature has
  // head's cost at lower accuracy, softprompt costs more than head for less.
  EXPECT_TRUE(row(s[0], "head").pareto);
  EXPECT_TRUE(row(s[0], "lora").pareto);
  EXPECT_TRUE(row(s[0], "full").pareto);
  EXPECT_FALSE(row(s[0], "feature").pareto);
  EXPECT_FALSE(row(s[0], "softprompt").pareto);
  EXPECT_FALSE(row(s[0], "majority").pareto);  // reference rows are not candidates
  EXPECT_FALSE(row(s[1], "prefix").pareto);    // failed runs neither
}

TEST(ReportModel, KeepsFailedRunsAsFailed) {
  const auto s = fixture_sections();
  const auto& prefix = row(s[1], "prefix");
  EXPECT_EQ(prefix.ok, 0);
  EXPECT_EQ(prefix.status, "error");
  ASSERT_EQ(prefix.failed.size(), 1u);
  EXPECT_NE(prefix.failed[0]->message.find("ran out of scratch"), std::string::npos);
  EXPECT_EQ(row(s[1], "adapter").status, "diverged");
}

TEST(ReportModel, ListsEveryOtherMetricNextToThePrimary) {
  const auto s = fixture_sections();
  // imdb records hold accuracy (primary), macro_f1 and forgetting: macro_f1 is the other metric.
  EXPECT_EQ(s[0].other_metrics, (std::vector<std::string>{"macro_f1"}));
  const auto& full = row(s[0], "full");
  ASSERT_TRUE(full.other_metrics.count("macro_f1"));
  EXPECT_NEAR(full.other_metrics.at("macro_f1").first, 0.77, 1e-12);  // seeds 0.78 and 0.76
  EXPECT_FALSE(full.other_metrics.count("forgetting"));
  EXPECT_FALSE(full.other_metrics.count("accuracy"));
}

class ReportCli : public CliTest {};

TEST_F(ReportCli, ShowsClosedAndOpenBookAccuracySideBySide) {
  // An index-style record: open-book accuracy is the primary metric, closed-book accuracy and
  // the retrieval metrics are the others; the report shows them all in its task section.
  auto rec = read_json(fixtures() / "results" / "shard0" / "head__sentiment-imdb__seed0.json");
  rec["metrics"]["closed_book_accuracy"] = {{"value", 0.3125}, {"stderr", 0.0211}, {"higher_is_better", true}};
  rec["metrics"]["mrr"] = {{"value", 0.0875}, {"stderr", 0.0104}, {"higher_is_better", true}};
  write_json(dir_ / "head__sentiment-imdb__seed0.json", rec);
  const auto r = run("report " + shell_quote(dir_.string()));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto m = slurp(dir_ / "report.md");
  EXPECT_NE(m.find("| method | closed_book_accuracy | macro_f1 | mrr |"), std::string::npos) << m;
  EXPECT_NE(m.find("| head | 0.3125 ± 0.0211 |"), std::string::npos) << m;
  const auto h = slurp(dir_ / "report.html");
  EXPECT_NE(h.find("id=\"other-sentiment-imdb\""), std::string::npos);
  EXPECT_NE(h.find("0.3125 ± 0.0211"), std::string::npos);
  EXPECT_NE(h.find("0.0875 ± 0.0104"), std::string::npos);
}

TEST(ReportModel, FormatsNumbersForPeople) {
  EXPECT_EQ(reports::format_bytes(1536), "1.50 KiB");
  EXPECT_EQ(reports::format_bytes(182.0 * 1024 * 1024), "182 MiB");
  EXPECT_EQ(reports::format_count(5312768), "5.31M");
  EXPECT_EQ(reports::format_count(16384), "16.4k");
  EXPECT_EQ(reports::format_count(514), "514");
  EXPECT_EQ(reports::format_seconds(9.5), "9.50 s");
  EXPECT_EQ(reports::format_seconds(118), "1:58");
  EXPECT_EQ(reports::format_seconds(3903), "1:05:03");
  EXPECT_EQ(reports::format_rate(2450.4), "2,450");
  EXPECT_EQ(reports::format_rate(1234567), "1,234,567");
  EXPECT_EQ(reports::format_bytes(NAN), "");
}

TEST(ReportSvg, NiceTicksCoverTheRangeInRoundSteps) {
  const auto t = reports::nice_ticks(0.63, 0.97, 5);
  ASSERT_GE(t.size(), 3u);
  EXPECT_LE(t.front(), 0.63);
  EXPECT_GE(t.back(), 0.97);
  EXPECT_NEAR(t[1] - t[0], 0.1, 1e-12);
  EXPECT_EQ(reports::xml_escape("a<b & \"c\""), "a&lt;b &amp; &quot;c&quot;");
}


TEST_F(ReportCli, WritesHtmlMarkdownAndCsvOfMergedShards) {
  const auto html = dir_ / "r.html", md = dir_ / "r.md", csv = dir_ / "s.csv";
  const auto r = run("report " + shell_quote((fixtures() / "results" / "shard0").string()) + " " +
                     shell_quote((fixtures() / "results" / "shard1").string()) + " --html " + shell_quote(html.string()) +
                     " --markdown " + shell_quote(md.string()) + " --csv " + shell_quote(csv.string()));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("15 records"), std::string::npos) << r.out;

  const auto h = slurp(html);
  for (const char* id : {"table-sentiment-imdb", "table-spam", "pareto-sentiment-imdb", "pareto-spam", "memory-sentiment-imdb",
                         "memory-spam", "throughput-sentiment-imdb", "throughput-spam", "loss-sentiment-imdb", "loss-spam",
                         "machine"})
    EXPECT_NE(h.find("id=\"" + std::string(id) + "\""), std::string::npos) << id;
  EXPECT_EQ(h.find("id=\"hardware\""), std::string::npos);  // no profile.json in these dirs
  // Self-contained: no URL, no external resource, no script.
  EXPECT_EQ(h.find("http"), std::string::npos);
  EXPECT_EQ(h.find("src="), std::string::npos);
  EXPECT_EQ(h.find("<script"), std::string::npos);
  EXPECT_EQ(h.find("<link"), std::string::npos);
  EXPECT_EQ(h.find("url("), std::string::npos);
  // One table row per method configuration: 7 on imdb, 6 on spam.
  EXPECT_EQ(count(h, "<tr class=\"method-row") + count(h, "<tr class=\"reference"), 13);
  EXPECT_NE(h.find("0.7800 ± 0.0255"), std::string::npos);  // full on imdb, two seeds
  // Pareto markers: 3 on imdb + 3 on spam.
  EXPECT_EQ(count(h, "class=\"point on-front\""), 6);
  EXPECT_EQ(count(h, "class=\"pareto-front\""), 2);
  EXPECT_NE(h.find("Intel(R) Xeon(R) Platinum 8488C"), std::string::npos);
  EXPECT_NE(h.find("git 71f2cc1a0b2c"), std::string::npos);

  const auto m = slurp(md);
  EXPECT_NE(m.find("## sentiment-imdb"), std::string::npos);
  EXPECT_NE(m.find("| accuracy ± stderr |"), std::string::npos);
  EXPECT_NE(m.find("*majority (reference)*"), std::string::npos);
  EXPECT_NE(m.find("Pareto front of accuracy against trainable parameters: head, lora, full."), std::string::npos) << m;

  const auto c = slurp(csv);
  std::string header;
  for (const auto& col : runner::summary_columns()) header += (header.empty() ? "" : ",") + col;
  EXPECT_EQ(c.substr(0, c.find('\n')), header);
  EXPECT_EQ(count(c, "\n"), 16);  // header + 15 records, failed ones included
  EXPECT_NE(c.find("prefix,spam,0,error,"), std::string::npos);
}

TEST_F(ReportCli, ShowsFailedRunsAsFailedWithStatusAndMessage) {
  const auto dir = copy_fixture("shard1", "results");
  const auto r = run("report " + shell_quote(dir.string()));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto h = slurp(dir / "report.html");
  const std::regex failed_row(R"(<tr class="method-row failed" data-method="prefix">.*?</tr>)");
  std::smatch m;
  ASSERT_TRUE(std::regex_search(h, m, failed_row));
  EXPECT_NE(m.str().find(">error<"), std::string::npos) << m.str();
  EXPECT_NE(h.find("<tr class=\"method-row failed\" data-method=\"adapter\">"), std::string::npos);
  EXPECT_NE(h.find("prefix / spam / seed 0</strong>: error — <code>prefix: attention backward ran out of scratch (P=64, T=256)</code>"),
            std::string::npos);
  EXPECT_NE(h.find("adapter / spam / seed 0</strong>: diverged — <code>loss became NaN at step 40</code>"), std::string::npos);
  const auto md = slurp(dir / "report.md");
  EXPECT_NE(md.find("- **prefix / spam / seed 0**: error — `prefix: attention backward ran out of scratch (P=64, T=256)`"),
            std::string::npos)
      << md;
  EXPECT_NE(md.find("| adapter | **diverged** |"), std::string::npos) << md;
  EXPECT_TRUE(fs::exists(dir / "summary.csv"));
}

TEST_F(ReportCli, RendersAProfileAsTheHardwareSection) {
  const auto dir = copy_fixture("shard0", "results");
  fs::copy_file(fixtures() / "profile.json", dir / "profile.json");
  const auto r = run("report " + shell_quote(dir.string()));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto h = slurp(dir / "report.html");
  EXPECT_NE(h.find("<section id=\"hardware\">"), std::string::npos);
  EXPECT_NE(h.find("id=\"hardware-cases-0\""), std::string::npos);
  EXPECT_NE(h.find("id=\"hardware-peak-0\""), std::string::npos);
  EXPECT_NE(h.find("train.full"), std::string::npos);
  EXPECT_NE(h.find("avx512_core_amx"), std::string::npos);
  const auto md = slurp(dir / "report.md");
  EXPECT_NE(md.find("## Hardware profile"), std::string::npos);
  EXPECT_NE(md.find("| train | train.lora | lora | f32 |"), std::string::npos) << md;
}

// Side by side (bench/side_by_side.sh): every profile*.json of the directory is a hardware
// section; a case with a reference shows the reference tokens/s and the speed-up, and a
// step case with memory shows analytic vs peak RSS.
TEST_F(ReportCli, RendersEveryProfileWithReferenceAndMemoryColumns) {
  const auto dir = copy_fixture("shard0", "results");
  fs::copy_file(fixtures() / "profile.json", dir / "profile.json");
  auto j = read_json(fixtures() / "profile.json");
  for (auto& c : j["cases"])
    if (c["name"] == "train.full") {
      c["reference"] = {{"framework", "pytorch 1.13"}, {"tokens_per_s", 100.0}, {"threads", 2}};
      c["speedup"] = 2.5;
      c["memory"] = {{"analytic", {{"weights", 4000000}, {"gradients", 4000000}, {"optimizer_state", 8000000}, {"activations", 1000000}}},
                     {"analytic_bytes", 17000000}, {"peak_rss_bytes", 18700000}, {"rss_before_bytes", 5000000},
                     {"peak_over_analytic", 1.1}};
    }
  std::ofstream(dir / "profile-small-bf16.json") << j.dump();
  const auto r = run("report " + shell_quote(dir.string()));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto h = slurp(dir / "report.html");
  EXPECT_NE(h.find("id=\"hardware-cases-0\""), std::string::npos);
  EXPECT_NE(h.find("id=\"hardware-cases-1\""), std::string::npos) << "the second profile file is missing";
  EXPECT_NE(h.find("pytorch 1.13 tokens/s"), std::string::npos);
  EXPECT_NE(h.find("2.50×"), std::string::npos);
  const auto md = slurp(dir / "report.md");
  EXPECT_NE(md.find("## Hardware profile (" + (dir / "profile-small-bf16.json").string() + ")"), std::string::npos) << md;
  EXPECT_NE(md.find("| 100 | 2.50× | 17.0 | 18.7 | 1.100 |"), std::string::npos) << md;
}

TEST_F(ReportCli, ARunInTwoDirectoriesIsAnErrorNamingBoth) {
  const auto a = copy_fixture("shard0", "a");
  const auto b = copy_fixture("shard0", "b");
  const auto r = run("report " + shell_quote(a.string()) + " " + shell_quote(b.string()) + " --out " + shell_quote(dir_.string()));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find((a / "feature__sentiment-imdb__seed0.json").string()), std::string::npos) << r.err;
  EXPECT_NE(r.err.find((b / "feature__sentiment-imdb__seed0.json").string()), std::string::npos) << r.err;
}

TEST_F(ReportCli, BadInputExitsTwoNamingTheFile) {
  const auto dir = copy_fixture("shard1", "results");
  auto j = read_json(dir / "lora__spam__seed0.json");
  j["train_info"].erase("peak_rss_bytes");
  write_json(dir / "lora__spam__seed0.json", j);
  auto r = run("report " + shell_quote(dir.string()));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("lora__spam__seed0.json: train_info.peak_rss_bytes: missing"), std::string::npos) << r.err;

  r = run("report " + shell_quote((dir_ / "nowhere").string()));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("nowhere does not exist"), std::string::npos) << r.err;

  fs::create_directories(dir_ / "empty");
  r = run("report " + shell_quote((dir_ / "empty").string()));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("no records"), std::string::npos) << r.err;

  const auto p = copy_fixture("shard0", "with-profile");
  auto prof = read_json(fixtures() / "profile.json");
  prof["cases"][1].erase("tokens_per_s");
  write_json(p / "profile.json", prof);
  r = run("report " + shell_quote(p.string()));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("profile.json: cases[1].tokens_per_s: missing"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace tb::test
