// libFuzzer entry point: one executable, tunebench_fuzz, whose target is chosen by the
// environment variable TB_FUZZ_TARGET (a folder name of tests/fuzz/corpus; scripts/fuzz.sh
// sets it). An exception other than InputError escaping the parser is reported as a crash
// with its message.
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <typeinfo>

#include "tests/fuzz/targets.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  static const tb::fuzz::Target* target = [] {
    const char* name = std::getenv("TB_FUZZ_TARGET");
    const auto* t = name ? tb::fuzz::find_target(name) : nullptr;
    if (!t) {
      std::fprintf(stderr, "fuzz: set TB_FUZZ_TARGET to one of:");
      for (const auto& k : tb::fuzz::targets()) std::fprintf(stderr, " %s", k.name);
      std::fprintf(stderr, "\n");
      std::exit(2);
    }
    return t;
  }();
  try {
    tb::fuzz::run_one(*target, data, size);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fuzz %s: uncaught %s: %s\n", target->name, typeid(e).name(), e.what());
    std::abort();
  }
  return 0;
}
