// Integration tests of the rlhf method on the default model (models/default, made by
// `tunebench pretrain`) and the sentiment-steer task, with a fixed seed and a small budget:
// the reward model orders held-out test pairs as the gold judge does (≥ 0.9 accuracy), and
// the gold reward of the policy after PPO and after DPO exceeds the base policy's on the
// same test prompts with the same random streams. Skipped when the default model is not
// there. Preference pairs are cached under the build directory, so the runs share them.
#include <gtest/gtest.h>

#include <filesystem>
#include <map>

#include "harness/base/hash.h"
#include "harness/core/model_io.h"
#include "harness/core/tokenizer.h"
#include "methods/method.h"
#include "tasks/registry.h"

namespace tb::methods {
MethodInfo rlhf_method_info();
}

namespace {

using namespace tb;

const std::filesystem::path kModelDir = std::filesystem::path(TB_SOURCE_DIR) / "models" / "default";

struct Outcome {
  std::map<std::string, double> metrics;
  nlohmann::json details;
};

// The small budget of both runs: the default pairs (shared through the cache; held-out
// pairs from every dev and test prompt), fewer PPO rollout batches, 128 test prompts.
Outcome run_rlhf(std::map<std::string, std::string> overrides) {
  overrides.insert({{"ppo-iterations", "6"}});
  static const auto registry = tasks::Registry::standard();
  const auto task = registry.load("sentiment-steer");
  auto model = load_model(kModelDir);
  const auto tok = Tokenizer::from_dir(kModelDir.string());
  const auto& info = methods::rlhf_method_info();
  std::map<std::string, std::string> values;
  for (const auto& o : info.options) values[o.name] = o.default_value;
  for (const auto& [k, v] : overrides) values[k] = v;
  const auto& test_split = task->split("test");
  const std::vector<tasks::Example> test(test_split.begin(), test_split.begin() + 128);
  methods::Meter meter;
  const std::string hash = tb::sha256_file(kModelDir / "model.safetensors");
  methods::RunContext ctx{*model, tok, *task, 0, methods::Options("rlhf", values), meter, 0,
                          std::filesystem::path(TB_BINARY_DIR) / "test-cache", hash, task->split("train"),
                          task->split("dev")};
  auto method = info.make();
  method->prepare(ctx);
  EXPECT_EQ(meter.status, "ok") << meter.status_message;
  method->predict(ctx, test);
  Outcome out;
  for (const auto& m : meter.metrics) out.metrics[m.name] = m.value;
  out.details = meter.details;
  return out;
}

class RlhfDefaultModel : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!std::filesystem::exists(kModelDir / "model.safetensors") || !std::filesystem::exists(kModelDir / "tokenizer.json"))
      GTEST_SKIP() << "no default model at " << kModelDir << " (make it with `tunebench pretrain`)";
  }
};

TEST_F(RlhfDefaultModel, RewardModelReachesHeldOutPairAccuracy) {
  const auto r = run_rlhf({{"algo", "ppo"}, {"ppo-iterations", "1"}, {"rollout-batch", "8"}});
  EXPECT_GE(r.metrics.at("rm_accuracy"), 0.9) << r.details["reward_model"].dump();
}

TEST_F(RlhfDefaultModel, PpoBeatsTheBasePolicy) {
  const auto r = run_rlhf({{"algo", "ppo"}});
  EXPECT_GT(r.metrics.at("gold_reward"), r.metrics.at("gold_reward_base")) << r.details["ppo"].dump();
  EXPECT_GT(r.metrics.at("win_rate"), 0.5);
  EXPECT_GT(r.metrics.at("kl"), 0.0);
}

TEST_F(RlhfDefaultModel, DpoBeatsTheBasePolicy) {
  const auto r = run_rlhf({{"algo", "dpo"}});
  EXPECT_GT(r.metrics.at("gold_reward"), r.metrics.at("gold_reward_base")) << r.details["dpo"].dump();
  EXPECT_GT(r.metrics.at("win_rate"), 0.5);
}

}  // namespace
