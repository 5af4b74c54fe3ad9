// `tunebench pretrain` under the faults of a long job on a shared node, through the built CLI
// on a tiny model (1 layer, 32 wide, 16 steps of 64 tokens, a checkpoint after every step):
// the disk fills while a checkpoint is written (the LD_PRELOAD shim of tests/faults), then the
// job is SIGKILLed at two later steps; each time `--resume` continues from the last complete
// checkpoint (also from the state a kill between the checkpoint's two renames leaves), and the
// model it ends with is bitwise the model of an uninterrupted run.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <thread>

#include "tests/runner/runner_fixture.h"

namespace tb::testing {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

class PretrainFaults : public RunnerTest {
 protected:
  static std::string args(const fs::path& out) {
    return "pretrain --out " + shell_quote(out.string()) +
           " --tokens 1024 --layers 1 --dim 32 --heads 2 --kv-heads 1 --context 32 --batch 2 --seq 32 --vocab 300"
           " --warmup 2 --checkpoint-minutes 0 --quiet";
  }

  // The step of the checkpoint in `out` (-1 when there is none yet).
  static int64_t checkpoint_step(const fs::path& out) {
    std::ifstream in(out / "ckpt" / "state.json");
    if (!in) return -1;
    const auto j = json::parse(in, nullptr, false);
    return j.is_object() && j.contains("step") && j["step"].is_number_integer() ? j["step"].get<int64_t>() : -1;
  }

  // Runs `tunebench <a>` in the background (steps slowed by 150 ms so that a kill finds it
  // training), SIGKILLs it once its checkpoint reaches `step`, and returns that step.
  int64_t kill_at_step(const std::string& a, const fs::path& out, int64_t step) const {
    const pid_t pid = ::fork();
    if (pid == 0) {
      ::setenv("OMP_NUM_THREADS", "1", 1);
      ::setenv("TB_TEST_STEP_DELAY_MS", "150", 1);
      const std::string cmd = "exec " + shell_quote(TB_CLI) + " " + a + " >/dev/null 2>&1";
      ::execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    const auto deadline = Clock::now() + std::chrono::minutes(5);
    int64_t seen = -1;
    int status = 0;
    while (Clock::now() < deadline) {
      seen = checkpoint_step(out);
      if (seen >= step) break;
      if (::waitpid(pid, &status, WNOHANG) == pid) {
        ADD_FAILURE() << "pretrain ended (status " << status << ") before its checkpoint reached step " << step;
        return seen;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &status, 0);
    EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "status " << status;
    return seen;
  }
};

TEST_F(PretrainFaults, AFullDiskAndTwoKillsThenResumeEndWithTheUninterruptedModel) {
  const fs::path ref = dir_ / "reference", out = dir_ / "faulted";
  const auto r0 = cli(args(ref));
  ASSERT_EQ(r0.exit_code, 0) << r0.err;
  ASSERT_EQ(checkpoint_step(ref), 16);
  const std::string expected = slurp(ref / "model.safetensors");
  ASSERT_FALSE(expected.empty());

  // The disk: room for the corpus, the tokenizer and one checkpoint and a half, so the
  // second checkpoint cannot be written.
  std::uintmax_t corpus = 0, ckpt = 0;
  for (const char* f : {"corpus.tokens", "corpus.json", "tokenizer.json"}) corpus += fs::file_size(ref / f);
  for (const auto& e : fs::directory_iterator(ref / "ckpt")) ckpt += e.file_size();
  const std::uintmax_t quota = corpus + ckpt + ckpt / 2;
  fs::create_directories(out);
  const auto full = cli(args(out), "LD_PRELOAD=" + shell_quote(TB_ENOSPC_SHIM) + " TB_FAULT_ENOSPC_PATH=" +
                                       shell_quote(fs::absolute(out).string()) +
                                       " TB_FAULT_ENOSPC_BYTES=" + std::to_string(quota));
  EXPECT_EQ(full.exit_code, 2) << full.err;
  std::string last = full.err.substr(0, full.err.find_last_not_of('\n') + 1);
  last = last.substr(last.find_last_of('\n') + 1);
  EXPECT_NE(last.find((out / "ckpt.next").string()), std::string::npos) << full.err;
  EXPECT_NE(last.find("No space left on device"), std::string::npos) << full.err;
  // The last good checkpoint is intact; nothing half-written is left to be read.
  EXPECT_EQ(checkpoint_step(out), 1);
  EXPECT_FALSE(fs::exists(out / "ckpt.next"));
  EXPECT_FALSE(fs::exists(out / "model.safetensors"));
  for (const auto& e : fs::recursive_directory_iterator(out))
    EXPECT_EQ(e.path().filename().string().find(".tmp"), std::string::npos) << e.path();

  // Two kills during the resumed training, each resumed again.
  EXPECT_GE(kill_at_step(args(out) + " --resume", out, 5), 5);
  EXPECT_GE(kill_at_step(args(out) + " --resume", out, 10), 10);
  // And the state a kill between the checkpoint's two renames leaves (ckpt.old, no ckpt):
  // --resume goes on from ckpt.old rather than starting over (which would rebuild the corpus).
  fs::remove_all(out / "ckpt.old");
  fs::rename(out / "ckpt", out / "ckpt.old");
  const auto corpus_time = fs::last_write_time(out / "corpus.tokens");
  const auto resumed = cli(args(out) + " --resume");
  ASSERT_EQ(resumed.exit_code, 0) << resumed.err;
  EXPECT_EQ(fs::last_write_time(out / "corpus.tokens"), corpus_time) << "pretrain started over instead of resuming";
  EXPECT_EQ(checkpoint_step(out), 16);
  EXPECT_TRUE(slurp(out / "model.safetensors") == expected) << "the resumed model differs from the uninterrupted one";
}

}  // namespace
}  // namespace tb::testing
