// End-to-end tests of `tunebench inspect`: runs the built CLI (TB_CLI) on checkpoints written
// by the safetensors writer and on malformed files, checking exit codes, stdout and the
// one-line stderr contract of main().
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "harness/core/safetensors.h"

namespace fs = std::filesystem;

namespace {

struct CliResult {
  int exit_code;
  std::string out;
  std::string err;
};

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

std::vector<std::string> lines(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

class CliInspect : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("tb_cli_inspect_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  CliResult run(const std::string& args) {
    const fs::path out = dir_ / "stdout.txt", err = dir_ / "stderr.txt";
    const std::string cmd = quote(TB_CLI) + " inspect " + args + " >" + quote(out.string()) +
                            " 2>" + quote(err.string());
    const int status = std::system(cmd.c_str());
    EXPECT_TRUE(WIFEXITED(status)) << cmd;
    return {WEXITSTATUS(status), slurp(out), slurp(err)};
  }

  fs::path dir_;
};

const std::vector<float> kWte(12, 0.25f);
const std::vector<float> kBias = {1, 2, 3};

void write_model(const fs::path& file) {
  tb::write_safetensors(
      file,
      std::vector<tb::TensorToWrite>{
          {"transformer.wte.weight", {4, 3}, kWte.data(), tb::DType::BF16},
          {"transformer.h.0.attn.c_attn.bias", {3}, kBias.data(), tb::DType::F32}},
      {{"format", "pt"}});
}

}  // namespace

TEST_F(CliInspect, GoodFileListsTensorsAndParameterCount) {
  write_model(dir_ / "m.safetensors");
  const auto r = run(quote((dir_ / "m.safetensors").string()));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.err, "");
  EXPECT_NE(r.out.find("transformer.wte.weight"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("BF16"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("[4, 3]"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("transformer.h.0.attn.c_attn.bias"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("parameters: 15\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("format = pt"), std::string::npos) << r.out;
}

TEST_F(CliInspect, DirectoryJsonIncludesConfigAndShards) {
  tb::write_safetensors(dir_ / "s1.safetensors",
                        std::vector<tb::TensorToWrite>{{"a", {2, 2}, kWte.data(), tb::DType::F32}});
  tb::write_safetensors(dir_ / "s2.safetensors",
                        std::vector<tb::TensorToWrite>{{"b", {3}, kBias.data(), tb::DType::F16}});
  std::ofstream(dir_ / "model.safetensors.index.json")
      << R"({"weight_map": {"a": "s1.safetensors", "b": "s2.safetensors"}})";
  std::ofstream(dir_ / "config.json") << R"({"model_type": "gpt2", "n_embd": 3})";

  const auto r = run(quote(dir_.string()) + " --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j.at("layout"), "sharded");
  EXPECT_EQ(j.at("parameters"), 7);
  EXPECT_EQ(j.at("config").at("n_embd"), 3);
  ASSERT_EQ(j.at("tensors").size(), 2u);
  EXPECT_EQ(j.at("tensors")[1].at("name"), "b");
  EXPECT_EQ(j.at("tensors")[1].at("file"), "s2.safetensors");
  EXPECT_EQ(j.at("tensors")[1].at("dtype"), "F16");

  const auto text = run(quote(dir_.string()));
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_NE(text.out.find("\"model_type\": \"gpt2\""), std::string::npos)
      << text.out;  // pretty config
  EXPECT_NE(text.out.find("s2.safetensors"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("parameters: 7\n"), std::string::npos) << text.out;
}

TEST_F(CliInspect, MalformedFileExitsTwoWithOneLineNamingFileAndDefect) {
  const std::string header = R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})";
  std::string bytes(8, '\0');
  bytes[0] = static_cast<char>(header.size());
  bytes += header + std::string(8, '\0');
  const fs::path bad = dir_ / "bad.safetensors";
  std::ofstream(bad, std::ios::binary) << bytes;

  const auto r = run(quote(bad.string()));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(r.out, "");
  const auto err = lines(r.err);
  ASSERT_EQ(err.size(), 1u) << r.err;
  EXPECT_NE(err[0].find(bad.string()), std::string::npos) << err[0];
  EXPECT_NE(err[0].find("tensor 'w'"), std::string::npos) << err[0];
  EXPECT_NE(err[0].find("shape/byte size mismatch"), std::string::npos) << err[0];

  std::ofstream(bad, std::ios::binary) << "abc";
  const auto truncated = run(quote(bad.string()));
  EXPECT_EQ(truncated.exit_code, 2);
  ASSERT_EQ(lines(truncated.err).size(), 1u) << truncated.err;
  EXPECT_NE(truncated.err.find(bad.string() + ": file is 3 bytes"), std::string::npos)
      << truncated.err;
}

TEST_F(CliInspect, UsageErrorsAndHelp) {
  const auto help = run("--help");
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_NE(help.out.find("usage: tunebench inspect PATH"), std::string::npos) << help.out;

  const auto missing = run("");
  EXPECT_EQ(missing.exit_code, 2);
  EXPECT_EQ(lines(missing.err).size(), 1u) << missing.err;

  const auto absent = run(quote((dir_ / "nope").string()));
  EXPECT_EQ(absent.exit_code, 2);
  EXPECT_NE(absent.err.find("nope"), std::string::npos) << absent.err;
}
