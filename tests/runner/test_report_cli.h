// Helpers shared by the report, compare and profile tests: run the built CLI (TB_CLI) with
// captured stdout/stderr and exit code, a scratch directory per test, the hand-written
// record fixtures, and JSON file round trips for injecting changes into copies of them.
#pragma once

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

namespace tb::test {

namespace fs = std::filesystem;

struct CliResult {
  int exit_code = -1;
  std::string out, err;
};

inline std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

inline nlohmann::json read_json(const fs::path& p) { return nlohmann::json::parse(slurp(p)); }

inline void write_json(const fs::path& p, const nlohmann::json& j) {
  std::ofstream out(p, std::ios::binary);
  out << j.dump(1) << "\n";
}

// The hand-written records: shard0 (sentiment-imdb) and shard1 (spam, with failed runs).
inline fs::path fixtures() { return fs::path(TB_SOURCE_DIR) / "tests" / "runner" / "fixtures"; }

class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() /
           ("tb_" + std::string(info->test_suite_name()) + "_" + info->name() + "_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Runs `tunebench <args>` (args already shell-quoted where needed).
  CliResult run(const std::string& args) {
    const fs::path out = dir_ / ".stdout", err = dir_ / ".stderr";
    const std::string cmd = "OMP_NUM_THREADS=1 " + shell_quote(TB_CLI) + " " + args + " >" + shell_quote(out.string()) +
                            " 2>" + shell_quote(err.string());
    const int status = std::system(cmd.c_str());
    EXPECT_TRUE(WIFEXITED(status)) << cmd;
    return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, slurp(out), slurp(err)};
  }

  // A copy of a fixture directory in the scratch directory.
  fs::path copy_fixture(const std::string& name, const std::string& as) {
    const fs::path to = dir_ / as;
    fs::create_directories(to);
    fs::copy(fixtures() / "results" / name, to, fs::copy_options::recursive);
    return to;
  }

  fs::path dir_;
};

}  // namespace tb::test
