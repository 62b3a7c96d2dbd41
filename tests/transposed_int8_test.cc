// Products with a q8/q4 matrix's transpose (ops/transposed_int8.h, absorbed MLA's W_UKᵀ q_nope):
// the layout holds every stored value, the VNNI kernel matches its scalar reference (q8 bit for
// bit), and both stay within int8 activation rounding of the f32 product of the dequantized
// matrix.
#include "ops/transposed_int8.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "io/quantize.h"
#include "ops/precision.h"
#include "tensor/dtype.h"
#include "test_util.h"

namespace whale {
namespace {

using testing::random_vector;

// A random matrix quantized as `whale convert` stores it, and its transposed layout.
struct Transposed {
  std::vector<uint8_t> stored_codes, codes;
  std::vector<uint16_t> stored_scales, scales, mins;
  std::vector<float> dequantized;  // [rows, cols]
  TransposedInt8 w;

  Transposed(bool q4, int rows, int cols, std::mt19937& rng) {
    const std::vector<float> values = random_vector(static_cast<size_t>(rows) * cols, rng, 0.1f);
    const int groups = cols / 32;
    const size_t row_bytes = q4 ? cols / 2 : cols, row_scales = (q4 ? 2 : 1) * groups;
    stored_codes.resize(rows * row_bytes);
    stored_scales.resize(rows * row_scales);
    dequantized.resize(values.size());
    for (int r = 0; r < rows; ++r) {
      const float* v = values.data() + static_cast<size_t>(r) * cols;
      uint8_t* c = stored_codes.data() + r * row_bytes;
      uint16_t* s = stored_scales.data() + r * row_scales;
      if (q4)
        quantize_row_q4(v, cols, c, s);
      else
        quantize_row_q8(v, cols, reinterpret_cast<int8_t*>(c), s);
      for (int i = 0; i < cols; ++i) {
        const int g = i / 32, j = i % 32;
        float& d = dequantized[static_cast<size_t>(r) * cols + i];
        if (q4) {
          const int nibble = j < 16 ? c[g * 16 + j] & 15 : c[g * 16 + j - 16] >> 4;
          d = nibble * f16_to_f32(s[2 * g]) + f16_to_f32(s[2 * g + 1]);
        } else {
          d = static_cast<int8_t>(c[i]) * f16_to_f32(s[g]);
        }
      }
    }
    w.q4 = q4;
    w.rows = rows;
    w.cols = cols;
    codes.resize(w.code_bytes() + 64);  // + a line, to point the codes at one
    scales.resize(w.scale_count());
    mins.resize(q4 ? w.scale_count() : 0);
    uint8_t* aligned = codes.data() + (64 - reinterpret_cast<uintptr_t>(codes.data()) % 64) % 64;
    transpose_int8_rows(q4, rows, cols, stored_codes.data(), stored_scales.data(), aligned,
                        scales.data(), q4 ? mins.data() : nullptr);
    w.codes = aligned;
    w.scales = scales.data();
    w.mins = q4 ? mins.data() : nullptr;
  }
};

constexpr int kShapes[][2] = {{32, 32}, {128, 512}, {64, 96}, {96, 64}};

TEST(TransposedInt8, LayoutHoldsEveryStoredValue) {
  std::mt19937 rng(3);
  for (bool q4 : {false, true})
    for (const auto& shape : kShapes) {
      const Transposed t(q4, shape[0], shape[1], rng);
      for (int r = 0; r < shape[0]; ++r)
        for (int c = 0; c < shape[1]; ++c)
          ASSERT_EQ(transposed_int8_value(t.w, r, c), t.dequantized[r * shape[1] + c])
              << (q4 ? "q4 " : "q8 ") << r << "," << c;
    }
}

TEST(TransposedInt8, ReferenceIsTheProductUpToActivationRounding) {
  std::mt19937 rng(4);
  for (bool q4 : {false, true})
    for (const auto& shape : kShapes) {
      const int rows = shape[0], cols = shape[1];
      const Transposed t(q4, rows, cols, rng);
      const std::vector<float> p = random_vector(rows, rng);
      std::vector<float> y(cols);
      transposed_int8_product_reference(t.w, p.data(), y.data());
      double err = 0, norm = 0;
      for (int c = 0; c < cols; ++c) {
        double exact = 0;
        for (int r = 0; r < rows; ++r) exact += p[r] * t.dequantized[r * cols + c];
        err += (y[c] - exact) * (y[c] - exact);
        norm += exact * exact;
      }
      // int8 activations per 32 rows: 0.45–0.65% here (q4's nibbles taken as 0 … 15 instead of
      // centred on 8, as a first version did: 0.9–1.6%).
      EXPECT_LT(std::sqrt(err / norm), 0.01) << (q4 ? "q4 " : "q8 ") << rows << "×" << cols;
    }
}

TEST(TransposedInt8, KernelMatchesReference) {
  if (!vnni_available()) GTEST_SKIP() << "this CPU has no AVX512-VNNI";
  std::mt19937 rng(5);
  for (bool q4 : {false, true})
    for (const auto& shape : kShapes) {
      const int rows = shape[0], cols = shape[1];
      const Transposed t(q4, rows, cols, rng);
      for (int trial = 0; trial < 3; ++trial) {
        std::vector<float> p = random_vector(rows, rng);
        if (trial == 2) std::fill(p.begin(), p.begin() + 32, 0.0f);  // a row group of zeros
        std::vector<float> y(cols), ref(cols);
        transposed_int8_product(t.w, p.data(), y.data());
        transposed_int8_product_reference(t.w, p.data(), ref.data());
        for (int c = 0; c < cols; ++c) {
          if (q4)  // the minimums' sum in another order
            ASSERT_NEAR(y[c], ref[c], 1e-5 * (1 + std::fabs(ref[c]))) << rows << "×" << cols;
          else
            ASSERT_EQ(y[c], ref[c]) << "q8 " << rows << "×" << cols << " column " << c;
        }
      }
    }
}

TEST(TransposedInt8, RejectsShapesThatDoNotFit) {
  EXPECT_FALSE(transposed_int8_fit(48, 64));
  EXPECT_FALSE(transposed_int8_fit(64, 48));
  EXPECT_FALSE(transposed_int8_fit(kTransposedInt8MaxRows + 32, 64));
  std::vector<uint8_t> codes(64 * 48);
  std::vector<uint16_t> scales(64 * 2);
  EXPECT_THROW(transpose_int8_rows(false, 48, 64, codes.data(), scales.data(), codes.data(),
                                   scales.data(), nullptr),
               std::exception);
  // The product's own check: codes off a cache line (its whole-line loads), or a shape past the
  // activations' room on the stack.
  std::mt19937 rng(6);
  const Transposed t(false, 32, 32, rng);
  std::vector<float> p(32, 1.0f), y(32);
  TransposedInt8 off = t.w;
  off.codes += 1;
  EXPECT_THROW(transposed_int8_product(off, p.data(), y.data()), std::exception);
  TransposedInt8 tall = t.w;
  tall.rows = kTransposedInt8MaxRows + 32;
  EXPECT_THROW(transposed_int8_product(tall, p.data(), y.data()), std::exception);
}

}  // namespace
}  // namespace whale
