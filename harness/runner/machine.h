// What machine a run happened on, for records, profiles and model cards: CPU model, thread
// count, host name, the ISA oneDNN dispatched to and the library/compiler versions.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace tb::runner {

struct MachineInfo {
  std::string host;
  std::string cpu;
  int threads = 1;     // OpenMP threads used by tunebench (OMP_NUM_THREADS or all cores)
  int cores = 1;       // online logical CPUs
  std::string isa;     // oneDNN's effective ISA
  std::string onednn;  // oneDNN version
  std::string compiler;
  nlohmann::json to_json() const;
  std::string summary() const;  // "AMD EPYC, 2 threads, avx512_core_bf16"
};

MachineInfo machine_info();

}  // namespace tb::runner
