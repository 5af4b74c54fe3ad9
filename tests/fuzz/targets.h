// Fuzz targets: one per parser of input that comes from users or from the net. Each takes
// arbitrary bytes, hands them to the parser exactly as a user's file would reach it (written
// to a file of the right name, read back through the public API), and holds the promise of
// every parser: it returns, or it throws tb::InputError (the one-line message, exit 2).
// Anything else — another exception type, a crash, a sanitizer report, a hang — is a bug.
//
// The same functions run three ways: under libFuzzer (tests/fuzz/fuzz_main.cpp, built by
// `make fuzz` with clang, ASan and UBSan), and in the normal test suite, which replays every
// seed in tests/fuzz/corpus/<target>/ and every crash found so far in
// tests/fuzz/regressions/<target>/ (tests/fuzz/test_fuzz_replay.cpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace tb::fuzz {

struct Target {
  const char* name;  // the folder name under tests/fuzz/{corpus,regressions,dicts}
  const char* what;  // the parser, for `make fuzz`'s report
  void (*run)(const uint8_t* data, std::size_t size);
};

const std::vector<Target>& targets();
const Target* find_target(const std::string& name);

// Runs one input: InputError and its subclasses are the parser's clean refusal and are
// swallowed; any other exception is rethrown (under libFuzzer: reported as a crash with the
// exception's message).
void run_one(const Target& t, const uint8_t* data, std::size_t size);

}  // namespace tb::fuzz
