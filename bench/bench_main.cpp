// Entry point of the tunebench_bench binary (Google Benchmark). Adds what oneDNN dispatched
// to (version, ISA, bf16 support) to the benchmark context, so every JSON report says
// which kernels its GFLOP/s figures come from.
#include <benchmark/benchmark.h>

#include "harness/core/dnnl/dnn.h"

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  const tb::dnn::Info info = tb::dnn::info();
  benchmark::AddCustomContext("onednn_version", info.version);
  benchmark::AddCustomContext("onednn_isa", info.isa);
  benchmark::AddCustomContext("bf16_supported", info.bf16_supported ? "true" : "false");
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
