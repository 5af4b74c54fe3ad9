// Issue 5's quality bar, end to end through the CLI: on sentiment-yelp with models/default
// (limit 300, seed 0, the default suite's sizes), every method beats the majority-class row.
// Runs the real `tunebench run` (one child per run), so it also checks that every method
// works on the committed default model. About a minute on 2 cores.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <map>

#include "harness/runner/record.h"

namespace {

namespace fs = std::filesystem;

TEST(DefaultModelQuality, EveryMethodBeatsMajorityOnSentimentYelp) {
  const fs::path src = TB_SOURCE_DIR;
  ASSERT_TRUE(fs::exists(src / "models/default/model.safetensors")) << "models/default is missing";
  const fs::path out = fs::path(TB_BINARY_DIR) / ("quality-yelp-" + std::to_string(::getpid()));
  fs::remove_all(out);
  const std::string cmd = "cd " + src.string() + " && OMP_NUM_THREADS=1 " + TB_CLI +
                          " run --suite suites/default.ini --tasks sentiment-yelp --out " + out.string() +
                          " > " + (out.string() + ".log") + " 2>&1";
  const int rc = std::system(cmd.c_str());
  ASSERT_EQ(rc, 0) << "tunebench run failed; see " << out << ".log";
  std::map<std::string, double> acc;
  for (const auto& r : tb::runner::read_records(out)) {
    EXPECT_EQ(r.status, "ok") << r.method << ": " << r.message;
    acc[r.method] = r.metric_value("accuracy");
  }
  ASSERT_TRUE(acc.count("majority"));
  const double majority = acc["majority"];
  for (const char* m : {"feature", "head", "full", "icl", "prompt", "softprompt", "prefix", "adapter", "lora"}) {
    ASSERT_TRUE(acc.count(m)) << m << " has no record";
    EXPECT_GT(acc[m], majority) << m << " does not beat majority (" << majority << ")";
  }
  fs::remove_all(out);
  fs::remove(out.string() + ".log");
}

}  // namespace
