// Every SIMD kernel against its scalar reference, on random data of awkward lengths.
#include "ops/kernels.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <map>
#include <random>

#include "base/aligned.h"
#include "hwy/targets.h"
#include "io/quantize.h"
#include "ops/bf16_gemm.h"
#include "ops/gemm.h"
#include "ops/linear.h"
#include "ops/precision.h"
#include "tensor/dtype.h"
#include "test_util.h"

namespace whale {
namespace {

using testing::bits;
using testing::random_vector;

TEST(Kernels, DotProductsMatchScalarReferences) {
  std::mt19937 rng(1);
  for (size_t n : {1, 3, 7, 8, 15, 16, 17, 31, 64, 100, 257, 1000, 4099}) {
    auto a = random_vector(n, rng), b = random_vector(n, rng);
    std::vector<uint16_t> a16(n);
    std::vector<uint8_t> a8(n);
    for (size_t i = 0; i < n; ++i) {
      a16[i] = f32_to_bf16(a[i]);
      a8[i] = f32_to_e4m3(a[i] * 50);
    }
    const float tol = 1e-5f * std::sqrt(static_cast<float>(n)) * 4;
    EXPECT_NEAR(dot_f32(a.data(), b.data(), n), dot_f32_reference(a.data(), b.data(), n), tol) << n;
    EXPECT_NEAR(stream_sum_f32(a.data(), n), stream_sum_f32_reference(a.data(), n), tol) << n;
    EXPECT_NEAR(stream_sum_f32(a.data() + 1, n - 1), stream_sum_f32_reference(a.data() + 1, n - 1),
                tol)
        << n;  // unaligned
    EXPECT_NEAR(dot_bf16(a16.data(), b.data(), n), dot_bf16_reference(a16.data(), b.data(), n), tol)
        << n;
    std::vector<uint16_t> a_half(n);
    for (size_t i = 0; i < n; ++i) a_half[i] = f32_to_f16(a[i]);
    EXPECT_NEAR(dot_f16(a_half.data(), b.data(), n), dot_f16_reference(a_half.data(), b.data(), n),
                tol)
        << n;
    std::vector<float> halves(n);
    f16_to_f32(a_half.data(), halves.data(), n);
    for (size_t i = 0; i < n; ++i) ASSERT_EQ(halves[i], whale::f16_to_f32(a_half[i]));
    const float unit = 1.0f;
    EXPECT_NEAR(dot_e4m3(a8.data(), &unit, n, b.data(), n),
                dot_e4m3_reference(a8.data(), &unit, n, b.data(), n), tol * 50)
        << n;
    // 128-wide blocks with their own scales (DeepSeek-V3's layout along a row).
    std::vector<float> block_scales((n + 127) / 128);
    for (size_t k = 0; k < block_scales.size(); ++k) block_scales[k] = 0.25f + 0.5f * k;
    EXPECT_NEAR(dot_e4m3(a8.data(), block_scales.data(), 128, b.data(), n),
                dot_e4m3_reference(a8.data(), block_scales.data(), 128, b.data(), n),
                tol * 50 * (0.25f + 0.5f * block_scales.size()))
        << n;
    std::vector<float> converted(n), y = b, y_ref = b;
    bf16_to_f32(a16.data(), converted.data(), n);
    for (size_t i = 0; i < n; ++i) ASSERT_EQ(converted[i], bf16_to_f32(a16[i]));
    axpy(0.5f, a.data(), y.data(), n);
    for (size_t i = 0; i < n; ++i) ASSERT_NEAR(y[i], y_ref[i] + 0.5f * a[i], 1e-6f);
  }
  EXPECT_FALSE(simd_target_name().empty());
}

TEST(Kernels, LinearForwardMatchesReferenceForEveryDtype) {
  std::mt19937 rng(2);
  for (int rows : {1, 5, 130}) {
    for (int cols : {3, 64, 200}) {
      auto w = random_vector(static_cast<size_t>(rows) * cols, rng);
      for (DType dtype : {DType::F32, DType::BF16, DType::F16, DType::F8_E4M3}) {
        std::vector<uint8_t> bytes(w.size() * dtype_size(dtype));
        Linear lin;
        lin.dtype = dtype;
        lin.rows = rows;
        lin.cols = cols;
        if (dtype == DType::F32) {
          std::memcpy(bytes.data(), w.data(), bytes.size());
        } else if (dtype == DType::BF16 || dtype == DType::F16) {
          for (size_t i = 0; i < w.size(); ++i) {
            uint16_t b = dtype == DType::BF16 ? f32_to_bf16(w[i]) : f32_to_f16(w[i]);
            std::memcpy(bytes.data() + 2 * i, &b, 2);
          }
        } else {
          lin.block_rows = lin.block_cols = 128;
          int nbr = (rows + 127) / 128, nbc = (cols + 127) / 128;
          for (int i = 0; i < nbr * nbc; ++i) lin.block_scale.push_back(0.01f * (i + 1));
          for (int r = 0; r < rows; ++r)
            for (int c = 0; c < cols; ++c)
              bytes[static_cast<size_t>(r) * cols + c] =
                  f32_to_e4m3(w[static_cast<size_t>(r) * cols + c] * 100);
        }
        lin.data = bytes.data();
        for (int T : {1, 3}) {
          auto x = random_vector(static_cast<size_t>(T) * cols, rng);
          std::vector<float> y(static_cast<size_t>(T) * rows), y_ref(y.size());
          linear_forward(lin, x.data(), T, y.data());
          linear_forward_reference(lin, x.data(), T, y_ref.data());
          for (size_t i = 0; i < y.size(); ++i)
            ASSERT_NEAR(y[i], y_ref[i], 1e-4f * (1 + std::fabs(y_ref[i])))
                << dtype_name(dtype) << " rows " << rows << " cols " << cols << " T " << T;
        }
      }
    }
  }
}

// A random bf16 matrix and a Linear over it.
struct Bf16Matrix {
  std::vector<uint16_t> w;
  Linear lin;
  Bf16Matrix(int rows, int cols, std::mt19937& rng) {
    for (float v : random_vector(static_cast<size_t>(rows) * cols, rng))
      w.push_back(f32_to_bf16(v));
    lin.dtype = DType::BF16;
    lin.rows = rows;
    lin.cols = cols;
    lin.data = reinterpret_cast<const uint8_t*>(w.data());
  }
};

// Σ |w[r, c] · x[t, c]| over c: the scale of the rounding error of one output.
float abs_sum(const uint16_t* w, const float* x, int cols) {
  double sum = 0;
  for (int c = 0; c < cols; ++c) sum += std::fabs(bf16_to_f32(w[c]) * x[c]);
  return static_cast<float>(sum);
}

// The AVX512-BF16 products (prefill, serving batches): the reference's products with x rounded
// to bf16, summed in another order, over shapes that cross every tile, panel and block edge.
TEST(Kernels, Bf16GemmMatchesReference) {
  if (!bf16_gemm_available())
    GTEST_SKIP() << "this CPU has no AVX512-BF16 (or WHALE_NO_BF16_GEMM=1 is set)";
  std::mt19937 rng(3);
  struct Shape {
    int rows, cols, T;
  };
  for (Shape s : {Shape{1, 1, 1}, Shape{5, 31, 3}, Shape{7, 33, 9}, Shape{64, 64, 4},
                  Shape{65, 100, 67}, Shape{130, 2049, 5}, Shape{3, 4100, 130}}) {
    const std::vector<uint16_t> w = Bf16Matrix(s.rows, s.cols, rng).w;
    auto x = random_vector(static_cast<size_t>(s.T) * s.cols, rng);
    const int ldy = s.rows + 3;  // a strided output
    std::vector<float> y(static_cast<size_t>(s.T) * ldy, -7.0f), y_ref(y.size(), -7.0f);
    bf16_gemm(w.data(), s.rows, s.cols, x.data(), s.T, y.data(), ldy);
    bf16_gemm_reference(w.data(), s.rows, s.cols, x.data(), s.T, y_ref.data(), ldy);
    for (int t = 0; t < s.T; ++t) {
      for (int r = 0; r < s.rows; ++r) {
        const size_t i = static_cast<size_t>(t) * ldy + r;
        const float scale = abs_sum(w.data() + static_cast<size_t>(r) * s.cols,
                                    x.data() + static_cast<size_t>(t) * s.cols, s.cols);
        ASSERT_NEAR(y[i], y_ref[i], 1e-5f * scale + 1e-6f)
            << "rows " << s.rows << " cols " << s.cols << " T " << s.T << " at " << t << "," << r;
      }
      for (int r = s.rows; r < ldy; ++r)  // the gaps between output rows are left alone
        ASSERT_EQ(y[static_cast<size_t>(t) * ldy + r], -7.0f);
    }
  }
}

// Decode's few rows on the AVX512-BF16 path: activations rounded to bf16, each token's result
// bit-identical whatever its batch-mates (speculative verification relies on it), and within
// the rounding of the exact product.
TEST(Kernels, Bf16FewRowsAreBatchIndependent) {
  if (!bf16_gemm_available()) GTEST_SKIP() << "this CPU has no AVX512-BF16";
  std::mt19937 rng(6);
  set_exact_activations(false);
  for (int cols : {300, 1000}) {  // a masked tail; the four-vector main loop
    const int rows = 70;
    const Bf16Matrix m(rows, cols, rng);
    const std::vector<uint16_t>& w = m.w;
    const Linear& lin = m.lin;
    for (int T = 1; T < kGemmMinTokens; ++T) {
      auto x = random_vector(static_cast<size_t>(T) * cols, rng);
      std::vector<float> y(static_cast<size_t>(T) * rows), y_one(rows), y_ref(y.size());
      linear_forward(lin, x.data(), T, y.data());
      bf16_gemm_reference(w.data(), rows, cols, x.data(), T, y_ref.data(), rows);
      // linear_forward's row ranges (one kernel call per chunk) against one row per call.
      const Linear::RowsInput in = lin.prepare_rows(x.data(), T);
      for (int r = 0; r < rows; ++r) {
        float out[kGemmMinTokens];
        lin.rows_dot(r, in, out);
        for (int t = 0; t < T; ++t)
          ASSERT_EQ(bits(y[static_cast<size_t>(t) * rows + r]), bits(out[t])) << "row " << r;
      }
      for (int t = 0; t < T; ++t) {
        linear_forward(lin, x.data() + static_cast<size_t>(t) * cols, 1, y_one.data());
        for (int r = 0; r < rows; ++r) {
          const size_t i = static_cast<size_t>(t) * rows + r;
          ASSERT_EQ(bits(y[i]), bits(y_one[r])) << "cols " << cols << " T " << T << " t " << t;
          const float scale = abs_sum(w.data() + static_cast<size_t>(r) * cols,
                                      x.data() + static_cast<size_t>(t) * cols, cols);
          ASSERT_NEAR(y[i], y_ref[i], 1e-5f * scale + 1e-6f) << "cols " << cols << " T " << T;
        }
      }
    }
  }
  set_exact_activations(true);
}

// The rounded activations of the few-row path start on a cache line, or 16 bytes past one where
// the weights start at a multiple of 32 bytes (the same offset modulo 32 slows the row dots);
// rows padded to whole vectors; and the products are the same bits wherever the weights sit.
TEST(Kernels, Bf16ActivationsAvoidTheWeightsOffset) {
  if (!bf16_gemm_available()) GTEST_SKIP() << "this CPU has no AVX512-BF16";
  std::mt19937 rng(9);
  set_exact_activations(false);
  const int rows = 40, cols = 300, T = 2;
  const Bf16Matrix m(rows, cols, rng);
  const auto x = random_vector(static_cast<size_t>(T) * cols, rng);
  std::vector<float> expected(static_cast<size_t>(T) * rows), got(expected.size());
  linear_forward(m.lin, x.data(), T, expected.data());
  AlignedVector<uint8_t> storage(m.w.size() * 2 + 64);
  for (int offset = 0; offset < 64; offset += 8) {
    std::memcpy(storage.data() + offset, m.w.data(), m.w.size() * 2);
    Linear lin = m.lin;
    lin.data = storage.data() + offset;
    const Linear::RowsInput in = lin.prepare_rows(x.data(), T);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(in.xb()) % 64, offset % 32 == 0 ? 16u : 0u) << offset;
    EXPECT_EQ(in.ldx % 32, 0);
    linear_forward(lin, x.data(), T, got.data());
    for (size_t i = 0; i < got.size(); ++i)
      ASSERT_EQ(bits(got[i]), bits(expected[i])) << "offset " << offset << " output " << i;
  }
  set_exact_activations(true);
}

// Both paths linear_forward has for many rows of a bf16 matrix (AVX512-BF16 where the CPU has
// it, dequantized tiles by sgemm) compute W·x to within x's rounding to bf16 (2⁻⁹ of a product).
// body(fast, T) for both of linear_forward's paths for many rows (the fast one — AVX512-BF16 —
// and exact mode) and three token counts from kGemmMinTokens on; exact mode restored after.
void for_many_rows_paths(const std::function<void(bool fast, int T)>& body) {
  for (bool fast : {false, true})
    for (int T : {kGemmMinTokens, 19, 70}) {
      set_exact_activations(!fast);
      body(fast, T);
    }
  set_exact_activations(true);
}

TEST(Kernels, LinearForwardManyRowsOfBf16) {
  std::mt19937 rng(4);
  for_many_rows_paths([&](bool fast, int T) {
    const int rows = 37, cols = 301;
    const Bf16Matrix m(rows, cols, rng);
    const std::vector<uint16_t>& w = m.w;
    const Linear& lin = m.lin;
    auto x = random_vector(static_cast<size_t>(T) * cols, rng);
    std::vector<float> y(static_cast<size_t>(T) * rows), y_ref(y.size());
    linear_forward(lin, x.data(), T, y.data());
    linear_forward_reference(lin, x.data(), T, y_ref.data());
    for (int t = 0; t < T; ++t)
      for (int r = 0; r < rows; ++r) {
        const size_t i = static_cast<size_t>(t) * rows + r;
        const float scale = abs_sum(w.data() + static_cast<size_t>(r) * cols,
                                    x.data() + static_cast<size_t>(t) * cols, cols);
        ASSERT_NEAR(y[i], y_ref[i], scale / 512 + 1e-5f)
            << "fast " << fast << " T " << T << " at " << t << "," << r;
      }
  });
}

// fp8 weights of many rows: with AVX512-BF16 (the default) each weight × its block scale rounded
// to bf16 and x rounded to bf16 (e4m3_gemm: 2⁻⁹ of a product each), in exact mode widened tiles
// by sgemm; blocks of 128 × 128 with their own scales, shapes crossing row and column blocks.
TEST(Kernels, LinearForwardManyRowsOfFp8) {
  std::mt19937 rng(5);
  for_many_rows_paths([&](bool fast, int T) {
    const int rows = 150, cols = 301;
    const auto w = random_vector(static_cast<size_t>(rows) * cols, rng);
    std::vector<uint8_t> codes(w.size());
    Linear lin;
    lin.dtype = DType::F8_E4M3;
    lin.rows = rows;
    lin.cols = cols;
    for (int i = 0; i < 2 * 3; ++i) lin.block_scale.push_back(0.01f * (i + 1));
    for (size_t i = 0; i < w.size(); ++i) codes[i] = f32_to_e4m3(w[i] * 100);
    lin.data = codes.data();
    std::vector<float> dequantized(cols);
    auto x = random_vector(static_cast<size_t>(T) * cols, rng);
    std::vector<float> y(static_cast<size_t>(T) * rows), y_ref(y.size());
    linear_forward(lin, x.data(), T, y.data());
    linear_forward_reference(lin, x.data(), T, y_ref.data());
    for (int r = 0; r < rows; ++r) {
      lin.row_to_f32(r, dequantized.data());
      for (int t = 0; t < T; ++t) {
        const size_t i = static_cast<size_t>(t) * rows + r;
        float scale = 0;
        for (int c = 0; c < cols; ++c)
          scale += std::fabs(dequantized[c] * x[static_cast<size_t>(t) * cols + c]);
        ASSERT_NEAR(y[i], y_ref[i], (fast ? scale / 256 : scale * 1e-6f) + 1e-5f)
            << "fast " << fast << " T " << T << " at " << t << "," << r;
      }
    }
  });
}

// Runs body once per instruction set compiled in and supported here (AVX-512, AVX2, SSE4, ...),
// so the kernels of every target are held to the same rules, then restores the dispatcher.
void for_every_target(const std::function<void()>& body) {
  for (int64_t target : hwy::SupportedAndGeneratedTargets()) {
    hwy::SetSupportedTargetsForTest(target);
    SCOPED_TRACE(hwy::TargetName(target));
    body();
  }
  hwy::SetSupportedTargetsForTest(0);
}

// The fp8 kernels widen e4m3 codes by bit manipulation (kernels.cc's LoadE4M3): every one of the
// 256 codes — zeros, subnormals, the largest, the two NaNs — must come out as the table's value.
TEST(Kernels, EveryE4M3CodeConvertsExactly) {
  for_every_target([] {
    for (int code = 0; code < 256; ++code) {
      // 61 copies: pairs of vectors, a single vector and a scalar tail on every target (16, 8
      // and 4 lanes: 32 + 16 + 13, 48 + 8 + 5, 56 + 4 + 1).
      const size_t n = 61;
      const std::vector<uint8_t> w(n, static_cast<uint8_t>(code));
      const float scale = 0.5f;
      for (size_t at : {size_t{0}, size_t{17}, size_t{36}}) {
        std::vector<float> x(n, 0.0f);
        x[at] = 1.0f;
        const float got = dot_e4m3(w.data(), &scale, n, x.data(), n);
        const float want = e4m3_to_f32(static_cast<uint8_t>(code)) * scale;
        if (std::isnan(want))
          EXPECT_TRUE(std::isnan(got)) << "code " << code << " at " << at;
        else
          EXPECT_EQ(got, want) << "code " << code << " at " << at;
      }
    }
    // One NaN code among ordinary ones makes the row NaN wherever it is (the NaN scan's vector
    // loop and its tail; the dot's vector and scalar parts), and only then.
    const size_t n = 200;
    std::vector<uint8_t> w(n, 0x38);  // 1.0
    const std::vector<float> x(n, 0.5f);
    const float unit = 1.0f;
    EXPECT_EQ(dot_e4m3(w.data(), &unit, n, x.data(), n), 100.0f);
    for (size_t at : {size_t{0}, size_t{70}, size_t{190}, size_t{199}})
      for (uint8_t code : {uint8_t{0x7F}, uint8_t{0xFF}}) {
        std::vector<uint8_t> v = w;
        v[at] = code;
        EXPECT_TRUE(std::isnan(dot_e4m3(v.data(), &unit, n, x.data(), n))) << at;
        float out[3];
        std::vector<float> xs(3 * n, 0.5f);
        dot_e4m3_rows(v.data(), &unit, n, xs.data(), n, 3, n, out);
        for (float o : out) EXPECT_TRUE(std::isnan(o)) << at;
      }
    // Prefill's row conversion: all 256 codes in one row of blocks of 40 (full vectors, and
    // short ends on every target), each block its own scale.
    std::vector<uint8_t> row(256 + 7);
    for (size_t i = 0; i < row.size(); ++i) row[i] = static_cast<uint8_t>(i * 97 % 256);
    std::vector<float> scales((row.size() + 39) / 40), out(row.size());
    for (size_t b = 0; b < scales.size(); ++b) scales[b] = 0.125f * static_cast<float>(b + 1);
    e4m3_to_f32(row.data(), scales.data(), 40, out.data(), row.size());
    for (size_t i = 0; i < row.size(); ++i) {
      const float want = e4m3_to_f32(row[i]) * scales[i / 40];
      if (std::isnan(want))
        EXPECT_TRUE(std::isnan(out[i])) << i;
      else
        EXPECT_EQ(out[i], want) << "code " << int{row[i]} << " at " << i;
    }
  });
}

// Greedy decoding's choice: the first of equal largest values, NaNs skipped, -inf a value like any
// other, wherever the winner sits (in a pair of vectors, a single vector or the scalar tail).
TEST(Kernels, ArgmaxMatchesReference) {
  for_every_target([] {
    std::mt19937 rng(7);
    const float nan = std::numeric_limits<float>::quiet_NaN();
    const float inf = std::numeric_limits<float>::infinity();
    EXPECT_EQ(argmax_f32(nullptr, 0), 0u);
    for (size_t n : {1, 2, 7, 16, 17, 31, 32, 33, 61, 100, 1000, 102400}) {
      std::vector<float> x = random_vector(n, rng);
      EXPECT_EQ(argmax_f32(x.data(), n), argmax_f32_reference(x.data(), n)) << n;
      for (size_t at : {size_t{0}, n / 3, n - 1}) {
        std::vector<float> y = x;
        y[at] = 100.0f;
        if (at + 5 < n) y[at + 5] = 100.0f;  // a tie: the first wins
        EXPECT_EQ(argmax_f32(y.data(), n), at) << n;
        y[at] = nan;  // skipped, not a winner
        const size_t want = at + 5 < n ? at + 5 : argmax_f32_reference(y.data(), n);
        EXPECT_EQ(argmax_f32(y.data(), n), want) << n;
        EXPECT_EQ(argmax_f32_reference(y.data(), n), want) << n;
      }
      std::vector<float> lows(n, -inf);
      lows[0] = nan;
      EXPECT_EQ(argmax_f32(lows.data(), n), n > 1 ? 1u : 0u) << n;
      std::vector<float> nans(n, nan);
      EXPECT_EQ(argmax_f32(nans.data(), n), 0u) << n;
      EXPECT_EQ(argmax_f32_reference(nans.data(), n), 0u) << n;
    }
  });
}

// The SIMD exponentials of the activation and softmax against std::exp, for every target, over
// lengths with and without a tail and arguments far into both ends of the range.
TEST(Kernels, SiluAndShiftedExpMatchScalar) {
  for_every_target([] {
    std::mt19937 rng(5);
    for (size_t n : {1, 5, 16, 17, 100, 1000}) {
      auto gate = random_vector(n, rng), up = random_vector(n, rng);
      for (size_t i = 0; i < n; i += 7) gate[i] *= 60;  // e^±60 and beyond
      std::vector<float> out = gate;
      silu_mul_kernel(out.data(), up.data(), n);
      for (size_t i = 0; i < n; ++i) {
        const double g = gate[i], want = g / (1 + std::exp(-g)) * up[i];
        ASSERT_NEAR(out[i], want, 1e-6 * (1 + std::fabs(want))) << n << " at " << i;
      }
      auto x = random_vector(n, rng);
      for (size_t i = 0; i < n; i += 5) x[i] = -std::numeric_limits<float>::infinity();
      std::vector<float> e = x;
      const float shift = 0.7f;
      const float sum = exp_shifted(e.data(), n, shift);
      double want_sum = 0;
      for (size_t i = 0; i < n; ++i) {
        const double want = std::exp(static_cast<double>(x[i]) - shift);
        want_sum += want;
        ASSERT_NEAR(e[i], want, 2e-7 * want) << n << " at " << i;
      }
      ASSERT_NEAR(sum, want_sum, 1e-6 * want_sum) << n;
    }
  });
}

// Attention's weighted sums of the cached values (decode's chunks of positions): each row the
// reference's FMAs (on the targets with FMA, bit for bit), and a row's bits the same whatever
// the number of rows beside it — speculative verification groups heads differently from decode.
TEST(Kernels, WeightedRowsSumMatchesReferenceAndIsRowIndependent) {
  for_every_target([] {
    std::mt19937 rng(8);
    for (size_t D : {1, 15, 16, 17, 512}) {
      const size_t G = 13, n = 37, ldp = 40, ldv = D + 3, ldo = D + 1;
      const auto p = random_vector(G * ldp, rng), v = random_vector(n * ldv, rng);
      const auto start = random_vector(G * ldo, rng);
      std::vector<float> all = start, ref = start;
      weighted_rows_sum(p.data(), ldp, G, v.data(), ldv, n, D, all.data(), ldo);
      weighted_rows_sum_reference(p.data(), ldp, G, v.data(), ldv, n, D, ref.data(), ldo);
      for (size_t i = 0; i < all.size(); ++i) {
        double scale = 1;
        for (size_t s = 0; s < n; ++s) scale += std::fabs(p[i / ldo * ldp + s]) * 3;
        ASSERT_NEAR(all[i], ref[i], 1e-6 * scale) << "D " << D << " at " << i;
      }
      for (size_t g = 0; g < G; ++g) {  // each row alone
        std::vector<float> one(start.begin() + g * ldo, start.begin() + (g + 1) * ldo);
        weighted_rows_sum(p.data() + g * ldp, ldp, 1, v.data(), ldv, n, D, one.data(), ldo);
        ASSERT_EQ(std::memcmp(one.data(), all.data() + g * ldo, D * sizeof(float)), 0)
            << "D " << D << " row " << g;
      }
    }
  });
}

// MLA's absorption and W_UV rows over bf16 kv_b rows in one call each: the reference's FMAs,
// and — where no lanes are left over — the bits of the row-by-row route they replace (each row
// converted and axpy-ed; each row dotted alone), on every target.
TEST(Kernels, Bf16AbsorptionKernelsMatchTheRowByRowRoute) {
  for_every_target([] {
    std::mt19937 rng(12);
    for (size_t D : {1, 15, 16, 17, 128, 130, 512}) {
      const size_t n = 33, ldv = D + 5;
      std::vector<uint16_t> v;
      for (float f : random_vector(n * ldv, rng)) v.push_back(f32_to_bf16(f));
      const auto p = random_vector(n, rng), start = random_vector(D, rng);
      std::vector<float> got = start, ref = start, by_rows = start, row(D);
      weighted_bf16_rows_sum(p.data(), v.data(), ldv, n, D, got.data());
      weighted_bf16_rows_sum_reference(p.data(), v.data(), ldv, n, D, ref.data());
      for (size_t s = 0; s < n; ++s) {
        bf16_to_f32(v.data() + s * ldv, row.data(), D);
        axpy(p[s], row.data(), by_rows.data(), D);
      }
      for (size_t i = 0; i < D; ++i) {
        double scale = 1;
        for (size_t s = 0; s < n; ++s) scale += std::fabs(p[s] * bf16_to_f32(v[s * ldv + i]));
        ASSERT_NEAR(got[i], ref[i], 1e-6 * scale) << "D " << D << " at " << i;
      }
      if (D % 16 == 0) {
        ASSERT_EQ(std::memcmp(got.data(), by_rows.data(), D * sizeof(float)), 0) << "D " << D;
      }
      // The W_UV side: n rows against one vector, each the single-row kernel's bits.
      const auto x = random_vector(D, rng);
      std::vector<float> dots(n);
      dot_bf16_each_row(v.data(), ldv, n, x.data(), D, dots.data());
      for (size_t r = 0; r < n; ++r)
        ASSERT_EQ(bits(dots[r]), bits(dot_bf16(v.data() + r * ldv, x.data(), D)))
            << "D " << D << " row " << r;
    }
  });
}

// Linear's absorption calls (weighted_rows_sum, row_dots) on plain bf16 rows, q8 rows (their own
// kernels) and f32 rows (the row-by-row fallback): the bits of row_to_f32 + axpy and of row_dot,
// from any first row.
TEST(Kernels, LinearAbsorptionCallsMatchRowByRow) {
  std::mt19937 rng(13);
  for (int cols : {128, 160}) {  // bf16: one block of 8 vectors, or row by row; q8: 4 or 5 groups
    const int rows = 20, r0 = 3, n = 11;
    const Bf16Matrix m(rows, cols, rng);
    std::vector<float> f32(m.w.size());
    bf16_to_f32(m.w.data(), f32.data(), f32.size());
    Linear plain = m.lin;
    plain.dtype = DType::F32;
    plain.data = reinterpret_cast<const uint8_t*>(f32.data());
    const size_t groups = cols / kQuantGroup;
    std::vector<int8_t> codes(f32.size());
    std::vector<uint16_t> scales(rows * groups);
    for (int r = 0; r < rows; ++r)
      quantize_row_q8(f32.data() + static_cast<size_t>(r) * cols, cols, codes.data() + r * cols,
                      scales.data() + r * groups);
    Linear q8 = plain;
    q8.dtype = DType::I8;
    q8.data = reinterpret_cast<const uint8_t*>(codes.data());
    q8.qscale = scales.data();
    const auto p = random_vector(n, rng), x = random_vector(cols, rng);
    for (const Linear* lin :
         {&m.lin, static_cast<const Linear*>(&plain), static_cast<const Linear*>(&q8)}) {
      std::vector<float> got(cols, 0.5f), want(cols, 0.5f), row(cols), dots(n);
      lin->weighted_rows_sum(r0, n, p.data(), got.data());
      for (int s = 0; s < n; ++s) {
        lin->row_to_f32(r0 + s, row.data());
        axpy(p[s], row.data(), want.data(), cols);
      }
      ASSERT_EQ(std::memcmp(got.data(), want.data(), cols * sizeof(float)), 0) << int(lin->dtype);
      lin->row_dots(r0, n, x.data(), dots.data());
      for (int i = 0; i < n; ++i)
        ASSERT_EQ(bits(dots[i]), bits(lin->row_dot(r0 + i, x.data()))) << int(lin->dtype);
    }
  }
}

// Attention's scores with the queries across the lanes (MLA's absorbed form): the reference's
// FMAs, and a query's bits the same whatever the number of queries computed with it.
TEST(Kernels, TransposedScoresMatchReferenceAndAreQueryIndependent) {
  for_every_target([] {
    std::mt19937 rng(9);
    // n covers the 8-entry blocks, the 4-entry block and the single-entry tail.
    for (size_t n : {3, 11, 21})
      for (size_t H : {1, 2, 13, 16}) {
        const size_t K = 37, ldq = 32, lde = K + 2, lds = 16;  // q read 16 wide from h
        const auto q = random_vector(K * ldq, rng), e = random_vector(n * lde, rng);
        std::vector<float> s(n * lds), ref(n * lds);
        transposed_scores(q.data(), ldq, H, e.data(), lde, n, K, s.data(), lds);
        transposed_scores_reference(q.data(), ldq, H, e.data(), lde, n, K, ref.data(), lds);
        for (size_t j = 0; j < n; ++j)
          for (size_t h = 0; h < H; ++h) {
            double scale = 0;
            for (size_t k = 0; k < K; ++k) scale += std::fabs(q[k * ldq + h] * e[j * lde + k]);
            ASSERT_NEAR(s[j * lds + h], ref[j * lds + h], 1e-6 * scale) << "H " << H;
          }
        for (size_t h = 0; h < H; ++h) {  // each query alone
          std::vector<float> alone(n * lds);
          transposed_scores(q.data() + h, ldq, 1, e.data(), lde, n, K, alone.data(), lds);
          for (size_t j = 0; j < n; ++j)
            ASSERT_EQ(std::memcmp(&alone[j * lds], &s[j * lds + h], sizeof(float)), 0)
                << "H " << H << " query " << h << " entry " << j;
        }
        for (size_t j = 0; j < n; ++j) {  // each entry alone: its block-mates do not change it
          std::vector<float> alone(lds);
          transposed_scores(q.data(), ldq, H, e.data() + j * lde, lde, 1, K, alone.data(), lds);
          ASSERT_EQ(std::memcmp(alone.data(), &s[j * lds], H * sizeof(float)), 0)
              << "n " << n << " H " << H << " entry " << j;
        }
      }
  });
}

// The multi-row kernels (one weight row against T activation rows; speculative decoding's
// verification, small batches) must give every row exactly the bits of the single-row kernel,
// whatever its batch-mates, and agree with the scalar references.
TEST(Kernels, MultiRowDotsAreBitIdenticalToSingleRow) {
  for_every_target([] {
    std::mt19937 rng(4);
    for (size_t n : {1,  3,  7,   8,   15,  16,  17,  31,   32,   33,  63,
                     64, 65, 100, 129, 255, 256, 257, 1000, 2049, 4099}) {
      auto w = random_vector(n, rng);
      for (float& v : w) v += 0.3f;  // not centred, as the quantization tests do
      std::vector<uint16_t> w_bf16(n), w_f16(n);
      std::vector<uint8_t> w_e4m3(n);
      std::vector<float> e4m3_scales((n + 63) / 64);  // blocks of 64 along the row
      for (size_t k = 0; k < e4m3_scales.size(); ++k) e4m3_scales[k] = 1.0f / (1 + k % 3);
      for (size_t i = 0; i < n; ++i) {
        w_bf16[i] = f32_to_bf16(w[i]);
        w_f16[i] = f32_to_f16(w[i]);
        w_e4m3[i] = f32_to_e4m3(w[i] * 50);
      }
      const size_t groups = (n + kQuantGroup - 1) / kQuantGroup;
      std::vector<int8_t> q8(n);
      std::vector<uint16_t> q8_scales(groups), q4_scale_min(2 * groups);
      std::vector<uint8_t> q4(groups * 16);
      quantize_row_q8(w.data(), n, q8.data(), q8_scales.data());
      quantize_row_q4(w.data(), n, q4.data(), q4_scale_min.data());
      struct Kernel {
        const char* name;
        std::function<void(const float*, size_t, size_t, float*)> rows;  // x, ldx, T, out
        std::function<float(const float*)> one, reference;
        float tol;  // against the reference, per √n
      };
      const Kernel kernels[] = {
          {"f32",
           [&](auto x, auto ldx, auto T, auto out) { dot_f32_rows(w.data(), x, ldx, T, n, out); },
           [&](auto x) { return dot_f32(w.data(), x, n); },
           [&](auto x) { return dot_f32_reference(w.data(), x, n); }, 4e-5f},
          {"bf16",
           [&](auto x, auto ldx, auto T, auto out) {
             dot_bf16_rows(w_bf16.data(), x, ldx, T, n, out);
           },
           [&](auto x) { return dot_bf16(w_bf16.data(), x, n); },
           [&](auto x) { return dot_bf16_reference(w_bf16.data(), x, n); }, 4e-5f},
          {"f16",
           [&](auto x, auto ldx, auto T, auto out) {
             dot_f16_rows(w_f16.data(), x, ldx, T, n, out);
           },
           [&](auto x) { return dot_f16(w_f16.data(), x, n); },
           [&](auto x) { return dot_f16_reference(w_f16.data(), x, n); }, 4e-5f},
          {"e4m3",
           [&](auto x, auto ldx, auto T, auto out) {
             dot_e4m3_rows(w_e4m3.data(), e4m3_scales.data(), 64, x, ldx, T, n, out);
           },
           [&](auto x) { return dot_e4m3(w_e4m3.data(), e4m3_scales.data(), 64, x, n); },
           [&](auto x) { return dot_e4m3_reference(w_e4m3.data(), e4m3_scales.data(), 64, x, n); },
           2e-3f},
          {"q8",
           [&](auto x, auto ldx, auto T, auto out) {
             dot_q8_rows(q8.data(), q8_scales.data(), x, ldx, T, n, out);
           },
           [&](auto x) { return dot_q8(q8.data(), q8_scales.data(), x, n); },
           [&](auto x) { return dot_q8_reference(q8.data(), q8_scales.data(), x, n); }, 4e-5f},
          {"q4",
           [&](auto x, auto ldx, auto T, auto out) {
             dot_q4_rows(q4.data(), q4_scale_min.data(), x, ldx, T, n, out);
           },
           [&](auto x) { return dot_q4(q4.data(), q4_scale_min.data(), x, n); },
           [&](auto x) { return dot_q4_reference(q4.data(), q4_scale_min.data(), x, n); }, 8e-5f},
      };
      // T = 1 … 7 is one pass over the weight row; 8 and 9 take a second pass.
      for (size_t T = 1; T <= 9; ++T)
        for (size_t ldx : {n, n + 5}) {  // rows of x packed, or apart
          const auto x = random_vector(T * ldx, rng);
          for (const Kernel& k : kernels) {
            std::vector<float> out(T, std::nanf(""));
            k.rows(x.data(), ldx, T, out.data());
            for (size_t t = 0; t < T; ++t) {
              const float* xt = x.data() + t * ldx;
              const float one = k.one(xt);
              ASSERT_EQ(bits(out[t]), bits(one)) << k.name << " n " << n << " T " << T << " row "
                                                 << t << ": " << out[t] << " vs single-row " << one;
              ASSERT_NEAR(out[t], k.reference(xt), k.tol * std::sqrt(static_cast<float>(n)))
                  << k.name << " n " << n << " T " << T << " row " << t;
            }
          }
        }
    }
  });
}

// linear_forward below 8 tokens (row dots; the fp8 weights with their block scales, q8 and q4
// with their groups): each token's outputs are bit-identical to a one-token forward.
TEST(Kernels, LinearSmallBatchesAreBitIdenticalToOneTokenAtATime) {
  std::mt19937 rng(5);
  const int rows = 70, cols = 300;  // fp8: 2 × 3 blocks of 64 × 128, the last ones partial
  const auto w = random_vector(static_cast<size_t>(rows) * cols, rng);
  const size_t groups = (cols + kQuantGroup - 1) / kQuantGroup;
  for (DType dtype : {DType::F32, DType::BF16, DType::F16, DType::F8_E4M3, DType::I8, DType::U8}) {
    std::vector<uint8_t> bytes;
    std::vector<uint16_t> qscale;
    Linear lin;
    lin.dtype = dtype;
    lin.rows = rows;
    lin.cols = cols;
    for (int r = 0; r < rows; ++r) {
      const float* wr = w.data() + static_cast<size_t>(r) * cols;
      if (dtype == DType::I8) {
        bytes.resize(static_cast<size_t>(rows) * cols);
        qscale.resize(rows * groups);
        quantize_row_q8(wr, cols, reinterpret_cast<int8_t*>(bytes.data()) + r * cols,
                        qscale.data() + r * groups);
      } else if (dtype == DType::U8) {
        bytes.resize(rows * groups * 16);
        qscale.resize(rows * groups * 2);
        quantize_row_q4(wr, cols, bytes.data() + r * groups * 16, qscale.data() + r * groups * 2);
      } else {
        for (int c = 0; c < cols; ++c) {
          const size_t es = dtype_size(dtype);
          if (bytes.empty()) bytes.resize(static_cast<size_t>(rows) * cols * es);
          uint8_t* dst = bytes.data() + (static_cast<size_t>(r) * cols + c) * es;
          if (dtype == DType::F32) {
            std::memcpy(dst, &wr[c], 4);
          } else if (dtype == DType::F8_E4M3) {
            *dst = f32_to_e4m3(wr[c] * 100);
          } else {
            const uint16_t h = dtype == DType::BF16 ? f32_to_bf16(wr[c]) : f32_to_f16(wr[c]);
            std::memcpy(dst, &h, 2);
          }
        }
      }
    }
    if (dtype == DType::F8_E4M3) {
      lin.block_rows = 64;
      lin.block_cols = 128;
      for (int i = 0; i < 2 * 3; ++i) lin.block_scale.push_back(0.01f * (i + 1));
    }
    lin.data = bytes.data();
    lin.qscale = qscale.empty() ? nullptr : qscale.data();
    std::vector<std::vector<float>> xs, refs;  // per T
    for (int T = 2; T < 8; ++T) {
      xs.push_back(random_vector(static_cast<size_t>(T) * cols, rng));
      refs.emplace_back(static_cast<size_t>(T) * rows);
      linear_forward_reference(lin, xs.back().data(), T, refs.back().data());
    }
    for_every_target([&] {
      for (int T = 2; T < 8; ++T) {
        const std::vector<float>& x = xs[T - 2];
        const std::vector<float>& y_ref = refs[T - 2];
        std::vector<float> y(static_cast<size_t>(T) * rows), y_one(rows), out(T);
        linear_forward(lin, x.data(), T, y.data());
        for (int t = 0; t < T; ++t) {
          linear_forward(lin, x.data() + static_cast<size_t>(t) * cols, 1, y_one.data());
          for (int r = 0; r < rows; ++r) {
            const size_t i = static_cast<size_t>(t) * rows + r;
            ASSERT_EQ(bits(y[i]), bits(y_one[r]))
                << dtype_name(dtype) << " T " << T << " token " << t << " row " << r;
            ASSERT_EQ(bits(y_one[r]),
                      bits(lin.row_dot(r, x.data() + static_cast<size_t>(t) * cols)));
            ASSERT_NEAR(y[i], y_ref[i], 2e-4f * (1 + std::fabs(y_ref[i])))
                << dtype_name(dtype) << " T " << T << " token " << t << " row " << r;
          }
        }
        for (int r : {0, 37, rows - 1}) {
          lin.rows_dot(r, x.data(), T, out.data());
          for (int t = 0; t < T; ++t)
            ASSERT_EQ(bits(out[t]), bits(y[static_cast<size_t>(t) * rows + r]));
        }
      }
    });
  }
}

}  // namespace
}  // namespace whale

namespace whale {
namespace {

TEST(Kernels, GemmMatchesReferenceInEveryTransposition) {
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (int M : {1, 7, 33})
    for (int N : {1, 5, 64})
      for (int K : {1, 9, 130})
        for (int ta = 0; ta < 2; ++ta)
          for (int tb = 0; tb < 2; ++tb) {
            std::vector<float> A(M * K), B(K * N), C(M * N), C_ref;
            for (auto* v : {&A, &B, &C})
              for (float& x : *v) x = normal(rng);
            C_ref = C;
            int lda = ta ? M : K, ldb = tb ? K : N;
            gemm(ta, tb, M, N, K, 0.5f, A.data(), lda, B.data(), ldb, 1.0f, C.data(), N);
            gemm_reference(ta, tb, M, N, K, 0.5f, A.data(), lda, B.data(), ldb, 1.0f, C_ref.data(),
                           N);
            for (int i = 0; i < M * N; ++i)
              ASSERT_NEAR(C[i], C_ref[i], 1e-4f * (1 + std::fabs(C_ref[i])));
          }
}

// The row-dot kernels prefetch once per 4 KiB page of weights: whatever the step (a kernel's
// bytes per loop iteration) and wherever the stream starts, exactly one step of each page it
// covers is the page's first.
TEST(Kernels, WeightPrefetchFiresOncePerPage) {
  for (size_t step : {128, 192, 256, 512, 1024}) {
    for (uintptr_t start : {uintptr_t{0}, uintptr_t{32}, uintptr_t{4000}, uintptr_t{6144}}) {
      std::map<uintptr_t, int> fired;  // page → first steps seen
      const uintptr_t base = 1 << 20;
      for (uintptr_t at = base + start; at < base + start + 64 * kPageBytes; at += step)
        if (first_step_of_page(reinterpret_cast<const void*>(at), step)) ++fired[at / kPageBytes];
      // Every page the steps start in, except a partial first one, fires exactly once.
      int pages = 0;
      for (uintptr_t page = (base + start) / kPageBytes + 1;
           page < (base + start + 63 * kPageBytes) / kPageBytes; ++page, ++pages)
        EXPECT_EQ(fired[page], 1) << "step " << step << ", start " << start << ", page " << page;
      EXPECT_GT(pages, 60);
    }
  }
}

}  // namespace
}  // namespace whale
