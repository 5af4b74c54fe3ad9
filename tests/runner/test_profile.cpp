// Tests of `tunebench profile`: a tiny Llama shape run end to end (ops + the four step cases
// through Google Benchmark, with a small minimum time and a small peak matmul) must write a
// profile JSON with the documented keys and positive figures, and with the model-FLOP count
// of the documented case definitions and the closed-form analytic memory of each step;
// bf16 runs the same cases against the bf16 peak; a PyTorch reference file is matched by
// arch, shape, case and precision; bad flags and bad reference files exit 2 with a message
// naming the flag or the file and field.
#include <gtest/gtest.h>

#include <fstream>
#include <set>

#include "harness/core/dnnl/dnn.h"

#include "harness/runner/profile_json.h"
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
  EXPECT_NO_THROW(runner::validate_profile_json(j, file.string()));
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

  // Memory of the step cases: analytic parts in closed form, a measured peak above the
  // weights. Full finetuning keeps 4 bytes of gradient and 8 of Adam moments per parameter.
  const int64_t P = j["model"]["params"].get<int64_t>();
  const auto full = find("train.full")["memory"];
  ASSERT_TRUE(full.is_object());
  EXPECT_EQ(full["analytic"]["weights"].get<int64_t>(), 4 * P);
  EXPECT_EQ(full["analytic"]["gradients"].get<int64_t>(), 4 * P);
  EXPECT_EQ(full["analytic"]["optimizer_state"].get<int64_t>(), 8 * P);
  EXPECT_GT(full["analytic"]["activations"].get<int64_t>(), 0);
  EXPECT_EQ(full["analytic_bytes"].get<int64_t>(),
            16 * P + full["analytic"]["activations"].get<int64_t>());
  EXPECT_GT(full["peak_rss_bytes"].get<int64_t>(), 4 * P);
  EXPECT_NEAR(full["peak_over_analytic"].get<double>(),
              full["peak_rss_bytes"].get<double>() / full["analytic_bytes"].get<double>(), 1e-9);
  const auto lora = find("train.lora")["memory"];
  EXPECT_EQ(lora["analytic"]["gradients"].get<int64_t>() * 2, lora["analytic"]["optimizer_state"].get<int64_t>());
  // rank 8 on q, k, v, o of 2 layers at C64 (hs16, 4 heads): 2·8·(64+64)·4 values, 4 bytes each.
  EXPECT_EQ(lora["analytic"]["gradients"].get<int64_t>(), 4 * 2 * 8 * 128 * 4);
  EXPECT_EQ(find("infer")["memory"]["analytic"]["gradients"].get<int64_t>(), 0);
  for (const auto& c : j["cases"])
    if (c["kind"] == "op") EXPECT_FALSE(c.contains("memory")) << c["name"];
}

TEST_F(ProfileCli, Bf16RunsTheSameCasesAgainstTheBf16Peak) {
  if (!tb::dnn::info().bf16_supported) GTEST_SKIP() << "CPU without native bf16";
  const auto file = dir_ / "bf16.json";
  const auto r = run(std::string(kTiny) + " --precision bf16 --methods full,infer --min-time 0.01 --peak-size 256 --json " +
                     shell_quote(file.string()));
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  const auto j = read_json(file);
  const double peak = j["machine"]["peak_gflop_per_s"]["bf16"].get<double>();
  int steps = 0;
  for (const auto& c : j["cases"]) {
    EXPECT_EQ(c["precision"], "bf16") << c["name"];
    if (c["flops_per_iter"].get<double>() > 0)
      EXPECT_NEAR(c["peak_fraction"].get<double>(), c["gflop_per_s"].get<double>() / peak, 1e-9) << c["name"];
    if (c["name"] == "train.full") {
      ++steps;
      // bf16 copies of every matrix (2 bytes each) on top of the fp32 master weights.
      const int64_t P = j["model"]["params"].get<int64_t>();
      const int64_t w = c["memory"]["analytic"]["weights"].get<int64_t>();
      EXPECT_GT(w, 4 * P);
      EXPECT_LT(w, 6 * P);
    }
  }
  EXPECT_EQ(steps, 1);
}

// A reference file in bench/pytorch_reference.py's format: rows match by arch, shape, case
// and precision only; matched cases carry the reference figure and the speed-up.
TEST_F(ProfileCli, ReferenceRowsAttachToMatchingCasesOnly) {
  const auto ref = dir_ / "pytorch.json";
  {
    nlohmann::json rows = nlohmann::json::array();
    auto row = [](const char* c, const char* prec, int64_t T, double tps) {
      return nlohmann::json{{"case", c}, {"precision", prec}, {"arch", "llama"}, {"L", 2}, {"C", 64}, {"NH", 4},
                            {"V", 256}, {"T", T}, {"B", 2}, {"tokens_per_s", tps}};
    };
    rows.push_back(row("infer", "f32", 16, 1000.0));
    rows.push_back(row("full", "bf16", 16, 5.0));   // other precision: not matched
    rows.push_back(row("full", "f32", 32, 5.0));    // other T: not matched
    std::ofstream(ref) << nlohmann::json{{"machine", {{"torch", "9.9"}, {"threads", 1}}}, {"cases", rows}}.dump();
  }
  const auto file = dir_ / "p.json";
  const auto r = run(std::string(kTiny) + " --no-ops --methods full,infer --min-time 0.01 --peak-size 128 --reference " +
                     shell_quote(ref.string()) + " --json " + shell_quote(file.string()));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("speed-up"), std::string::npos) << r.out;
  const auto j = read_json(file);
  ASSERT_EQ(j["cases"].size(), 2u);
  const auto& full = j["cases"][0];
  const auto& infer = j["cases"][1];
  EXPECT_FALSE(full.contains("reference"));
  ASSERT_TRUE(infer.contains("reference"));
  EXPECT_EQ(infer["reference"]["framework"], "pytorch 9.9");
  EXPECT_DOUBLE_EQ(infer["reference"]["tokens_per_s"].get<double>(), 1000.0);
  EXPECT_NEAR(infer["speedup"].get<double>(), infer["tokens_per_s"].get<double>() / 1000.0, 1e-9);

  std::ofstream(ref) << R"({"machine": {"torch": "9.9"}, "cases": [{"case": "full", "precision": "f32"}]})";
  const auto bad = run(std::string(kTiny) + " --reference " + shell_quote(ref.string()));
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.err.find(ref.string() + ": cases[0].arch: missing or not a string"), std::string::npos) << bad.err;
  const auto missing = run(std::string(kTiny) + " --reference " + shell_quote((dir_ / "nope.json").string()));
  EXPECT_EQ(missing.exit_code, 2);
  EXPECT_NE(missing.err.find("nope.json: cannot read the reference file"), std::string::npos) << missing.err;
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

TEST_F(ProfileCli, RejectsBadFlagsWithExitTwo) {
  auto r = run(std::string(kTiny) + " --precision fp8");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--precision: 'fp8' is not a precision (f32 | bf16)"), std::string::npos) << r.err;
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
