// `tunebench run --save-adaptations` and `tunebench eval` through the built CLI on the tiny
// random models of the runner tests and the real spam task (--limit): the kept directories
// (PEFT format for lora, prefix, softprompt; tunebench's for adapter, head, full), and eval of each one
// reproducing the run's test metrics (and forgetting) exactly; a wrong base model or a bad adapter is exit 2
// with one line naming the file and the key.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>

#include "harness/base/errors.h"
#include "harness/base/strict_json.h"
#include "harness/core/safetensors.h"
#include "harness/runner/runner.h"
#include "methods/method.h"
#include "tests/runner/runner_fixture.h"

namespace tb::testing {
namespace {

using nlohmann::json;

class SaveAdaptations : public RunnerTest {
 protected:
  // The same tiny model as GPT-2 (fused c_attn, learned positions, biases).
  fs::path make_gpt2() {
    const fs::path dir = dir_ / "gpt2";
    fs::create_directories(dir);
    fs::copy_file(model_dir_ / "tokenizer.json", dir / "tokenizer.json");
    ModelConfig c = config_;
    c.family = Family::gpt2;
    c.model_type = "gpt2";
    c.n_kv_head = c.n_head;
    c.head_dim = c.hidden / c.n_head;
    c.intermediate = 4 * c.hidden;
    Model m(c);
    m.init_random(8, 0.1f);
    save_model(m, dir);
    return dir;
  }

  std::string common(const fs::path& model, const fs::path& out) const {
    return "--tasks spam --limit 24 --model " + shell_quote(model.string()) + " --out " + shell_quote(out.string());
  }

  // Every metric, forgetting included: the held-out LM loss of the adapted model is a
  // continuous figure, equal only if the eval applies exactly what the run trained.
  static json metrics(const fs::path& record) { return read_json_file(record)["metrics"]; }

  // Runs `methods` with --save-adaptations on `model`, then tunebench eval of each kept
  // directory; every test metric of the eval record equals the run's.
  void run_and_eval(const fs::path& model, const std::vector<std::string>& methods, const std::string& extra) {
    const fs::path out = dir_ / ("run_" + model.filename().string());
    std::string list;
    for (const auto& m : methods) list += (list.empty() ? "" : ",") + m;
    const auto r = cli("run --methods " + list + " " + common(model, out) + " --save-adaptations " + extra);
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
    for (const auto& m : methods) {
      const fs::path kept = out / "adaptations" / (m + "__spam__seed0");
      ASSERT_TRUE(fs::is_directory(kept)) << kept;
      const json info = read_json_file(kept / "tunebench_adaptation.json");
      EXPECT_EQ(info["method"], m);
      EXPECT_EQ(info["task"], "spam");
      EXPECT_EQ(info["limit"], 24);
      const bool peft = m == "lora" || m == "prefix" || m == "softprompt";
      EXPECT_EQ(info["format"], peft ? "peft" : "tunebench") << m;
      EXPECT_EQ(fs::exists(kept / "adapter_config.json"), peft) << m;
      EXPECT_EQ(fs::exists(kept / "adapter_model.safetensors"), peft) << m;
      EXPECT_EQ(fs::exists(kept / "adaptation.safetensors"), !peft) << m;
      if (peft) {
        EXPECT_EQ(info["head"], "tunebench_head.safetensors");
        const json c = read_json_file(kept / "adapter_config.json");
        EXPECT_EQ(c["task_type"], "CAUSAL_LM");
        EXPECT_EQ(c["base_model_name_or_path"], info["base_model"]["path"]);
        EXPECT_EQ(c["peft_type"], m == "lora" ? "LORA" : m == "prefix" ? "PREFIX_TUNING" : "PROMPT_TUNING");
      }

      const fs::path eval_out = dir_ / ("eval_" + model.filename().string() + "_" + m);
      const auto e = cli("eval --adapter " + shell_quote(kept.string()) + " " + common(model, eval_out));
      ASSERT_EQ(e.exit_code, 0) << e.out << e.err;
      const json rec = read_json_file(eval_out / "eval__spam__seed0.json");
      EXPECT_EQ(rec["train_info"]["status"], "ok") << rec.dump();
      const json want = metrics(out / (m + "__spam__seed0.json"));
      ASSERT_TRUE(want.contains("accuracy")) << want.dump();
      ASSERT_TRUE(want.contains("forgetting")) << want.dump();
      EXPECT_EQ(metrics(eval_out / "eval__spam__seed0.json"), want) << m;
    }
  }
};

TEST_F(SaveAdaptations, EvalOfEachKeptAdaptationReproducesTheRunsTestMetrics) {
  run_and_eval(model_dir_, {"lora", "prefix", "softprompt", "adapter", "head", "full"},
               "--lora.epochs 2 --prefix.epochs 2 --softprompt.epochs 2 --adapter.epochs 2 --head.epochs 2 "
               "--head.unfreeze-last 1 --full.epochs 1");
}

TEST_F(SaveAdaptations, Gpt2LoraOnQAndVIsExportedOnCAttnAndReproduced) {
  const fs::path gpt2 = make_gpt2();
  run_and_eval(gpt2, {"lora"}, "--lora.epochs 2");
  const auto st = SafetensorsFile::open(dir_ / "run_gpt2/adaptations/lora__spam__seed0/adapter_model.safetensors");
  EXPECT_TRUE(st.find("base_model.model.transformer.h.1.attn.c_attn.lora_B.weight"));
  EXPECT_EQ(st.tensors().size(), 4u);  // one A/B pair per layer
}

// What tunebench exports means in PEFT's terms what tunebench computes: the committed PyTorch
// script (tests/reference/make_peft_goldens.py apply, PEFT's semantics written out) gives the
// logits `tunebench logits --adapter` gives, for a LoRA, prefix and soft prompt trained on
// spam (Llama) and a LoRA on GPT-2's fused c_attn. Needs Debian's python3-torch.
TEST_F(SaveAdaptations, ExportedAdaptersGiveTheSameLogitsInThePyTorchScript) {
  if (std::system("/usr/bin/python3 -c 'import torch' >/dev/null 2>&1") != 0)
    GTEST_SKIP() << "/usr/bin/python3 has no torch (Debian's python3-torch)";
  const fs::path gpt2 = make_gpt2();
  struct Case {
    fs::path model;
    std::string method;
  };
  const std::vector<Case> cases = {{model_dir_, "lora"}, {model_dir_, "prefix"}, {model_dir_, "softprompt"}, {gpt2, "lora"}};
  auto r = cli("run --methods lora,prefix,softprompt " + common(model_dir_, dir_ / "llama") +
               " --save-adaptations --lora.epochs 1 --prefix.epochs 1 --softprompt.epochs 1 --lora.lr 0.05");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = cli("run --methods lora " + common(gpt2, dir_ / "gpt2run") + " --save-adaptations --lora.epochs 1 --lora.lr 0.05");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string tokens = "5,17,96,3,42,42,8,63";
  const fs::path script = fs::path(TB_SOURCE_DIR) / "tests/reference/make_peft_goldens.py";
  for (const auto& c : cases) {
    const fs::path kept = dir_ / (c.model == gpt2 ? "gpt2run" : "llama") / "adaptations" / (c.method + "__spam__seed0");
    const auto ours = cli("logits --json --model " + shell_quote(c.model.string()) + " --tokens " + tokens + " --adapter " +
                          shell_quote(kept.string()));
    ASSERT_EQ(ours.exit_code, 0) << ours.err;
    const std::string cmd = "/usr/bin/python3 " + shell_quote(script.string()) + " apply --model " +
                            shell_quote(c.model.string()) + " --adapter " + shell_quote(kept.string()) +
                            " --tokens " + tokens + " > " + shell_quote((dir_ / "py.json").string());
    ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
    const auto a = json::parse(ours.out)["logits"], b = json::parse(slurp(dir_ / "py.json"))["logits"];
    const auto base = json::parse(cli("logits --json --model " + shell_quote(c.model.string()) + " --tokens " + tokens).out)["logits"];
    ASSERT_EQ(a.size(), b.size());
    double diff = 0, moved = 0;
    for (size_t t = 0; t < a.size(); ++t) {
      ASSERT_EQ(a[t].size(), b[t].size());
      size_t best_a = 0, best_b = 0;
      for (size_t v = 0; v < a[t].size(); ++v) {
        diff = std::max(diff, std::abs(a[t][v].get<double>() - b[t][v].get<double>()));
        moved = std::max(moved, std::abs(a[t][v].get<double>() - base[t][v].get<double>()));
        if (a[t][v].get<double>() > a[t][best_a].get<double>()) best_a = v;
        if (b[t][v].get<double>() > b[t][best_b].get<double>()) best_b = v;
      }
      EXPECT_EQ(best_a, best_b) << c.method << " position " << t;
    }
    EXPECT_LT(diff, 1e-4) << c.method << " on " << c.model;
    EXPECT_GT(moved, 1e-3) << c.method << ": the adaptation must change the logits for the comparison to mean something";
  }
}

TEST_F(SaveAdaptations, WrongBaseModelOrBadAdapterIsExitTwoNamingFileAndKey) {
  const fs::path out = dir_ / "run";
  auto r = cli("run --methods lora " + common(model_dir_, out) + " --save-adaptations --lora.epochs 1");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const fs::path kept = out / "adaptations/lora__spam__seed0";
  const fs::path gpt2 = make_gpt2();
  r = cli("eval --adapter " + shell_quote(kept.string()) + " " + common(gpt2, dir_ / "e1"));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("tunebench_adaptation.json: base_model.config:"), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;

  // The same architecture with other weights: the sha256 differs.
  const fs::path other = dir_ / "other";
  fs::create_directories(other);
  fs::copy_file(model_dir_ / "tokenizer.json", other / "tokenizer.json");
  Model m(config_);
  m.init_random(99, 0.1f);
  save_model(m, other);
  r = cli("eval --adapter " + shell_quote(kept.string()) + " " + common(other, dir_ / "e2"));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("tunebench_adaptation.json: base_model.sha256:"), std::string::npos) << r.err;

  // An unknown peft_type in the kept adapter_config.json.
  json c = read_json_file(kept / "adapter_config.json");
  c["peft_type"] = "LOHA";
  std::ofstream(kept / "adapter_config.json") << c.dump();
  r = cli("eval --adapter " + shell_quote(kept.string()) + " " + common(model_dir_, dir_ / "e3"));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("adapter_config.json: peft_type: 'LOHA' is not supported"), std::string::npos) << r.err;
  r = cli("logits --model " + shell_quote(model_dir_.string()) + " --tokens 1,2,3 --adapter " + shell_quote(kept.string()));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("adapter_config.json: peft_type"), std::string::npos) << r.err;
}

TEST_F(SaveAdaptations, LogitsAndGenerateTakeTheAdapter) {
  const fs::path out = dir_ / "run";
  auto r = cli("run --methods softprompt " + common(model_dir_, out) + " --save-adaptations --softprompt.epochs 1");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const fs::path kept = out / "adaptations/softprompt__spam__seed0";
  const std::string model = " --model " + shell_quote(model_dir_.string());
  const auto base = cli("logits" + model + " --tokens 5,6,7 --json");
  const auto adapted = cli("logits" + model + " --tokens 5,6,7 --json --adapter " + shell_quote(kept.string()));
  ASSERT_EQ(base.exit_code, 0) << base.err;
  ASSERT_EQ(adapted.exit_code, 0) << adapted.err;
  const auto b = json::parse(base.out)["logits"], a = json::parse(adapted.out)["logits"];
  ASSERT_EQ(a.size(), 3u);  // the given tokens' positions, not the virtual tokens'
  EXPECT_NE(a, b);
  const auto g = cli("generate" + model + " --prompt hello --temperature 0 --max-new 4 --json --adapter " +
                     shell_quote(kept.string()));
  EXPECT_EQ(g.exit_code, 0) << g.err;
  EXPECT_TRUE(json::parse(g.out).contains("text"));
}

TEST_F(SaveAdaptations, SuiteRunSectionTakesSaveAdaptations) {
  const fs::path suite = dir_ / "suite.ini";
  std::ofstream(suite) << "[run]\nmethods = lora\nsave-adaptations = true\n";
  EXPECT_EQ(runner::read_suite(suite, methods::registry()).save_adaptations, std::optional<bool>(true));
  std::ofstream(suite) << "[run]\nmethods = lora\n";
  EXPECT_FALSE(runner::read_suite(suite, methods::registry()).save_adaptations.has_value());
  std::ofstream(suite) << "[run]\nsave-adaptations = maybe\n";
  try {
    runner::read_suite(suite, methods::registry());
    FAIL() << "no error for save-adaptations = maybe";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("suite.ini:2: save-adaptations: expected true or false"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace tb::testing
