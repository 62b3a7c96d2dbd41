// Every SIMD kernel against its scalar reference, on random data of awkward lengths.
#include "ops/gemm.h"
#include "ops/kernels.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "ops/linear.h"
#include "tensor/dtype.h"

namespace whale {
namespace {

std::vector<float> random_vector(size_t n, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = normal(rng);
  return v;
}

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
    EXPECT_NEAR(dot_e4m3(a8.data(), b.data(), n), dot_e4m3_reference(a8.data(), b.data(), n),
                tol * 50)
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
            gemm_reference(ta, tb, M, N, K, 0.5f, A.data(), lda, B.data(), ldb, 1.0f,
                           C_ref.data(), N);
            for (int i = 0; i < M * N; ++i) ASSERT_NEAR(C[i], C_ref[i], 1e-4f * (1 + std::fabs(C_ref[i])));
          }
}

}  // namespace
}  // namespace whale
