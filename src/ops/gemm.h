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

// The common cases of a linear layer with f32 weights W [out, in], inputs x [n, in]:
//   y = x·Wᵀ (forward), dx (+)= dy·W, dW += dyᵀ·x (backward).
void matmul_xwt(const float* x, const float* w, int n, int in, int out, float* y,
                bool accumulate = false);
void matmul_dy_w(const float* dy, const float* w, int n, int in, int out, float* dx,
                 bool accumulate);
void matmul_dyt_x(const float* dy, const float* x, int n, int in, int out, float* dw);

}  // namespace whale
