// q8 and q4 weights × int8 activations by AVX512-VNNI (ops/int8_gemm.h): the activation quantizer
// against its scalar reference and its error bound, decode's row dots and prefill's register
// tiles against a double-precision reference on the same quantized activations (over shapes
// crossing every tile, pass, step, block and mask edge), batch independence bit for bit, and
// linear_forward on the path against the exact product. Skipped on CPUs without AVX512-VNNI.
#include "ops/int8_gemm.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include "io/quantize.h"
#include "ops/kernels.h"
#include "ops/linear.h"
#include "ops/precision.h"
#include "tensor/dtype.h"
#include "test_util.h"

namespace whale {
namespace {

using testing::bits;
using testing::random_vector;

#define SKIP_WITHOUT_VNNI() \
  if (!vnni_available()) GTEST_SKIP() << "this CPU has no AVX512-VNNI"

int groups_of(int cols) {
  return (cols + 31) / 32;
}

// A random matrix quantized to q8 (dtype I8) or q4 (U8), and a Linear over it.
struct QuantMatrix {
  DType dtype;
  int rows, cols;
  std::vector<uint8_t> codes;  // q8 codes or q4 packed bytes
  std::vector<uint16_t> scales;
  Linear lin;
  QuantMatrix(DType dtype_, int rows_, int cols_, std::mt19937& rng)
      : dtype(dtype_), rows(rows_), cols(cols_) {
    const auto w = random_vector(static_cast<size_t>(rows) * cols, rng, 0.2f);
    lin.dtype = dtype;
    lin.rows = rows;
    lin.cols = cols;
    codes.resize(static_cast<size_t>(rows) * lin.row_bytes());
    scales.resize(static_cast<size_t>(rows) * groups_of(cols) * (dtype == DType::U8 ? 2 : 1));
    for (int r = 0; r < rows; ++r) {
      const float* wr = w.data() + static_cast<size_t>(r) * cols;
      uint8_t* cr = codes.data() + r * lin.row_bytes();
      if (dtype == DType::I8)
        quantize_row_q8(wr, cols, reinterpret_cast<int8_t*>(cr),
                        scales.data() + static_cast<size_t>(r) * groups_of(cols));
      else
        quantize_row_q4(wr, cols, cr, scales.data() + static_cast<size_t>(r) * 2 * groups_of(cols));
    }
    lin.data = codes.data();
    lin.qscale = scales.data();
  }
  const char* name() const { return dtype == DType::I8 ? "q8" : "q4"; }
  void dot_rows(int r, const Int8Activations& x, float* out) const {
    if (dtype == DType::I8)
      q8_dot_rows(reinterpret_cast<const int8_t*>(codes.data()) + static_cast<size_t>(r) * cols,
                  scales.data() + static_cast<size_t>(r) * groups_of(cols), cols, x, out);
    else
      q4_dot_rows(codes.data() + r * lin.row_bytes(),
                  scales.data() + static_cast<size_t>(r) * 2 * groups_of(cols), cols, x, out);
  }
  void gemm(const float* x, int T, float* y, int ldy) const {
    if (dtype == DType::I8)
      q8_gemm(reinterpret_cast<const int8_t*>(codes.data()), scales.data(), rows, cols, x, T, y,
              ldy);
    else
      q4_gemm(codes.data(), scales.data(), rows, cols, x, T, y, ldy);
  }
  void reference(const float* x, int T, float* y, int ldy) const {
    if (dtype == DType::I8)
      q8_gemm_reference(reinterpret_cast<const int8_t*>(codes.data()), scales.data(), rows, cols, x,
                        T, y, ldy);
    else
      q4_gemm_reference(codes.data(), scales.data(), rows, cols, x, T, y, ldy);
  }
  float weight(int r, int c) const {
    return dtype == DType::I8
               ? q8_element(
                     reinterpret_cast<const int8_t*>(codes.data()) + static_cast<size_t>(r) * cols,
                     scales.data() + static_cast<size_t>(r) * groups_of(cols), c)
               : q4_element(codes.data() + r * lin.row_bytes(),
                            scales.data() + static_cast<size_t>(r) * 2 * groups_of(cols), c);
  }
  // Σ_c |w[r, c] · x[c]|: the scale of an output's f32 rounding error.
  float abs_sum(int r, const float* x) const {
    double sum = 0;
    for (int c = 0; c < cols; ++c) sum += std::fabs(weight(r, c) * x[c]);
    return static_cast<float>(sum);
  }
  // Σ_c |w[r, c]| · (half a quantization step of x's group at c): the bound of the error that
  // rounding x to int8 adds to an output.
  float rounding_bound(int r, const float* x) const {
    double sum = 0;
    for (int g = 0; g < groups_of(cols); ++g) {
      float amax = 0, wsum = 0;
      for (int c = g * 32; c < std::min(cols, g * 32 + 32); ++c) {
        amax = std::max(amax, std::fabs(x[c]));
        wsum += std::fabs(weight(r, c));
      }
      sum += wsum * amax / 127 / 2;
    }
    return static_cast<float>(sum);
  }
};

TEST(Int8Gemm, ActivationQuantizationMatchesReferenceAndItsBound) {
  SKIP_WITHOUT_VNNI();
  std::mt19937 rng(21);
  for (int cols : {1, 31, 32, 33, 64, 65, 100, 300, 1000}) {
    const int T = 3;
    auto x = random_vector(static_cast<size_t>(T) * cols, rng);
    x[0] = 40;  // an outlier in the first group, and the second one all zeros
    if (cols >= 64) {
      for (int c = 32; c < 64; ++c) x[c] = 0;
    }
    Int8Activations fast, ref;
    quantize_activations(x.data(), T, cols, &fast);
    quantize_activations_reference(x.data(), T, cols, &ref);
    EXPECT_EQ(fast.blocks, (cols + 255) / 256);
    ASSERT_EQ(fast.data, ref.data) << "cols " << cols;  // codes, scales, sums, terms: all of it
    for (int t = 0; t < T; ++t) {
      // Every row on a cache line: the row dots' 64-byte loads never straddle two.
      ASSERT_EQ(reinterpret_cast<uintptr_t>(fast.row(t)) % 64, 0u) << "cols " << cols;
      for (int c = 0; c < fast.blocks * 256; ++c) {
        const int g = c / 32;
        const float scale = fast.scale(t, c);
        if (c >= cols) {
          ASSERT_EQ(fast.code(t, c), 0) << "padding, cols " << cols;
          continue;
        }
        const float v = x[static_cast<size_t>(t) * cols + c];
        ASSERT_GE(fast.code(t, c), -127);
        ASSERT_LE(std::fabs(v - fast.code(t, c) * scale), scale / 2 * 1.0001f + 1e-30f)
            << "cols " << cols << " t " << t << " c " << c;
        if (cols >= 64 && t == 0 && g == 1) {
          ASSERT_EQ(scale, 0.0f);
        }
      }
      for (int g = 0; g * 32 < cols; ++g) {  // scale · Σ codes per group
        int sum = 0;
        for (int c = g * 32; c < std::min(cols, g * 32 + 32); ++c) sum += fast.code(t, c);
        ASSERT_EQ(fast.min_term(t, g), fast.scale(t, g * 32) * sum);
        ASSERT_EQ(fast.group_offset(t, g), -128 * sum);  // q8's start in prefill
        for (int j = 0; j < 8; ++j) {  // −128 · Σ of each int32 lane's 4 codes (q8's start)
          int lane = 0;
          for (int c = g * 32 + 4 * j; c < std::min(cols, g * 32 + 4 * j + 4); ++c)
            lane += fast.code(t, c);
          ASSERT_EQ(fast.lane_offset(t, g, j), -128 * lane) << "cols " << cols << " g " << g;
        }
      }
    }
  }
}

TEST(Int8Gemm, RowDotsMatchReferenceAndAreBatchIndependent) {
  SKIP_WITHOUT_VNNI();
  std::mt19937 rng(22);
  // A masked tail, an odd last group, the 4-chunk steps with and without leftovers.
  for (DType dtype : {DType::I8, DType::U8})
    for (int cols : {1, 33, 64, 100, 255, 256, 257, 300, 1000, 1030}) {
      const QuantMatrix m(dtype, 5, cols, rng);
      for (int T = 1; T <= 13; ++T) {  // passes of 6 rows, and their remainders
        const auto x = random_vector(static_cast<size_t>(T) * cols, rng);
        Int8Activations xq;
        quantize_activations(x.data(), T, cols, &xq);
        std::vector<float> y_ref(static_cast<size_t>(T) * m.rows);
        m.reference(x.data(), T, y_ref.data(), m.rows);
        for (int r = 0; r < m.rows; ++r) {
          std::vector<float> out(T);
          m.dot_rows(r, xq, out.data());
          for (int t = 0; t < T; ++t) {
            const float* xt = x.data() + static_cast<size_t>(t) * cols;
            ASSERT_NEAR(out[t], y_ref[static_cast<size_t>(t) * m.rows + r],
                        1e-5f * m.abs_sum(r, xt) + 1e-6f)
                << m.name() << " cols " << cols << " T " << T << " t " << t;
            Int8Activations one;
            quantize_activations(xt, 1, cols, &one);
            float alone;
            m.dot_rows(r, one, &alone);
            ASSERT_EQ(bits(out[t]), bits(alone))
                << m.name() << " cols " << cols << " T " << T << " t " << t;
          }
        }
      }
    }
}

TEST(Int8Gemm, TilesMatchReference) {
  SKIP_WITHOUT_VNNI();
  std::mt19937 rng(23);
  struct Shape {
    int rows, cols, T;
  };
  // Partial tiles of rows and tokens, one token block and more (64), two column blocks (4096),
  // odd group counts (q4's last chunk holds one group).
  for (DType dtype : {DType::I8, DType::U8})
    for (const Shape s : {Shape{1, 31, 8}, Shape{5, 64, 9}, Shape{37, 300, 19}, Shape{70, 100, 70},
                          Shape{130, 4165, 8}, Shape{6, 1000, 133}}) {
      const QuantMatrix m(dtype, s.rows, s.cols, rng);
      const auto x = random_vector(static_cast<size_t>(s.T) * s.cols, rng);
      const int ldy = s.rows + 3;  // the gaps between output rows must stay untouched
      const float sentinel = std::numeric_limits<float>::quiet_NaN();
      std::vector<float> y(static_cast<size_t>(s.T) * ldy, sentinel), y_ref(y.size());
      m.gemm(x.data(), s.T, y.data(), ldy);
      m.reference(x.data(), s.T, y_ref.data(), ldy);
      for (int t = 0; t < s.T; ++t) {
        for (int r = 0; r < s.rows; ++r) {
          const size_t i = static_cast<size_t>(t) * ldy + r;
          ASSERT_NEAR(y[i], y_ref[i],
                      1e-5f * m.abs_sum(r, x.data() + static_cast<size_t>(t) * s.cols) + 1e-6f)
              << m.name() << " rows " << s.rows << " cols " << s.cols << " T " << s.T << " at " << t
              << "," << r;
        }
        for (int r = s.rows; r < ldy; ++r)
          ASSERT_TRUE(std::isnan(y[static_cast<size_t>(t) * ldy + r])) << "gap written";
      }
    }
}

// linear_forward on the path, for a few tokens (row dots) and many (tiles): W·x within the
// rounding of x to int8 of the exact product.
TEST(Int8Gemm, LinearForwardStaysWithinActivationRounding) {
  SKIP_WITHOUT_VNNI();
  std::mt19937 rng(24);
  testing::FastActivations fast;
  for (DType dtype : {DType::I8, DType::U8}) {
    const QuantMatrix m(dtype, 37, 301, rng);
    for (int T : {1, 3, 7, kGemmMinTokens, 19, 70}) {
      const auto x = random_vector(static_cast<size_t>(T) * m.cols, rng);
      std::vector<float> y(static_cast<size_t>(T) * m.rows), y_exact(y.size()), y_ref(y.size());
      linear_forward(m.lin, x.data(), T, y.data());
      linear_forward_reference(m.lin, x.data(), T, y_exact.data());
      m.reference(x.data(), T, y_ref.data(), m.rows);
      int differs = 0;
      for (int t = 0; t < T; ++t)
        for (int r = 0; r < m.rows; ++r) {
          const size_t i = static_cast<size_t>(t) * m.rows + r;
          const float* xt = x.data() + static_cast<size_t>(t) * m.cols;
          ASSERT_NEAR(y[i], y_ref[i], 1e-5f * m.abs_sum(r, xt) + 1e-6f) << m.name() << " T " << T;
          ASSERT_NEAR(y[i], y_exact[i], m.rounding_bound(r, xt) + 1e-5f * m.abs_sum(r, xt))
              << m.name() << " T " << T;
          differs += y[i] != y_exact[i];
        }
      EXPECT_GT(differs, 0) << m.name() << ": the int8 path was not taken";
    }
  }
}

}  // namespace
}  // namespace whale
