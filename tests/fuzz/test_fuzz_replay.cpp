// Replays every fuzz seed (tests/fuzz/corpus/<target>/) and every crash found so far
// (tests/fuzz/regressions/<target>/) through its target in the normal test suite, so a fixed
// parser bug stays fixed on machines that never run the fuzzers. Each must end in success or
// a tb::InputError; anything else fails the test naming the file.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <ostream>
#include <string>
#include <vector>

#include "tests/fuzz/targets.h"

namespace tb::fuzz {
// Test names and failures show the target's name, not its bytes.
void PrintTo(const Target& t, std::ostream* os) { *os << t.name; }
}  // namespace tb::fuzz

namespace tb::test {
namespace {

namespace fs = std::filesystem;

std::vector<fs::path> files_under(const fs::path& dir) {
  std::vector<fs::path> out;
  if (fs::is_directory(dir))
    for (const auto& e : fs::directory_iterator(dir))
      if (e.is_regular_file() && e.path().filename().string()[0] != '.') out.push_back(e.path());
  std::sort(out.begin(), out.end());
  return out;
}

class FuzzReplay : public testing::TestWithParam<fuzz::Target> {};

TEST_P(FuzzReplay, SeedsAndRegressionsEndInSuccessOrInputError) {
  const auto& t = GetParam();
  const fs::path root = fs::path(TB_SOURCE_DIR) / "tests" / "fuzz";
  const auto seeds = files_under(root / "corpus" / t.name);
  EXPECT_FALSE(seeds.empty()) << "no seed corpus in tests/fuzz/corpus/" << t.name;
  auto all = seeds;
  for (auto& r : files_under(root / "regressions" / t.name)) all.push_back(r);
  for (const auto& f : all) {
    std::ifstream in(f, std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    try {
      fuzz::run_one(t, reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
    } catch (const std::exception& e) {
      ADD_FAILURE() << f << ": " << e.what();
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Targets, FuzzReplay, testing::ValuesIn(fuzz::targets()),
                         [](const testing::TestParamInfo<fuzz::Target>& i) { return std::string(i.param.name); });

TEST(FuzzReplay, EveryCorpusFolderBelongsToATarget) {
  const fs::path root = fs::path(TB_SOURCE_DIR) / "tests" / "fuzz";
  for (const char* kind : {"corpus", "regressions", "dicts"}) {
    if (!fs::is_directory(root / kind)) continue;
    for (const auto& e : fs::directory_iterator(root / kind)) {
      const auto name = e.path().stem().string();
      EXPECT_NE(fuzz::find_target(name), nullptr) << e.path() << " names no fuzz target";
    }
  }
}

}  // namespace
}  // namespace tb::test
