// Tests of `tunebench profile`: a tiny Llama shape run end to end (ops + the four step cases
// through Google Benchmark, with a small minimum time and a small peak matmul) must write a
// profile JSON with the documented keys and positive figures, and with the model-FLOP count
// of the documented case definitions; bad flags and the not-yet-available bf16 execution
// exit 2 with a message naming the flag.
#include <gtest/gtest.h>

#include <set>

#include "harness/profile.h"
#include "tests/runner/test_report_cli.h"

namespace tb::test {
namespace {

class ProfileCli : public CliTest {};

constexpr const char* kTiny = "profile --arch llama --layers 2 --dim 64 --heads 4 --vocab 256 --seq 16 --batch 2";

TEST_F(ProfileCli, TinyShapeWritesTheDocumentedJsonWithPositiveFigures) {
  const auto file = dir_ / "profile.json";
  const auto r = run(std::string(kTiny) + " --min-time 0.01 --peak-size 256 --json " + shell_quote(file.string()));
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  // Google Benchmark's console table with our counters.
  EXPECT_NE(r.out.find("train.full"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("GFLOP/s"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("tokens/s"), std::string::npos) << r.out;

  const auto j = read_json(file);
  EXPECT_NO_THROW(profile::validate_profile_json(j, file.string()));
  const auto& m = j["machine"];
  for (const char* k : {"cpu", "isa", "onednn_version"}) {
    ASSERT_TRUE(m[k].is_string()) << k;
    EXPECT_FALSE(m[k].get<std::string>().empty()) << k;
  }
  EXPECT_EQ(m["threads"].get<int>(), 1);  // OMP_NUM_THREADS=1 in CliTest::run
  ASSERT_TRUE(m["peak_gflop_per_s"]["f32"].is_number());
  EXPECT_GT(m["peak_gflop_per_s"]["f32"].get<double>(), 0.0);
  EXPECT_TRUE(m["peak_gflop_per_s"]["bf16"].is_null() || m["peak_gflop_per_s"]["bf16"].get<double>() > 0.0);

  std::set<std::string> names;
  for (const auto& c : j["cases"]) {
    const auto name = c["name"].get<std::string>();
    names.insert(name);
    EXPECT_EQ(c["precision"], "f32") << name;
    EXPECT_TRUE(c["shape"].is_object() && !c["shape"].empty()) << name;
    EXPECT_GT(c["tokens_per_s"].get<double>(), 0.0) << name;
    EXPECT_GT(c["seconds_per_iter"].get<double>(), 0.0) << name;
    const bool matmul = c["flops_per_iter"].get<double>() > 0;
    if (matmul) {
      EXPECT_GT(c["gflop_per_s"].get<double>(), 0.0) << name;
      EXPECT_GT(c["peak_fraction"].get<double>(), 0.0) << name;
      EXPECT_NEAR(c["peak_fraction"].get<double>(), c["gflop_per_s"].get<double>() / m["peak_gflop_per_s"]["f32"].get<double>(), 1e-9);
    } else {
      EXPECT_TRUE(c["gflop_per_s"].is_null()) << name;
      EXPECT_GT(c["gbyte_per_s"].get<double>(), 0.0) << name;
    }
    const auto kind = c["kind"].get<std::string>();
    if (kind == "op") EXPECT_TRUE(c["method"].is_null()) << name;
    else EXPECT_TRUE(matmul) << name;
  }
  for (const char* n : {"embedding.forward", "embedding.backward", "linear.q.forward", "linear.q.backward", "linear.kv.forward",
                        "linear.attn_out.backward", "linear.mlp_gate_up.forward", "linear.mlp_down.backward",
                        "linear.lm_head.forward", "rmsnorm.forward", "rmsnorm.backward", "swiglu.forward",
                        "swiglu.backward", "rope.forward", "rope.backward", "attention.forward", "attention.backward",
                        "residual.forward", "residual.backward", "cross_entropy.forward", "cross_entropy.backward",
                        "mean_pool.forward", "last_pool.backward", "train.full", "train.lora", "train.head", "infer"})
    EXPECT_TRUE(names.count(n)) << n;

  auto find = [&](const std::string& name) {
    for (const auto& c : j["cases"])
      if (c["name"] == name) return c;
    return nlohmann::json();
  };
  // Model FLOPs of `infer` at L2 C64 NH4 hs16 F192 V256, B2 T16 (N = 32):
  // linears 2·N·(L·(64·192 + 64·64 + 3·64·192) + 64·256) = 7,864,320;
  // causal attention 2·B·NH·T·(T+1)·hs per layer = 69,632, × 2 layers.
  EXPECT_DOUBLE_EQ(find("infer")["flops_per_iter"].get<double>(), 7864320.0 + 2 * 69632.0);
  EXPECT_DOUBLE_EQ(find("train.full")["flops_per_iter"].get<double>(), 3 * (7864320.0 + 2 * 69632.0));
  EXPECT_EQ(find("train.full")["kind"], "train");
  EXPECT_EQ(find("train.lora")["method"], "lora");
  EXPECT_EQ(find("infer")["kind"], "infer");
  EXPECT_EQ(find("train.full")["shape"]["V"], 256);
  EXPECT_EQ(j["model"]["params"].get<int64_t>() > 0, true);
}

TEST_F(ProfileCli, StepsOnlyWithNoOps) {
  const auto file = dir_ / "p.json";
  const auto r = run(std::string(kTiny) + " --no-ops --methods head,infer --min-time 0.01 --peak-size 128 --json " +
                     shell_quote(file.string()));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = read_json(file);
  ASSERT_EQ(j["cases"].size(), 2u);
  EXPECT_EQ(j["cases"][0]["name"], "train.head");
  EXPECT_EQ(j["cases"][1]["name"], "infer");
}

TEST_F(ProfileCli, RejectsBf16AndBadFlagsWithExitTwo) {
  auto r = run(std::string(kTiny) + " --precision bf16");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--precision bf16: bf16 model execution is not available yet"), std::string::npos) << r.err;
  r = run(std::string(kTiny) + " --methods full,dpo");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--methods: 'dpo' is not one of full, lora, head, infer"), std::string::npos) << r.err;
  r = run("profile --arch llama --dim 60 --heads 7");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--dim must be a positive multiple of --heads"), std::string::npos) << r.err;
  r = run("profile --model " + shell_quote((dir_ / "none").string()) + " --layers 3");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--layers and --model are exclusive"), std::string::npos) << r.err;
  r = run("profile --arch mamba");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--arch: 'mamba' is not gpt2 or llama"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace tb::test
