#include "tensor/dtype.h"

#include <gtest/gtest.h>

#include <cmath>

namespace whale {
namespace {

TEST(DType, E4M3TableHasTheFormatsKnownValues) {
  EXPECT_EQ(e4m3_to_f32(0x00), 0.0f);
  EXPECT_EQ(e4m3_to_f32(0x38), 1.0f);                  // exponent 7 = bias
  EXPECT_EQ(e4m3_to_f32(0x7e), 448.0f);                // largest finite
  EXPECT_EQ(e4m3_to_f32(0x01), std::ldexp(1.0f, -9));  // smallest subnormal
  EXPECT_EQ(e4m3_to_f32(0x08), std::ldexp(1.0f, -6));  // smallest normal
  EXPECT_EQ(e4m3_to_f32(0xb8), -1.0f);
  EXPECT_TRUE(std::isnan(e4m3_to_f32(0x7f)));
  EXPECT_TRUE(std::isnan(e4m3_to_f32(0xff)));
}

TEST(DType, E4M3RoundTripsEveryFiniteCodeAndRoundsToNearestEven) {
  for (int code = 0; code < 256; ++code) {
    if ((code & 0x7f) == 0x7f) continue;
    float v = e4m3_to_f32(static_cast<uint8_t>(code));
    if (code == 0x80) continue;  // -0 encodes as 0x80 or 0x00; both decode to zero
    EXPECT_EQ(f32_to_e4m3(v), code) << code;
  }
  EXPECT_EQ(f32_to_e4m3(1000.0f), 0x7e);  // saturates
  EXPECT_EQ(f32_to_e4m3(-1000.0f), 0xfe);
  EXPECT_EQ(f32_to_e4m3(1.0625f), 0x38);  // halfway 1 and 1.125: to even (1.0)
  EXPECT_EQ(f32_to_e4m3(1.1875f), 0x3a);  // halfway 1.125 and 1.25: to even (1.25)
  EXPECT_EQ(f32_to_e4m3(1.07f), 0x39);
}

TEST(DType, Bf16AndF16RoundToNearestEven) {
  EXPECT_EQ(f32_to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(bf16_to_f32(0x3f80), 1.0f);
  // 1 + 2^-8 is halfway between bf16 1.0 and 1 + 2^-7: ties to even (1.0).
  EXPECT_EQ(f32_to_bf16(1.0f + std::ldexp(1.0f, -8)), 0x3f80);
  EXPECT_EQ(f32_to_bf16(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3f82);
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(NAN))));
  for (float v : {0.0f, 1.0f, -2.5f, 65504.0f, 6.1035156e-05f, 5.9604645e-08f, 0.333251953125f})
    EXPECT_EQ(f16_to_f32(f32_to_f16(v)), v) << v;
  EXPECT_EQ(f32_to_f16(1.0f), 0x3c00);
  EXPECT_TRUE(std::isinf(f16_to_f32(f32_to_f16(1e6f))));
}

// Every half-precision code against the format's definition (sign, 5-bit exponent biased by 15,
// 10-bit mantissa; subnormals below exponent 1, infinities and NaNs at 31).
TEST(DType, EveryF16CodeConvertsByTheDefinition) {
  for (uint32_t code = 0; code < 0x10000; ++code) {
    const int sign = code >> 15, exponent = (code >> 10) & 0x1f, mantissa = code & 0x3ff;
    const float got = f16_to_f32(static_cast<uint16_t>(code));
    if (exponent == 31 && mantissa) {
      ASSERT_TRUE(std::isnan(got)) << code;
      continue;
    }
    const double magnitude = exponent == 31 ? INFINITY
                             : exponent == 0
                                 ? std::ldexp(static_cast<double>(mantissa), -24)
                                 : std::ldexp(static_cast<double>(mantissa | 0x400), exponent - 25);
    const float want = static_cast<float>(sign ? -magnitude : magnitude);
    ASSERT_EQ(got, want) << code;
    ASSERT_EQ(std::signbit(got), sign == 1) << code;  // −0 too
  }
}

}  // namespace
}  // namespace whale
