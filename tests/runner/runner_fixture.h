// Shared set-up of the runner tests: a temp directory holding a tiny random Llama model with
// a tokenizer trained on the tiny-sst2 sentences (tasks/examples/tiny-sst2.ini is the task),
// and a helper that runs the built CLI (TB_CLI) capturing exit code, stdout and stderr.
#pragma once

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "harness/core/model.h"
#include "harness/core/model_io.h"
#include "harness/core/tokenizer.h"
#include "harness/runner/record.h"

namespace tb::testing {

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

class RunnerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("tb_runner_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    task_file_ = fs::path(TB_SOURCE_DIR) / "tasks/examples/tiny-sst2.ini";
    model_dir_ = dir_ / "model";
    make_tiny_model(model_dir_);
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  static ModelConfig tiny_config(int64_t vocab) {
    ModelConfig c;
    c.family = Family::llama;
    c.model_type = "llama";
    c.vocab_size = vocab;
    c.hidden = 32;
    c.n_layer = 2;
    c.n_head = 4;
    c.n_kv_head = 2;
    c.head_dim = 8;
    c.intermediate = 64;
    c.max_positions = 64;
    return c;
  }

  void make_tiny_model(const fs::path& dir) {
    fs::create_directories(dir);
    std::vector<std::string> texts;
    std::ifstream tsv(fs::path(TB_SOURCE_DIR) / "tasks/examples/tiny-sst2.tsv");
    for (std::string line; std::getline(tsv, line);) texts.push_back(line);
    texts.push_back("the quick brown fox jumps over the lazy dog. In the beginning was the word.");
    const auto tok = Tokenizer::train(texts, 300, {"<|endoftext|>"});
    tok.save((dir / "tokenizer.json").string());
    Model m(tiny_config(tok.vocab_size()));
    m.init_random(7, 0.1f);
    save_model(m, dir);
    config_ = m.config();
  }

  // Runs `tunebench <args>` with OMP_NUM_THREADS=1.
  // `env`: more VAR=value assignments for the command (already shell-quoted).
  CliResult cli(const std::string& args, const std::string& env = "") const {
    const fs::path out = dir_ / "stdout.txt", err = dir_ / "stderr.txt";
    const std::string cmd = "OMP_NUM_THREADS=1 " + env + " " + shell_quote(TB_CLI) + " " + args + " >" + shell_quote(out.string()) +
                            " 2>" + shell_quote(err.string());
    const int status = std::system(cmd.c_str());
    CliResult r;
    r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    r.out = slurp(out);
    r.err = slurp(err);
    return r;
  }

  // The common flags of a run on the tiny model and task, writing to `out`.
  std::string run_args(const std::string& methods, const fs::path& out, const std::string& extra = "") const {
    return "run --methods " + methods + " --tasks tiny-sst2 --task-file " + shell_quote(task_file_.string()) +
           " --model " + shell_quote(model_dir_.string()) + " --out " + shell_quote(out.string()) + " " + extra;
  }

  static std::set<std::string> record_names(const fs::path& dir) {
    std::set<std::string> names;
    for (const auto& e : fs::directory_iterator(dir))
      if (runner::is_record_filename(e.path().filename().string())) names.insert(e.path().filename().string());
    return names;
  }

  // Files a finished run must not leave behind: temp files of atomic writes, adaptation dirs.
  static std::vector<std::string> hidden_files(const fs::path& dir) {
    std::vector<std::string> hidden;
    for (const auto& e : fs::directory_iterator(dir))
      if (e.path().filename().string()[0] == '.') hidden.push_back(e.path().filename().string());
    return hidden;
  }

  // A killed matrix's run child dies with it (PR_SET_PDEATHSIG), which can take a moment on
  // a loaded machine; until then its temp file is not debris. Waits (at most 20 s) until no
  // writer of a hidden file in `out` is alive (or it is a zombie).
  static void wait_for_writers(const fs::path& out) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    auto alive = [&] {
      if (!fs::exists(out)) return false;
      for (const auto& h : hidden_files(out)) {
        const auto pid = static_cast<pid_t>(std::atoll(h.substr(h.find_last_of('.') + 1).c_str()));
        if (pid <= 0 || ::kill(pid, 0) != 0) continue;
        std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
        std::string line;
        std::getline(stat, line);
        const auto close = line.rfind(')');
        if (close == std::string::npos || close + 2 >= line.size() || line[close + 2] != 'Z') return true;
      }
      return false;
    };
    while (alive() && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }

  fs::path dir_, task_file_, model_dir_;
  ModelConfig config_;
};

}  // namespace tb::testing
