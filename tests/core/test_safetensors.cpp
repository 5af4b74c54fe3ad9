// Tests of the checkpoint storage layer: dtype conversions against hand-known bit patterns
// and exhaustively over every 16-bit value, the safetensors writer byte for byte, reader
// round trips, malformed files (each must raise tb::FormatError naming the file and the
// defect — this file runs under ASan/UBSan too), and Hugging Face checkpoint directories.
#include <gtest/gtest.h>
#include <unistd.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "harness/core/checkpoint_dir.h"
#include "harness/base/errors.h"
#include "harness/core/dtype.h"
#include "harness/core/safetensors.h"

namespace fs = std::filesystem;

namespace {

float bits_f32(std::uint32_t u) { return std::bit_cast<float>(u); }
std::uint32_t f32_bits(float f) { return std::bit_cast<std::uint32_t>(f); }

bool is_f16_nan(std::uint16_t h) { return (h & 0x7C00u) == 0x7C00u && (h & 0x03FFu) != 0; }
bool is_bf16_nan(std::uint16_t h) { return (h & 0x7F80u) == 0x7F80u && (h & 0x007Fu) != 0; }

// A fresh directory per test, removed afterwards.
class TempDir : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() / ("tb_st_" + std::to_string(::getpid()) + "_" +
                                        info->test_suite_name() + "_" + info->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  fs::path write_bytes(const std::string& name, const std::string& bytes) {
    const fs::path p = dir_ / name;
    std::ofstream(p, std::ios::binary)
        .write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    return p;
  }
  void write_json(const fs::path& p, const nlohmann::json& j) { std::ofstream(p) << j.dump(2); }

  fs::path dir_;
};

std::string le64(std::uint64_t v) {
  std::string s(8, '\0');
  std::memcpy(s.data(), &v, 8);
  return s;
}

// A file made of a header string and `data_bytes` zero bytes of data.
std::string st_file(const std::string& header, std::size_t data_bytes) {
  return le64(header.size()) + header + std::string(data_bytes, '\0');
}

}  // namespace

// ---- dtypes -------------------------------------------------------------------------------

TEST(SafetensorsDType, NamesSizesAndParsing) {
  const std::vector<std::pair<std::string, std::size_t>> expected = {
      {"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"I16", 2}, {"U16", 2}, {"F16", 2}, {"BF16", 2},
      {"I32", 4},  {"U32", 4}, {"F32", 4}, {"F64", 8}, {"I64", 8}, {"U64", 8}};
  for (const auto& [name, size] : expected) {
    const auto dt = tb::dtype_from_name(name);
    ASSERT_TRUE(dt.has_value()) << name;
    EXPECT_EQ(tb::dtype_name(*dt), name);
    EXPECT_EQ(tb::dtype_size(*dt), size) << name;
  }
  EXPECT_FALSE(tb::dtype_from_name("f32").has_value());
  EXPECT_FALSE(tb::dtype_from_name("F8_E4M3").has_value());
  EXPECT_FALSE(tb::dtype_from_name("").has_value());
}

TEST(SafetensorsDType, Bf16HandKnownBits) {
  EXPECT_EQ(tb::f32_to_bf16(1.0f), 0x3F80);
  EXPECT_EQ(tb::f32_to_bf16(-0.0f), 0x8000);
  EXPECT_EQ(tb::f32_to_bf16(bits_f32(0x3F808000u)), 0x3F80);              // tie, even below: down
  EXPECT_EQ(tb::f32_to_bf16(bits_f32(0x3F818000u)), 0x3F82);              // tie, odd below: up
  EXPECT_EQ(tb::f32_to_bf16(bits_f32(0x3F808001u)), 0x3F81);              // just above the tie
  EXPECT_EQ(tb::f32_to_bf16(bits_f32(0x3F807FFFu)), 0x3F80);              // just below the tie
  EXPECT_EQ(tb::f32_to_bf16(std::numeric_limits<float>::max()), 0x7F80);  // rounds to Inf
  EXPECT_EQ(tb::f32_to_bf16(std::numeric_limits<float>::infinity()), 0x7F80);
  EXPECT_EQ(tb::f32_to_bf16(-std::numeric_limits<float>::infinity()), 0xFF80);
  EXPECT_EQ(tb::f32_to_bf16(bits_f32(0x7FC00000u)), 0x7FC0);
  // Signalling NaNs whose payload lives in the low bits must not round into Inf.
  EXPECT_TRUE(is_bf16_nan(tb::f32_to_bf16(bits_f32(0x7F800001u))));
  EXPECT_TRUE(is_bf16_nan(tb::f32_to_bf16(bits_f32(0x7FFFFFFFu))));
  EXPECT_EQ(tb::f32_to_bf16(bits_f32(0xFF800001u)) & 0x8000, 0x8000);
  EXPECT_EQ(tb::f32_to_bf16(bits_f32(0x00000001u)), 0x0000);  // fp32 subnormal
  EXPECT_EQ(tb::bf16_to_f32(0x4049), 3.140625f);
  EXPECT_EQ(tb::bf16_to_f32(0xC000), -2.0f);
  EXPECT_TRUE(std::isinf(tb::bf16_to_f32(0xFF80)));
}

TEST(SafetensorsDType, F16HandKnownBits) {
  EXPECT_EQ(tb::f32_to_f16(1.0f), 0x3C00);
  EXPECT_EQ(tb::f32_to_f16(-2.0f), 0xC000);
  EXPECT_EQ(tb::f32_to_f16(-0.0f), 0x8000);
  EXPECT_EQ(tb::f32_to_f16(65504.0f), 0x7BFF);  // largest finite
  EXPECT_EQ(tb::f32_to_f16(65519.0f), 0x7BFF);  // below the tie with 65536
  EXPECT_EQ(tb::f32_to_f16(65520.0f), 0x7C00);  // tie to even = Inf
  EXPECT_EQ(tb::f32_to_f16(1e10f), 0x7C00);
  EXPECT_EQ(tb::f32_to_f16(std::ldexp(1.0f, -14)), 0x0400);     // smallest normal
  EXPECT_EQ(tb::f32_to_f16(std::ldexp(1.0f, -24)), 0x0001);     // smallest subnormal
  EXPECT_EQ(tb::f32_to_f16(std::ldexp(1023.0f, -24)), 0x03FF);  // largest subnormal
  EXPECT_EQ(tb::f32_to_f16(std::ldexp(1.0f, -25)), 0x0000);     // tie 0|1 -> 0
  EXPECT_EQ(tb::f32_to_f16(std::ldexp(3.0f, -25)), 0x0002);     // tie 1|2 -> 2
  EXPECT_EQ(tb::f32_to_f16(std::ldexp(1.0f, -25) * 1.0001f), 0x0001);
  EXPECT_EQ(tb::f32_to_f16(-std::ldexp(1.0f, -24)), 0x8001);
  EXPECT_EQ(tb::f32_to_f16(1.0f + std::ldexp(1.0f, -11)), 0x3C00);  // tie, even below
  EXPECT_EQ(tb::f32_to_f16(1.0f + std::ldexp(3.0f, -11)), 0x3C02);  // tie, odd below
  EXPECT_EQ(tb::f32_to_f16(std::numeric_limits<float>::infinity()), 0x7C00);
  EXPECT_EQ(tb::f32_to_f16(-std::numeric_limits<float>::infinity()), 0xFC00);
  EXPECT_TRUE(is_f16_nan(tb::f32_to_f16(std::numeric_limits<float>::quiet_NaN())));
  EXPECT_TRUE(is_f16_nan(tb::f32_to_f16(bits_f32(0x7F800001u))));
  EXPECT_EQ(tb::f32_to_f16(bits_f32(0xFFC00000u)) & 0x8000, 0x8000);

  EXPECT_EQ(tb::f16_to_f32(0x3555), 0.333251953125f);
  EXPECT_EQ(tb::f16_to_f32(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(tb::f16_to_f32(0x03FF), std::ldexp(1023.0f, -24));
  EXPECT_EQ(tb::f16_to_f32(0x8001), -std::ldexp(1.0f, -24));
  EXPECT_EQ(tb::f16_to_f32(0x7BFF), 65504.0f);
  EXPECT_EQ(f32_bits(tb::f16_to_f32(0x8000)), 0x80000000u);
  EXPECT_EQ(tb::f16_to_f32(0x7C00), std::numeric_limits<float>::infinity());
  EXPECT_EQ(tb::f16_to_f32(0xFC00), -std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(tb::f16_to_f32(0x7E00)));
  EXPECT_TRUE(std::isnan(tb::f16_to_f32(0x7C01)));
}

// Every half value: exact to float and back; every midpoint between neighbours rounds to the
// even one, and the floats just beside a midpoint round to the nearer neighbour.
TEST(SafetensorsDType, F16ExhaustiveRoundTripAndMidpoints) {
  for (std::uint32_t h = 0; h < 0x10000; ++h) {
    const auto hh = static_cast<std::uint16_t>(h);
    const float f = tb::f16_to_f32(hh);
    if (is_f16_nan(hh)) {
      EXPECT_TRUE(std::isnan(f)) << h;
      EXPECT_TRUE(is_f16_nan(tb::f32_to_f16(f))) << h;
      EXPECT_EQ(tb::f32_to_f16(f) & 0x8000, h & 0x8000) << h;
      continue;
    }
    ASSERT_EQ(tb::f32_to_f16(f), hh) << h;
    const std::uint32_t mag = h & 0x7FFF;
    if (mag >= 0x7BFF) continue;  // no finite upper neighbour
    const float up = tb::f16_to_f32(static_cast<std::uint16_t>(h + 1));
    const float mid = (f + up) / 2;  // exact: needs one more mantissa bit than half has
    const std::uint16_t even = (h & 1) ? static_cast<std::uint16_t>(h + 1) : hh;
    ASSERT_EQ(tb::f32_to_f16(mid), even) << h;
    const float toward_up = std::nextafter(mid, up);
    const float toward_down = std::nextafter(mid, f);
    ASSERT_EQ(tb::f32_to_f16(toward_up), static_cast<std::uint16_t>(h + 1)) << h;
    ASSERT_EQ(tb::f32_to_f16(toward_down), hh) << h;
  }
}

TEST(SafetensorsDType, Bf16ExhaustiveRoundTripAndMidpoints) {
  for (std::uint32_t h = 0; h < 0x10000; ++h) {
    const auto hh = static_cast<std::uint16_t>(h);
    const float f = tb::bf16_to_f32(hh);
    if (is_bf16_nan(hh)) {
      EXPECT_TRUE(is_bf16_nan(tb::f32_to_bf16(f))) << h;
      continue;
    }
    ASSERT_EQ(tb::f32_to_bf16(f), hh) << h;
    if ((h & 0x7FFF) >= 0x7F7F) continue;
    const float mid = bits_f32(f32_bits(f) + 0x8000u);  // neighbours are 0x10000 apart in bits
    const std::uint16_t even = (h & 1) ? static_cast<std::uint16_t>(h + 1) : hh;
    ASSERT_EQ(tb::f32_to_bf16(mid), even) << h;
    ASSERT_EQ(tb::f32_to_bf16(bits_f32(f32_bits(mid) + 1)), static_cast<std::uint16_t>(h + 1)) << h;
    ASSERT_EQ(tb::f32_to_bf16(bits_f32(f32_bits(mid) - 1)), hh) << h;
  }
}

TEST(SafetensorsDType, BulkConversionsMatchScalarOnUnalignedBuffers) {
  std::vector<float> src;
  for (int i = 0; i < 1000; ++i)
    src.push_back(std::ldexp(static_cast<float>(i * 7919 % 2003) - 1000.5f, i % 60 - 40));
  src.push_back(std::numeric_limits<float>::infinity());
  src.push_back(-0.0f);
  const std::size_t n = src.size();
  std::vector<std::byte> raw(2 * n + 1);
  std::vector<float> back(n);

  tb::f32_to_f16(src.data(), raw.data() + 1, n);
  tb::f16_to_f32(raw.data() + 1, back.data(), n);
  for (std::size_t i = 0; i < n; ++i) {
    std::uint16_t h;
    std::memcpy(&h, raw.data() + 1 + 2 * i, 2);
    ASSERT_EQ(h, tb::f32_to_f16(src[i])) << i;
    ASSERT_EQ(f32_bits(back[i]), f32_bits(tb::f16_to_f32(h))) << i;
  }
  tb::f32_to_bf16(src.data(), raw.data() + 1, n);
  tb::bf16_to_f32(raw.data() + 1, back.data(), n);
  for (std::size_t i = 0; i < n; ++i) {
    std::uint16_t h;
    std::memcpy(&h, raw.data() + 1 + 2 * i, 2);
    ASSERT_EQ(h, tb::f32_to_bf16(src[i])) << i;
    ASSERT_EQ(f32_bits(back[i]), f32_bits(tb::bf16_to_f32(h))) << i;
  }
}

// ---- safetensors: writer and reader -------------------------------------------------------

using Safetensors = TempDir;

TEST_F(Safetensors, WriterMatchesHandBuiltBytes) {
  const std::vector<float> b = {1.0f, -2.0f};
  const std::vector<float> a = {1.0f};
  const std::vector<tb::TensorToWrite> tensors = {{"a", {1}, a.data(), tb::DType::F16},
                                                  {"b", {2}, b.data(), tb::DType::F32}};
  const fs::path p = dir_ / "tiny.safetensors";
  tb::write_safetensors(p, tensors, {{"format", "pt"}});

  // F32 sorts before F16 (descending dtype order), header padded with spaces to 144 bytes.
  const std::string header =
      R"({"__metadata__":{"format":"pt"},"b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
      R"("a":{"dtype":"F16","shape":[1],"data_offsets":[8,10]}}     )";
  std::string expected = std::string("\x90\0\0\0\0\0\0\0", 8) + header;
  expected += std::string("\x00\x00\x80\x3F", 4);  //  1.0f
  expected += std::string("\x00\x00\x00\xC0", 4);  // -2.0f
  expected += std::string("\x00\x3C", 2);          //  1.0 as f16
  std::ifstream in(p, std::ios::binary);
  const std::string got((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(got, expected);
  EXPECT_EQ(header.size(), 144u);
  for (const auto& e : fs::directory_iterator(dir_))
    EXPECT_EQ(e.path().filename(), "tiny.safetensors") << "left-over temporary file";
}

TEST_F(Safetensors, RoundTripPerDtype) {
  std::vector<float> values;
  for (int i = 0; i < 776; ++i)
    values.push_back(std::sin(0.37f * i) * std::ldexp(1.0f, i % 40 - 28));
  values.push_back(std::ldexp(1.0f, -24));
  values.push_back(std::ldexp(3.0f, -25));
  values.push_back(70000.0f);
  values.push_back(-std::numeric_limits<float>::infinity());
  const std::int64_t n = static_cast<std::int64_t>(values.size());
  const float scalar = 42.5f;
  const std::vector<tb::TensorToWrite> tensors = {
      {"w.f32", {n / 3, 3}, values.data(), tb::DType::F32},
      {"w.f16", {n}, values.data(), tb::DType::F16},
      {"w.bf16", {3, n / 3}, values.data(), tb::DType::BF16},
      {"empty", {0, 5}, nullptr, tb::DType::F32},
      {"scalar", {}, &scalar, tb::DType::BF16},
  };
  ASSERT_EQ(n % 3, 0);
  const fs::path p = dir_ / "rt.safetensors";
  tb::write_safetensors(p, tensors, {{"format", "pt"}, {"note", "round \"trip\" ü"}});

  const auto f = tb::SafetensorsFile::open(p);
  ASSERT_EQ(f.tensors().size(), 5u);
  EXPECT_EQ(f.metadata().at("note"), "round \"trip\" ü");
  EXPECT_EQ(f.at("w.f32").dtype, tb::DType::F32);
  EXPECT_EQ(f.at("w.f32").shape, (std::vector<std::int64_t>{n / 3, 3}));
  EXPECT_EQ(f.at("w.bf16").dtype, tb::DType::BF16);
  EXPECT_EQ(f.at("w.f16").dtype, tb::DType::F16);
  EXPECT_EQ(f.at("scalar").numel(), 1);
  EXPECT_EQ(f.at("empty").numel(), 0);
  EXPECT_EQ(f.find("nope"), nullptr);
  for (std::size_t i = 1; i < f.tensors().size(); ++i)
    EXPECT_LE(f.tensors()[i - 1].end, f.tensors()[i].begin) << "tensors() is in data order";

  const auto f32 = f.read_f32("w.f32");
  const auto f16 = f.read_f32("w.f16");
  const auto bf16 = f.read_f32("w.bf16");
  for (std::size_t i = 0; i < values.size(); ++i) {
    ASSERT_EQ(f32_bits(f32[i]), f32_bits(values[i])) << i;
    ASSERT_EQ(f32_bits(f16[i]), f32_bits(tb::f16_to_f32(tb::f32_to_f16(values[i])))) << i;
    ASSERT_EQ(f32_bits(bf16[i]), f32_bits(tb::bf16_to_f32(tb::f32_to_bf16(values[i])))) << i;
  }
  EXPECT_EQ(f16[values.size() - 2], std::numeric_limits<float>::infinity());  // 70000 overflows f16
  EXPECT_EQ(f.read_f32("scalar"), std::vector<float>{42.5f});
  EXPECT_TRUE(f.read_f32("empty").empty());
  EXPECT_EQ(f.bytes(f.at("w.f16")).size(), values.size() * 2);

  // Overwriting an existing file replaces it.
  tb::write_safetensors(p, std::vector<tb::TensorToWrite>{{"only", {1}, &scalar, tb::DType::F32}});
  const auto g = tb::SafetensorsFile::open(p);
  ASSERT_EQ(g.tensors().size(), 1u);
  EXPECT_TRUE(g.metadata().empty());
  EXPECT_EQ(g.read_f32("only"), std::vector<float>{42.5f});
}

// A file from another writer: no padding, header order unlike data order, an F32 tensor at an
// odd offset, F64, gaps between tensors.
TEST_F(Safetensors, ReadsForeignLayoutUnalignedAndF64) {
  const std::string header = R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[3,11]},)"
                             R"("h":{"dtype":"F16","shape":[1],"data_offsets":[0,2]},)"
                             R"("d":{"dtype":"F64","shape":[1],"data_offsets":[12,20]},)"
                             R"("i":{"dtype":"I32","shape":[1],"data_offsets":[20,24]}})";
  std::string data(24, '\0');
  const std::uint16_t h = 0xC000;
  const float x[2] = {0.5f, -7.25f};
  const double d = 1.0 / 3.0;
  std::memcpy(&data[0], &h, 2);
  std::memcpy(&data[3], x, 8);
  std::memcpy(&data[12], &d, 8);
  const fs::path p = write_bytes("foreign.safetensors", le64(header.size()) + header + data);
  const auto f = tb::SafetensorsFile::open(p);
  ASSERT_EQ(f.tensors().size(), 4u);
  EXPECT_EQ(f.tensors()[0].name, "h");
  EXPECT_EQ(f.tensors()[1].name, "x");
  EXPECT_EQ(f.read_f32("h"), std::vector<float>{-2.0f});
  EXPECT_EQ(f.read_f32("x"), (std::vector<float>{0.5f, -7.25f}));
  EXPECT_EQ(f.read_f32("d"), std::vector<float>{static_cast<float>(d)});

  try {
    (void)f.read_f32("i");
    FAIL() << "I32 read as float";
  } catch (const tb::FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("tensor 'i'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("I32"), std::string::npos) << e.what();
  }
  std::vector<float> wrong(3);
  try {
    f.read_f32("x", wrong);
    FAIL() << "size mismatch accepted";
  } catch (const tb::FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("tensor 'x'"), std::string::npos) << e.what();
  }
  EXPECT_THROW((void)f.read_f32("missing"), tb::ModelError);
}

TEST_F(Safetensors, MissingFileIsInputError) {
  EXPECT_THROW((void)tb::SafetensorsFile::open(dir_ / "absent.safetensors"), tb::InputError);
  EXPECT_THROW((void)tb::SafetensorsFile::open(dir_), tb::InputError);
}

TEST_F(Safetensors, WriterRejectsBadTensorsAndUnwritablePaths) {
  const float v = 1.0f;
  EXPECT_THROW(tb::write_safetensors(
                   dir_ / "a", std::vector<tb::TensorToWrite>{{"t", {1}, &v, tb::DType::F32},
                                                              {"t", {1}, &v, tb::DType::F32}}),
               tb::Error);
  EXPECT_THROW(tb::write_safetensors(
                   dir_ / "a", std::vector<tb::TensorToWrite>{{"t", {-1}, &v, tb::DType::F32}}),
               tb::Error);
  EXPECT_THROW(tb::write_safetensors(
                   dir_ / "a", std::vector<tb::TensorToWrite>{{"t", {1}, &v, tb::DType::I32}}),
               tb::Error);
  EXPECT_THROW(
      tb::write_safetensors(dir_ / "no" / "such" / "dir.safetensors",
                            std::vector<tb::TensorToWrite>{{"t", {1}, &v, tb::DType::F32}}),
      tb::InputError);
}

// ---- malformed files ----------------------------------------------------------------------

struct Malformed {
  const char* label;
  std::string bytes;
  const char* defect;  // must appear in the message
};

TEST_F(Safetensors, MalformedFilesRaiseFormatErrorNamingTheDefect) {
  const std::string good_entry = R"("w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
  const std::vector<Malformed> cases = {
      {"empty", "", "shorter than the 8-byte"},
      {"truncated", std::string("\x10\0\0\0\0", 5), "shorter than the 8-byte"},
      {"header_longer_than_file", le64(100) + std::string(40, ' '), "exceeds the file size"},
      {"huge_header", le64(std::uint64_t{1} << 62) + "{}", "exceeds the limit"},
      {"max_header", le64(~std::uint64_t{0}) + "{}", "exceeds the limit"},
      {"invalid_json", st_file(R"({"w":{"dtype":"F32",)", 8), "not valid JSON"},
      {"invalid_utf8", st_file("{\"\xff\":{}}", 0), "not valid JSON"},
      {"trailing_garbage", st_file("{} x", 0), "not valid JSON"},
      {"empty_header", st_file("", 8), "not valid JSON"},
      {"not_object", st_file("[1,2,3]", 8), "expected a JSON object"},
      {"entry_not_object", st_file(R"({"w":[1]})", 8), "tensor 'w': entry is array"},
      {"unknown_dtype", st_file(R"({"w":{"dtype":"F8","shape":[2],"data_offsets":[0,2]}})", 2),
       "tensor 'w': unknown dtype \"F8\""},
      {"dtype_not_string", st_file(R"({"w":{"dtype":4,"shape":[1],"data_offsets":[0,4]}})", 4),
       "tensor 'w': dtype is integer"},
      {"missing_dtype", st_file(R"({"w":{"shape":[1],"data_offsets":[0,4]}})", 4),
       "missing field 'dtype'"},
      {"missing_offsets", st_file(R"({"w":{"dtype":"F32","shape":[1]}})", 4),
       "missing field 'data_offsets'"},
      {"unexpected_field",
       st_file(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":1}})", 4),
       "unexpected field 'x'"},
      {"shape_byte_mismatch",
       st_file(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8),
       "tensor 'w': shape [3] of F32 needs 3 x 4 bytes"},
      {"offsets_out_of_range",
       st_file(R"({"w":{"dtype":"F32","shape":[250],"data_offsets":[0,1000]}})", 8),
       "tensor 'w': data_offsets [0,1000] end beyond the data section of 8 bytes"},
      {"data_truncated", st_file("{" + good_entry + "}", 5),
       "tensor 'w': data_offsets [0,8] end beyond"},
      {"overlap",
       st_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
               R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
               12),
       "tensor 'b': data_offsets [4,12] overlap tensor 'a' [0,8]"},
      {"overlap_contained",
       st_file(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
               R"("b":{"dtype":"U8","shape":[1],"data_offsets":[8,9]},)"
               R"("c":{"dtype":"U8","shape":[1],"data_offsets":[4,5]}})",
               16),
       "overlap tensor 'a'"},
      {"begin_after_end", st_file(R"({"w":{"dtype":"F32","shape":[0],"data_offsets":[8,4]}})", 8),
       "tensor 'w': data_offsets [8,4] has begin > end"},
      {"offsets_not_pair",
       st_file(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}})", 8), "is not a pair"},
      {"offsets_float", st_file(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4.0]}})", 8),
       "is not a pair"},
      {"offsets_negative", st_file(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}})", 8),
       "is not a pair"},
      {"duplicate_name", st_file("{" + good_entry + "," + good_entry + "}", 8),
       "duplicate key 'w'"},
      {"duplicate_field",
       st_file(R"({"w":{"dtype":"F32","dtype":"F16","shape":[1],"data_offsets":[0,4]}})", 4),
       "duplicate key 'dtype'"},
      {"negative_shape", st_file(R"({"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8),
       "tensor 'w': shape [-2] has integer -2, expected a non-negative integer"},
      {"shape_not_array", st_file(R"({"w":{"dtype":"F32","shape":2,"data_offsets":[0,8]}})", 8),
       "shape is integer 2, expected an array"},
      {"shape_overflow",
       st_file(R"({"w":{"dtype":"U8","shape":[4294967296,4294967296],"data_offsets":[0,8]}})", 8),
       "overflows the element count"},
      {"shape_bytes_overflow",
       st_file(R"({"w":{"dtype":"U64","shape":[4611686018427387904],"data_offsets":[0,8]}})", 8),
       "shape/byte size mismatch"},
      {"shape_huge_literal",
       st_file(R"({"w":{"dtype":"U8","shape":[1e30],"data_offsets":[0,8]}})", 8),
       "expected a non-negative integer"},
      {"duplicate_empty_name",
       st_file(
           R"({"":{"dtype":"U8","shape":[0],"data_offsets":[0,0]},"":{"dtype":"U8","shape":[0],"data_offsets":[0,0]}})",
           0),
       "duplicate key ''"},
      {"name_with_newline",
       st_file(R"({"a\nb":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8),
       "tensor 'a\\x0ab': shape [3]"},
      {"metadata_value_not_string",
       st_file(R"({"__metadata__":{"format":1},)" + good_entry + "}", 8),
       "__metadata__ field 'format' is integer 1, expected a string"},
      {"metadata_not_object", st_file(R"({"__metadata__":"pt",)" + good_entry + "}", 8),
       "__metadata__ is string, expected an object"},
  };
  for (const auto& c : cases) {
    const fs::path p = write_bytes(std::string(c.label) + ".safetensors", c.bytes);
    try {
      (void)tb::SafetensorsFile::open(p);
      ADD_FAILURE() << c.label << ": opened without error";
    } catch (const tb::FormatError& e) {
      const std::string m = e.what();
      EXPECT_EQ(m.rfind(p.string() + ": ", 0), 0u)
          << c.label << ": message does not start with the path: " << m;
      EXPECT_NE(m.find(c.defect), std::string::npos) << c.label << ": " << m;
      EXPECT_EQ(m.find('\n'), std::string::npos) << c.label << ": message is not one line";
    } catch (const std::exception& e) {
      ADD_FAILURE() << c.label << ": wrong exception type: " << e.what();
    }
  }
}

// Random byte edits and truncations of a valid file: opening either succeeds (and then every
// float tensor reads back) or raises FormatError; anything else, or an out-of-bounds read
// caught by the sanitizer build, fails.
TEST_F(Safetensors, MutatedFilesOpenOrRaiseFormatError) {
  const std::vector<float> v = {1, 2, 3, 4, 5, 6};
  const fs::path good = dir_ / "good.safetensors";
  tb::write_safetensors(good,
                        std::vector<tb::TensorToWrite>{{"a", {2, 3}, v.data(), tb::DType::F32},
                                                       {"b", {3}, v.data(), tb::DType::F16},
                                                       {"c", {1, 2}, v.data(), tb::DType::BF16}},
                        {{"format", "pt"}});
  std::ifstream in(good, std::ios::binary);
  const std::string original((std::istreambuf_iterator<char>(in)),
                             std::istreambuf_iterator<char>());
  std::mt19937 rng(1234);
  const std::string alphabet = "0123456789[]{},:\" -FBU8x";
  int opened = 0, rejected = 0;
  for (int iter = 0; iter < 3000; ++iter) {
    std::string bytes = original;
    const int edits = 1 + static_cast<int>(rng() % 3);
    for (int e = 0; e < edits; ++e) {
      const std::size_t pos = rng() % bytes.size();
      bytes[pos] =
          (rng() % 2) ? alphabet[rng() % alphabet.size()] : static_cast<char>(rng() & 0xFF);
    }
    if (rng() % 8 == 0) bytes.resize(rng() % bytes.size());
    const fs::path p = write_bytes("mutated.safetensors", bytes);
    try {
      const auto f = tb::SafetensorsFile::open(p);
      for (const auto& t : f.tensors()) {
        std::vector<float> out(static_cast<std::size_t>(t.numel()));
        if (t.dtype == tb::DType::F32 || t.dtype == tb::DType::F16 || t.dtype == tb::DType::BF16 ||
            t.dtype == tb::DType::F64)
          f.read_f32(t, out);
        else
          EXPECT_THROW(f.read_f32(t, out), tb::FormatError);
      }
      ++opened;
    } catch (const tb::FormatError&) {
      ++rejected;
    }
  }
  EXPECT_GT(opened, 0);
  EXPECT_GT(rejected, 0);
}

TEST_F(Safetensors, ZeroSizeTensorsMayShareOffsets) {
  const std::string header = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                             R"("z1":{"dtype":"F32","shape":[0],"data_offsets":[4,4]},)"
                             R"("z2":{"dtype":"BF16","shape":[3,0],"data_offsets":[8,8]}})";
  const auto f = tb::SafetensorsFile::open(write_bytes("z.safetensors", st_file(header, 8)));
  EXPECT_EQ(f.tensors().size(), 3u);
  EXPECT_EQ(f.at("z2").numel(), 0);
}

// ---- checkpoint directories ---------------------------------------------------------------

using SafetensorsCheckpointDir = TempDir;

namespace {

const std::vector<float> kA = {1, 2, 3, 4, 5, 6};
const std::vector<float> kB = {-1, -2};
const std::vector<float> kC = {0.5f};

// Two shards: a in shard 1 (F32), b and c in shard 2 (BF16, F16).
void write_two_shards(const fs::path& dir) {
  tb::write_safetensors(
      dir / "model-00001-of-00002.safetensors",
      std::vector<tb::TensorToWrite>{{"model.a", {2, 3}, kA.data(), tb::DType::F32}});
  tb::write_safetensors(
      dir / "model-00002-of-00002.safetensors",
      std::vector<tb::TensorToWrite>{{"model.b", {2}, kB.data(), tb::DType::BF16},
                                     {"model.c", {1}, kC.data(), tb::DType::F16}});
}

nlohmann::json two_shard_index() {
  return {{"metadata", {{"total_size", 34}}},
          {"weight_map",
           {{"model.a", "model-00001-of-00002.safetensors"},
            {"model.b", "model-00002-of-00002.safetensors"},
            {"model.c", "model-00002-of-00002.safetensors"}}}};
}

void expect_format_error(const fs::path& path, const std::string& must_start,
                         const std::vector<std::string>& parts) {
  try {
    (void)tb::CheckpointDir::open(path);
    ADD_FAILURE() << "opened without error";
  } catch (const tb::FormatError& e) {
    const std::string m = e.what();
    EXPECT_EQ(m.rfind(must_start, 0), 0u) << m;
    for (const auto& part : parts)
      EXPECT_NE(m.find(part), std::string::npos) << part << " not in: " << m;
  }
}

}  // namespace

TEST_F(SafetensorsCheckpointDir, ShardedLookupAcrossShards) {
  write_two_shards(dir_);
  write_json(dir_ / "model.safetensors.index.json", two_shard_index());
  write_json(dir_ / "config.json", {{"model_type", "llama"}, {"hidden_size", 3}});

  const auto c = tb::CheckpointDir::open(dir_);
  EXPECT_EQ(c.layout(), tb::CheckpointDir::Layout::Sharded);
  EXPECT_EQ(c.index_path(), dir_ / "model.safetensors.index.json");
  ASSERT_EQ(c.files().size(), 2u);
  EXPECT_EQ(c.tensor_names(), (std::vector<std::string>{"model.a", "model.b", "model.c"}));
  EXPECT_EQ(c.file_of("model.b").path(), dir_ / "model-00002-of-00002.safetensors");
  EXPECT_EQ(c.at("model.a").shape, (std::vector<std::int64_t>{2, 3}));
  EXPECT_EQ(c.read_f32("model.a"), kA);
  EXPECT_EQ(c.read_f32("model.b"), kB);  // small integers are exact in bf16
  std::vector<float> out(1);
  c.read_f32("model.c", out);
  EXPECT_EQ(out, kC);
  EXPECT_TRUE(c.has_config());
  EXPECT_EQ(c.config().at("hidden_size"), 3);
  EXPECT_FALSE(c.contains("model.d"));
  EXPECT_THROW((void)c.at("model.d"), tb::ModelError);
}

TEST_F(SafetensorsCheckpointDir, ShardedMissingShard) {
  write_two_shards(dir_);
  fs::remove(dir_ / "model-00002-of-00002.safetensors");
  write_json(dir_ / "model.safetensors.index.json", two_shard_index());
  expect_format_error(
      dir_, (dir_ / "model.safetensors.index.json").string() + ": ",
      {"shard 'model-00002-of-00002.safetensors'", "tensor 'model.b'", "does not exist"});
}

TEST_F(SafetensorsCheckpointDir, ShardedTensorMissingFromShard) {
  write_two_shards(dir_);
  auto index = two_shard_index();
  index["weight_map"]["model.d"] = "model-00001-of-00002.safetensors";
  write_json(dir_ / "model.safetensors.index.json", index);
  expect_format_error(dir_, (dir_ / "model.safetensors.index.json").string() + ": ",
                      {"tensor 'model.d'", "does not contain it"});
}

TEST_F(SafetensorsCheckpointDir, ShardedTensorNotInIndex) {
  write_two_shards(dir_);
  auto index = two_shard_index();
  index["weight_map"].erase("model.c");
  write_json(dir_ / "model.safetensors.index.json", index);
  expect_format_error(dir_, (dir_ / "model.safetensors.index.json").string() + ": ",
                      {"tensor 'model.c'", "does not map to it"});
}

TEST_F(SafetensorsCheckpointDir, ShardedBadIndexes) {
  write_two_shards(dir_);
  const fs::path index = dir_ / "model.safetensors.index.json";
  const std::string prefix = index.string() + ": ";
  write_json(index, {{"metadata", {}}});
  expect_format_error(dir_, prefix, {"missing object 'weight_map'"});
  write_json(index, {{"weight_map", {{"model.a", 3}}}});
  expect_format_error(dir_, prefix, {"tensor 'model.a'", "expected a shard file name"});
  write_json(index, {{"weight_map", {{"model.a", "../model-00001-of-00002.safetensors"}}}});
  expect_format_error(dir_, prefix, {"tensor 'model.a'", "not a file name inside"});
  std::ofstream(index) << R"({"weight_map": {"model.a": "x", "model.a": "y"}})";
  expect_format_error(dir_, prefix, {"duplicate key 'model.a'"});
  std::ofstream(index) << R"({"weight_map": )";
  expect_format_error(dir_, prefix, {"not valid JSON"});
}

TEST_F(SafetensorsCheckpointDir, CorruptShardNamesTheShard) {
  write_two_shards(dir_);
  write_json(dir_ / "model.safetensors.index.json", two_shard_index());
  write_bytes("model-00002-of-00002.safetensors", "abc");
  expect_format_error(dir_, (dir_ / "model-00002-of-00002.safetensors").string() + ": ",
                      {"shorter"});
}

TEST_F(SafetensorsCheckpointDir, SingleFileDirectoryAndBareFile) {
  tb::write_safetensors(dir_ / "model.safetensors",
                        std::vector<tb::TensorToWrite>{{"wte", {3, 2}, kA.data(), tb::DType::F32}});
  const auto no_config = tb::CheckpointDir::open(dir_);
  EXPECT_EQ(no_config.layout(), tb::CheckpointDir::Layout::Directory);
  EXPECT_FALSE(no_config.has_config());
  EXPECT_THROW((void)no_config.config(), tb::ModelError);

  write_json(dir_ / "config.json", {{"n_embd", 2}});
  const auto c = tb::CheckpointDir::open(dir_);
  EXPECT_EQ(c.config().at("n_embd"), 2);
  EXPECT_EQ(c.read_f32("wte"), kA);

  const auto bare = tb::CheckpointDir::open(dir_ / "model.safetensors");
  EXPECT_EQ(bare.layout(), tb::CheckpointDir::Layout::File);
  EXPECT_EQ(bare.tensor_names(), std::vector<std::string>{"wte"});
  EXPECT_FALSE(bare.has_config());
}

TEST_F(SafetensorsCheckpointDir, BadConfigAndMissingWeights) {
  EXPECT_THROW((void)tb::CheckpointDir::open(dir_), tb::InputError);  // no weights at all
  EXPECT_THROW((void)tb::CheckpointDir::open(dir_ / "absent"), tb::InputError);
  tb::write_safetensors(dir_ / "model.safetensors",
                        std::vector<tb::TensorToWrite>{{"wte", {6}, kA.data(), tb::DType::F32}});
  std::ofstream(dir_ / "config.json") << R"({"n_embd": 2,})";
  expect_format_error(dir_, (dir_ / "config.json").string() + ": ", {"not valid JSON"});
  std::ofstream(dir_ / "config.json") << "[2]";
  expect_format_error(dir_, (dir_ / "config.json").string() + ": ", {"expected a JSON object"});
}
