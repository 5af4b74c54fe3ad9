// Machine description from /proc/cpuinfo, OpenMP and the oneDNN layer.
#include "harness/runner/machine.h"

#include <omp.h>
#include <unistd.h>

#include <fstream>
#include <thread>

#include "harness/core/dnnl/dnn.h"

namespace tb::runner {

MachineInfo machine_info() {
  MachineInfo m;
  char host[256] = {0};
  if (gethostname(host, sizeof host - 1) == 0) m.host = host;
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("model name", 0) == 0) {
      const auto colon = line.find(':');
      if (colon != std::string::npos) m.cpu = line.substr(line.find_first_not_of(' ', colon + 1));
      break;
    }
  if (m.cpu.empty()) m.cpu = "unknown";
  m.threads = omp_get_max_threads();
  m.cores = static_cast<int>(std::thread::hardware_concurrency());
  const auto d = dnn::info();
  m.isa = d.isa;
  m.onednn = d.version;
  m.compiler = std::string("g++ ") + __VERSION__;
  return m;
}

nlohmann::json MachineInfo::to_json() const {
  return {{"host", host}, {"cpu", cpu}, {"threads", threads}, {"cores", cores},
          {"isa", isa}, {"onednn_version", onednn}, {"compiler", compiler}};
}

std::string MachineInfo::summary() const {
  return cpu + ", " + std::to_string(threads) + " thread" + (threads == 1 ? "" : "s") + " of " +
         std::to_string(cores) + " cores, oneDNN " + onednn + " on " + isa;
}

}  // namespace tb::runner
