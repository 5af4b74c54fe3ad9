// RSS from /proc/self/status, clocks, the matmul peak and the progress line; see meter.h.
#include "harness/runner/meter.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <vector>

#include "harness/core/dnnl/dnn.h"

namespace tb::runner {
namespace {

int64_t status_kb(const std::string& key) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(key, 0) == 0 && line.size() > key.size() && line[key.size()] == ':')
      return std::strtoll(line.c_str() + key.size() + 1, nullptr, 10);
  return 0;
}

}  // namespace

int64_t rss_bytes() { return status_kb("VmRSS") * 1024; }
int64_t peak_rss_bytes() { return status_kb("VmHWM") * 1024; }

bool reset_peak_rss() {
  std::ofstream out("/proc/self/clear_refs");
  if (!out) return false;
  out << "5";
  out.flush();
  return static_cast<bool>(out);
}

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const auto s = static_cast<int64_t>(std::llround(seconds));
  char buf[32];
  if (s >= 3600)
    std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", static_cast<long long>(s / 3600),
                  static_cast<long long>(s / 60 % 60), static_cast<long long>(s % 60));
  else
    std::snprintf(buf, sizeof buf, "%lld:%02lld", static_cast<long long>(s / 60), static_cast<long long>(s % 60));
  return buf;
}

double measure_matmul_peak_gflops(int64_t n, int reps, bool bf16) {
  std::vector<float> a(static_cast<std::size_t>(n * n)), b(a.size()), c(a.size());
  // Deterministic, well-scaled values; the content does not matter for the speed.
  for (std::size_t i = 0; i < a.size(); ++i) {
    a[i] = static_cast<float>(i % 7) * 0.125f - 0.375f;
    b[i] = static_cast<float>(i % 5) * 0.25f - 0.5f;
  }
  std::vector<std::uint16_t> a16(bf16 ? a.size() : 0), b16(bf16 ? b.size() : 0);
  if (bf16) {
    dnn::to_bf16(a16.data(), a.data(), n * n);
    dnn::to_bf16(b16.data(), b.data(), n * n);
  }
  auto once = [&] {
    if (bf16)
      dnn::matmul(c.data(), dnn::View::dense({n, n}), a16.data(), dnn::View::dense({n, n}, dnn::DType::bf16),
                  b16.data(), dnn::View::dense({n, n}, dnn::DType::bf16), nullptr);
    else
      dnn::gemm(c.data(), a.data(), b.data(), nullptr, n, n, n, false, false);
  };
  once();
  double best = 1e300;
  for (int r = 0; r < std::max(reps, 1); ++r) {
    const double t0 = now_seconds();
    once();
    best = std::min(best, now_seconds() - t0);
  }
  return 2.0 * static_cast<double>(n) * static_cast<double>(n) * static_cast<double>(n) / best / 1e9;
}

ProgressLine::ProgressLine(int64_t k, int64_t n, std::string label, double runs_done_seconds,
                           double log_interval)
    : k_(k), n_(n), label_(std::move(label)), runs_done_seconds_(runs_done_seconds),
      log_interval_(log_interval), start_(now_seconds()), tty_(::isatty(STDERR_FILENO) == 1) {}

void ProgressLine::update(const std::string& phase, int64_t step, int64_t total, double loss,
                          double tokens_per_s) {
  const double now = now_seconds();
  if (phase != phase_) {
    phase_ = phase;
    phase_start_ = now;
  }
  std::ostringstream os;
  os << "[run " << k_ << "/" << n_ << "] " << label_ << " | " << phase;
  if (total > 0) os << " " << step << "/" << total;
  else if (step > 0) os << " " << step;
  if (std::isfinite(loss)) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.4f", loss);
    os << " | loss " << buf;
  }
  if (tokens_per_s > 0) os << " | " << static_cast<int64_t>(tokens_per_s) << " tok/s";
  // The run's ETA extrapolates the current phase; the matrix ETA assumes the remaining runs
  // take as long as the average finished one (or this one, before any has finished).
  double run_eta = NAN;
  if (total > 0 && step > 0) run_eta = (now - phase_start_) * static_cast<double>(total - step) / static_cast<double>(step);
  const double this_run = now - start_;
  const double per_run = k_ > 1 ? runs_done_seconds_ / static_cast<double>(k_ - 1)
                                : this_run + (std::isfinite(run_eta) ? run_eta : 0.0);
  const double matrix_eta = (std::isfinite(run_eta) ? run_eta : std::max(per_run - this_run, 0.0)) +
                            per_run * static_cast<double>(n_ - k_);
  os << " | ETA " << (std::isfinite(run_eta) ? format_duration(run_eta) : std::string("?")) << " run, "
     << format_duration(matrix_eta) << " matrix";
  print(os.str(), false);
}

void ProgressLine::finish(const std::string& status, double seconds) {
  std::ostringstream os;
  os << "[run " << k_ << "/" << n_ << "] " << label_ << " | " << status << " in " << format_duration(seconds);
  print(os.str(), true);
  if (tty_) std::fputc('\n', stderr);
}

void ProgressLine::print(const std::string& text, bool force) {
  const double now = now_seconds();
  if (tty_) {
    if (!force && now - last_print_ < 0.2) return;
    std::fprintf(stderr, "\r\033[K%s", text.c_str());
  } else {
    if (!force && now - last_print_ < log_interval_) return;
    std::fprintf(stderr, "%s\n", text.c_str());
  }
  std::fflush(stderr);
  last_print_ = now;
}

}  // namespace tb::runner
