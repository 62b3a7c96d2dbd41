// Dense f32 matrix products, row-major: C = alpha·op(A)·op(B) + beta·C with op(X) = X or Xᵀ.
// The fast version is OpenBLAS's sgemm; gemm_reference is the plain triple loop it is tested
// against.
#pragma once

namespace whale {

// op(A) is M×K, op(B) is K×N, C is M×N; lda/ldb/ldc are the row strides of A, B, C as stored.
void gemm(bool transpose_a, bool transpose_b, int M, int N, int K, float alpha, const float* A,
          int lda, const float* B, int ldb, float beta, float* C, int ldc);
void gemm_reference(bool transpose_a, bool transpose_b, int M, int N, int K, float alpha,
                    const float* A, int lda, const float* B, int ldb, float beta, float* C,
                    int ldc);

// Time and work spent in gemm() since the last reset, for "where does the time go" reports.
// Calls made inside a parallel region count their time divided by the team size.
struct GemmStats {
  double seconds = 0, flops = 0;
  long calls = 0;
};
GemmStats gemm_stats();
void reset_gemm_stats();

// Measures this machine's sgemm rate (FLOP/s) on square n×n products with the current threads.
double measure_gemm_peak(int n = 1024, int repeats = 5);

// The common cases of a linear layer with f32 weights W [out, in], inputs x [n, in]:
//   y = x·Wᵀ (forward), dx (+)= dy·W, dW += dyᵀ·x (backward).
void matmul_xwt(const float* x, const float* w, int n, int in, int out, float* y,
                bool accumulate = false);
void matmul_dy_w(const float* dy, const float* w, int n, int in, int out, float* dx,
                 bool accumulate);
void matmul_dyt_x(const float* dy, const float* x, int n, int in, int out, float* dw);

}  // namespace whale
