// Tests of the shared basics: the check macro and the typed error hierarchy.
#include <gtest/gtest.h>

#include "harness/base/errors.h"

TEST(Common, CheckMacroThrowsWithFileAndLine) {
  try {
    int x = 3;
    TB_CHECK(x == 4, "x was " << x);
    FAIL() << "TB_CHECK did not throw";
  } catch (const tb::Error& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("test_common.cpp"), std::string::npos) << m;
    EXPECT_NE(m.find("x == 4"), std::string::npos) << m;
    EXPECT_NE(m.find("x was 3"), std::string::npos) << m;
  }
}

TEST(Common, InputErrorsAreErrors) {
  EXPECT_THROW(throw tb::FormatError("f.safetensors: bad"), tb::InputError);
  EXPECT_THROW(throw tb::ModelError("config.json: field n_embd"), tb::InputError);
  EXPECT_THROW(throw tb::InputError("x"), tb::Error);
}
