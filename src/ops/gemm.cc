#include "ops/gemm.h"

#include <cblas.h>
#include <omp.h>

#include <atomic>
#include <chrono>
#include <vector>

namespace whale {

namespace {
std::atomic<long> g_nanoseconds{0}, g_calls{0};
std::atomic<double> g_flops{0};
}  // namespace

GemmStats gemm_stats() {
  return {g_nanoseconds.load() * 1e-9, g_flops.load(), g_calls.load()};
}

void reset_gemm_stats() {
  g_nanoseconds = 0;
  g_calls = 0;
  g_flops = 0;
}

void gemm(bool ta, bool tb, int M, int N, int K, float alpha, const float* A, int lda,
          const float* B, int ldb, float beta, float* C, int ldc) {
  if (M == 0 || N == 0) return;
  auto start = std::chrono::steady_clock::now();
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N,
              K, alpha, A, lda, B, ldb, beta, C, ldc);
  long ns =
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - start)
          .count();
  g_nanoseconds += ns / (omp_in_parallel() ? omp_get_num_threads() : 1);
  g_flops += 2.0 * M * N * K;
  ++g_calls;
}

double measure_gemm_peak(int n, int repeats) {
  std::vector<float> a(static_cast<size_t>(n) * n, 0.5f), b(a.size(), 0.25f), c(a.size());
  gemm(false, false, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);  // warm-up
  double best = 0;
  for (int r = 0; r < repeats; ++r) {
    auto start = std::chrono::steady_clock::now();
    gemm(false, false, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    best = std::max(best, 2.0 * n * n * n / s);
  }
  return best;
}

void gemm_reference(bool ta, bool tb, int M, int N, int K, float alpha, const float* A, int lda,
                    const float* B, int ldb, float beta, float* C, int ldc) {
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < N; ++j) {
      double sum = 0;
      for (int k = 0; k < K; ++k) {
        float a = ta ? A[k * lda + i] : A[i * lda + k];
        float b = tb ? B[j * ldb + k] : B[k * ldb + j];
        sum += static_cast<double>(a) * b;
      }
      C[i * ldc + j] = static_cast<float>(alpha * sum + (beta == 0 ? 0.0 : beta * C[i * ldc + j]));
    }
}

void matmul_xwt(const float* x, const float* w, int n, int in, int out, float* y, bool accumulate) {
  gemm(false, true, n, out, in, 1.0f, x, in, w, in, accumulate ? 1.0f : 0.0f, y, out);
}

void matmul_dy_w(const float* dy, const float* w, int n, int in, int out, float* dx,
                 bool accumulate) {
  gemm(false, false, n, in, out, 1.0f, dy, out, w, in, accumulate ? 1.0f : 0.0f, dx, in);
}

void matmul_dyt_x(const float* dy, const float* x, int n, int in, int out, float* dw) {
  gemm(true, false, out, in, n, 1.0f, dy, out, x, in, 1.0f, dw, in);
}

}  // namespace whale
