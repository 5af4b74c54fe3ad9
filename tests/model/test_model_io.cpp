// Checkpoint loading errors and save/load round trips: a missing tensor, an unexpected one,
// a wrong shape and bad config fields are ModelErrors naming the tensor or field, and the
// CLI maps them to exit code 2 with one line naming it.
#include <gtest/gtest.h>

#include <cmath>

#include <sys/wait.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <functional>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "harness/base/errors.h"
#include "harness/core/dnnl/dnn.h"
#include "harness/core/model_io.h"
#include "harness/core/safetensors.h"

namespace {

namespace fs = std::filesystem;
const fs::path kGpt2 = fs::path(TB_SOURCE_DIR) / "tests/goldens/gpt2-tiny";

struct TempDir {
  fs::path path;
  TempDir() : path(fs::temp_directory_path() / ("tb_model_io_" + std::to_string(::getpid()) + "_" +
                                                std::to_string(reinterpret_cast<uintptr_t>(this)))) {
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
};

// Copies the golden GPT-2 checkpoint, applying `edit` to its tensors and config.
void write_variant(const fs::path& dir, const std::function<void(std::vector<tb::TensorToWrite>&,
                                                                  std::vector<std::vector<float>>&)>& edit,
                   const std::function<void(nlohmann::json&)>& edit_cfg) {
  const auto f = tb::SafetensorsFile::open(kGpt2 / "model.safetensors");
  std::vector<std::vector<float>> data;
  std::vector<tb::TensorToWrite> ts;
  data.reserve(f.tensors().size() + 1);
  for (const auto& t : f.tensors()) {
    data.push_back(f.read_f32(t.name));
    ts.push_back({t.name, t.shape, data.back().data(), tb::DType::F32});
  }
  edit(ts, data);
  tb::write_safetensors(dir / "model.safetensors", ts);
  std::ifstream in(kGpt2 / "config.json");
  auto cfg = nlohmann::json::parse(in);
  edit_cfg(cfg);
  std::ofstream(dir / "config.json") << cfg.dump(2);
}

std::string error_of(const fs::path& dir) {
  try {
    tb::load_model(dir);
  } catch (const tb::ModelError& e) {
    return e.what();
  }
  return "";
}

TEST(ModelIo, MissingTensorIsNamed) {
  TempDir d;
  write_variant(d.path, [](auto& ts, auto&) {
    ts.erase(std::remove_if(ts.begin(), ts.end(), [](auto& t) { return t.name == "transformer.h.1.mlp.c_fc.bias"; }), ts.end());
  }, [](auto&) {});
  EXPECT_NE(error_of(d.path).find("missing tensor 'transformer.h.1.mlp.c_fc.bias'"), std::string::npos);
}

TEST(ModelIo, WrongShapeIsNamed) {
  TempDir d;
  std::vector<float> small(10, 0.0f);
  write_variant(d.path, [&](auto& ts, auto&) {
    for (auto& t : ts)
      if (t.name == "transformer.ln_f.weight") {
        t.shape = {10};
        t.data = small.data();
      }
  }, [](auto&) {});
  const auto e = error_of(d.path);
  EXPECT_NE(e.find("transformer.ln_f.weight"), std::string::npos) << e;
  EXPECT_NE(e.find("expected [48]"), std::string::npos) << e;
}

TEST(ModelIo, UnexpectedTensorIsNamed) {
  TempDir d;
  std::vector<float> extra(4, 1.0f);
  write_variant(d.path, [&](auto& ts, auto&) { ts.push_back({"transformer.h.7.mystery", {4}, extra.data(), tb::DType::F32}); },
                [](auto&) {});
  EXPECT_NE(error_of(d.path).find("unexpected tensor 'transformer.h.7.mystery'"), std::string::npos);
}

TEST(ModelIo, BadConfigFieldsAreNamed) {
  for (const auto& fv : std::vector<std::pair<std::string, nlohmann::json>>{
           {"n_embd", "wide"}, {"n_layer", -1}, {"n_head", 5}, {"model_type", "bert"}, {"activation_function", "relu"}}) {
    const std::string& field = fv.first;  // not a structured binding: the lambda below captures it (clang 14)
    const nlohmann::json& value = fv.second;
    TempDir d;
    write_variant(d.path, [](auto&, auto&) {}, [&](nlohmann::json& c) { c[field] = value; });
    const auto e = error_of(d.path);
    EXPECT_NE(e.find(field), std::string::npos) << field << ": " << e;
    EXPECT_NE(e.find("config.json"), std::string::npos) << e;
  }
}

// Sizes beyond any real checkpoint are refused by name before any size is computed from them
// (a parameter count would overflow 64 bits).
TEST(ModelIo, ConfigSizesBeyondTheSupportedRangeAreNamed) {
  for (const auto& fv : std::vector<std::pair<std::string, nlohmann::json>>{
           {"n_embd", int64_t{1} << 40}, {"n_layer", int64_t{1} << 30}, {"n_inner", int64_t{1} << 50},
           {"vocab_size", int64_t{1} << 40}, {"n_positions", int64_t{1} << 40}}) {
    const std::string& field = fv.first;
    const nlohmann::json& value = fv.second;
    TempDir d;
    write_variant(d.path, [](auto&, auto&) {}, [&](nlohmann::json& c) { c[field] = value; });
    const auto e = error_of(d.path);
    EXPECT_NE(e.find(field), std::string::npos) << field << ": " << e;
    EXPECT_NE(e.find("beyond what tunebench supports"), std::string::npos) << e;
  }
}

// A model whose weights cannot fit in this machine's memory is refused with the figures before
// anything is allocated (not a bad_alloc, not the OOM killer): 4096 layers of width 65536 are
// ~8.4 TB of fp32 weights.
TEST(ModelIo, AModelLargerThanMemoryIsRefusedWithTheFigures) {
  TempDir d;
  write_variant(d.path, [](auto&, auto&) {}, [](nlohmann::json& c) {
    c["n_embd"] = 65536;
    c["n_head"] = 512;
    c["n_layer"] = 4096;
    c["n_inner"] = 4 * 65536;
  });
  const auto e = error_of(d.path);
  EXPECT_NE(e.find("config.json"), std::string::npos) << e;
  EXPECT_NE(e.find("GB of fp32 weights"), std::string::npos) << e;
  EXPECT_NE(e.find("memory available"), std::string::npos) << e;
}

TEST(ModelIo, SaveLoadRoundTripIsExact) {
  auto m = tb::load_model(kGpt2);
  TempDir d;
  tb::save_model(*m, d.path);
  auto m2 = tb::load_model(d.path);
  ASSERT_EQ(m->params().num_params(), m2->params().num_params());
  for (size_t i = 0; i < m->params().params().size(); ++i) {
    const auto& a = m->params().params()[i];
    const auto& b = m2->params().params()[i];
    ASSERT_EQ(a.name, b.name);
    EXPECT_EQ(std::memcmp(a.data, b.data, a.numel() * 4), 0) << a.name;
  }
  // Saved GPT-2 weights are in Conv1D layout on disk, as Hugging Face expects.
  const auto f = tb::SafetensorsFile::open(d.path / "model.safetensors");
  EXPECT_EQ(f.at("transformer.h.0.mlp.c_fc.weight").shape, (std::vector<int64_t>{48, 192}));
}

#ifdef TB_CLI
TEST(ModelIo, CliExitsTwoNamingTheTensor) {
  TempDir d;
  write_variant(d.path, [](auto& ts, auto&) {
    ts.erase(std::remove_if(ts.begin(), ts.end(), [](auto& t) { return t.name == "transformer.wpe.weight"; }), ts.end());
  }, [](auto&) {});
  const auto err = d.path / "stderr.txt";
  const std::string cmd = std::string(TB_CLI) + " logits --model " + d.path.string() + " --tokens 1,2 2> " + err.string() + " > /dev/null";
  const int status = std::system(cmd.c_str());
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 2);
  std::ifstream in(err);
  std::string line, all;
  int lines = 0;
  while (std::getline(in, line)) {
    all += line;
    ++lines;
  }
  EXPECT_EQ(lines, 1) << all;
  EXPECT_NE(all.find("transformer.wpe.weight"), std::string::npos) << all;
}

TEST(ModelIo, CliLogitsJsonOnCheckpointWithoutTokenizer) {
  const std::string cmd = std::string(TB_CLI) + " logits --model " + kGpt2.string() + " --tokens 5,17,96 --json";
  FILE* p = popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string out;
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof buf, p)) out.append(buf, n);
  ASSERT_EQ(pclose(p), 0);
  const auto j = nlohmann::json::parse(out);
  ASSERT_EQ(j["logits"].size(), 3u);
  EXPECT_EQ(j["logits"][0].size(), 97u);
}

// `logits --precision bf16` runs the mixed-precision matmuls: close to, but not equal to,
// fp32 on the default model; an unknown precision is a usage error naming the flag.
TEST(ModelIo, CliLogitsInBf16) {
  const std::string model = std::string(TB_SOURCE_DIR) + "/models/default";
  auto run = [&](const std::string& prec) {
    const std::string cmd = std::string(TB_CLI) + " logits --model " + model + " --tokens 5,17,96,300 --json --precision " + prec;
    FILE* p = popen(cmd.c_str(), "r");
    std::string out;
    char buf[4096];
    while (size_t n = fread(buf, 1, sizeof buf, p)) out.append(buf, n);
    EXPECT_EQ(pclose(p), 0) << prec;
    return nlohmann::json::parse(out)["logits"];
  };
  if (!tb::dnn::info().bf16_supported) {
    // The CLI refuses bf16 on such a CPU (exit 2, one line naming the reason); hold that,
    // then skip the comparison the hardware cannot make.
    const std::string cmd = std::string(TB_CLI) + " logits --model " + model + " --tokens 5 --precision bf16 2>&1 >/dev/null";
    FILE* p = popen(cmd.c_str(), "r");
    std::string err;
    char buf[4096];
    while (size_t n = fread(buf, 1, sizeof buf, p)) err.append(buf, n);
    const int status = pclose(p);
    ASSERT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), 2) << err;
    EXPECT_NE(err.find("no native bf16"), std::string::npos) << err;
    GTEST_SKIP() << "CPU without native bf16 (oneDNN ISA " << tb::dnn::info().isa
                 << "): the bf16 logits cannot be compared; the CLI's refusal was checked";
  }
  const auto f32 = run("f32"), bf16 = run("bf16");
  ASSERT_EQ(f32.size(), bf16.size());
  double scale = 0, err = 0;
  for (size_t t = 0; t < f32.size(); ++t)
    for (size_t v = 0; v < f32[t].size(); ++v) {
      scale = std::max(scale, std::fabs(f32[t][v].get<double>()));
      err = std::max(err, std::fabs(f32[t][v].get<double>() - bf16[t][v].get<double>()));
    }
  EXPECT_LE(err / scale, 2e-2);
  EXPECT_GT(err, 0.0);
  const std::string bad = std::string(TB_CLI) + " logits --model " + model + " --tokens 1 --precision fp16 2>/dev/null";
  const int status = std::system(bad.c_str());
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 2);
}
#endif

}  // namespace
