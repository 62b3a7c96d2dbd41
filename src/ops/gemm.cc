#include "ops/gemm.h"

#include <cblas.h>

namespace whale {

void gemm(bool ta, bool tb, int M, int N, int K, float alpha, const float* A, int lda,
          const float* B, int ldb, float beta, float* C, int ldc) {
  if (M == 0 || N == 0) return;
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M,
              N, K, alpha, A, lda, B, ldb, beta, C, ldc);
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

void matmul_xwt(const float* x, const float* w, int n, int in, int out, float* y,
                bool accumulate) {
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
