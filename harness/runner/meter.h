// What the runner measures around a method, beyond what the method meters itself:
// resident memory from /proc/self/status (current and peak, with the peak reset at the start
// of each run's child process so it is per run), a steady clock, the machine's measured
// fp32 matmul peak (the denominator of every "fraction of peak"), and the progress line
// printed on stderr while a matrix runs.
#pragma once

#include <cstdint>
#include <string>

namespace tb::runner {

// VmRSS / VmHWM of this process in bytes (0 when /proc is unavailable).
int64_t rss_bytes();
int64_t peak_rss_bytes();
// Resets VmHWM to the current RSS (Linux: "5" into /proc/self/clear_refs); false if the
// kernel refused, in which case the peak also covers what the process did before.
bool reset_peak_rss();

// Seconds on a monotonic clock.
double now_seconds();

// "1:05:03", "4:07", "0:09".
std::string format_duration(double seconds);

// The machine's matmul peak, the denominator of every "fraction of peak" (the run records'
// and `tunebench profile`'s alike): an n×n×n matmul through the oneDNN layer the model
// uses, one warm-up, best of `reps`, in GFLOP/s. fp32 (bf16 = false) or bf16 operands with
// fp32 accumulation, the two precisions a model runs in; bf16 needs dnn::info().bf16_supported.
constexpr int64_t kPeakMatmulSize = 2048;
constexpr int kPeakMatmulReps = 5;
double measure_matmul_peak_gflops(int64_t n = kPeakMatmulSize, int reps = kPeakMatmulReps, bool bf16 = false);

// The progress line of one run of a matrix: "[run k/n] method task seed | phase step/total
// | loss | tokens/s | ETA run, ETA matrix". On a terminal it rewrites one line; otherwise
// (logs) it prints a line at most every `log_interval` seconds.
class ProgressLine {
 public:
  // runs_done_seconds: wall seconds the matrix has spent on runs 1..k-1 (for the matrix ETA).
  ProgressLine(int64_t k, int64_t n, std::string label, double runs_done_seconds,
               double log_interval = 10.0);
  void update(const std::string& phase, int64_t step, int64_t total, double loss, double tokens_per_s);
  // Final line of the run (always printed): status and wall seconds.
  void finish(const std::string& status, double seconds);

 private:
  void print(const std::string& text, bool force);
  int64_t k_, n_;
  std::string label_;
  double runs_done_seconds_;
  double log_interval_;
  double start_;
  double phase_start_ = 0.0;
  std::string phase_;
  double last_print_ = -1e300;
  bool tty_;
};

}  // namespace tb::runner
