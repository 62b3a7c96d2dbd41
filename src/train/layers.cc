#include "train/layers.h"

#include <cmath>

#include "ops/gemm.h"

namespace whale {

static const float* f32(const Linear& w) {
  return reinterpret_cast<const float*>(w.data);
}

void linear_train_forward(const Linear& w, const float* x, int n, float* y) {
  matmul_xwt(x, f32(w), n, w.cols, w.rows, y);
}

void linear_train_backward(const Linear& w, ParamStore& store, const float* x, const float* dy,
                           int n, float* dx) {
  matmul_dyt_x(dy, x, n, w.cols, w.rows, store.grad_of(w.data));
  if (dx) matmul_dy_w(dy, f32(w), n, w.cols, w.rows, dx, true);
}

void rmsnorm_train_forward(const float* x, const Vector& w, int n, int dim, float eps, float* y,
                           float* rstd) {
#pragma omp parallel for schedule(static) if (static_cast <size_t>(n) * dim > 16384)
  for (int i = 0; i < n; ++i) {
    const float* xi = x + static_cast<size_t>(i) * dim;
    double sum = 0;
    for (int d = 0; d < dim; ++d) sum += static_cast<double>(xi[d]) * xi[d];
    float r = static_cast<float>(1.0 / std::sqrt(sum / dim + eps));
    rstd[i] = r;
    float* yi = y + static_cast<size_t>(i) * dim;
    for (int d = 0; d < dim; ++d) yi[d] = xi[d] * r * w[d];
  }
}

// y = x·r·w with r = (mean x² + eps)^-½:  dw += Σ dy·x·r;
// dx = r·(dy∘w) − x·r³/dim·Σ(dy∘w∘x).
void rmsnorm_train_backward(const float* x, const Vector& w, const float* rstd, const float* dy,
                            int n, int dim, ParamStore& store, float* dx) {
  float* dw = store.grad_of(w.data());
  std::vector<double> dw_acc(dim, 0.0);
  for (int i = 0; i < n; ++i) {
    const float* xi = x + static_cast<size_t>(i) * dim;
    const float* dyi = dy + static_cast<size_t>(i) * dim;
    const float r = rstd[i];
    double dot = 0;
    for (int d = 0; d < dim; ++d) {
      dw_acc[d] += static_cast<double>(dyi[d]) * xi[d] * r;
      dot += static_cast<double>(dyi[d]) * w[d] * xi[d];
    }
    const float k = static_cast<float>(dot) * r * r * r / dim;
    float* dxi = dx + static_cast<size_t>(i) * dim;
    for (int d = 0; d < dim; ++d) dxi[d] += r * dyi[d] * w[d] - xi[d] * k;
  }
  for (int d = 0; d < dim; ++d) dw[d] += static_cast<float>(dw_acc[d]);
}

void causal_softmax(float* S, int T) {
  for (int t = 0; t < T; ++t) {
    float* row = S + static_cast<size_t>(t) * T;
    softmax(row, t + 1);
    std::fill(row + t + 1, row + T, 0.0f);
  }
}

// dS = P ∘ (dP − rowsum(P ∘ dP)) · scale.
void causal_softmax_backward(const float* P, float* dP, int T, float scale) {
  for (int t = 0; t < T; ++t) {
    const float* p = P + static_cast<size_t>(t) * T;
    float* d = dP + static_cast<size_t>(t) * T;
    double dot = 0;
    for (int s = 0; s <= t; ++s) dot += static_cast<double>(p[s]) * d[s];
    for (int s = 0; s < T; ++s)
      d[s] = s <= t ? p[s] * (d[s] - static_cast<float>(dot)) * scale : 0.0f;
  }
}

void add_bias_rows(float* y, const Vector& b, int n, int dim) {
  if (b.empty()) return;
  for (int i = 0; i < n; ++i)
    for (int d = 0; d < dim; ++d) y[static_cast<size_t>(i) * dim + d] += b[d];
}

void bias_train_backward(const Vector& b, ParamStore& store, const float* dy, int n, int dim) {
  if (b.empty()) return;
  float* db = store.grad_of(b.data());
  for (int i = 0; i < n; ++i)
    for (int d = 0; d < dim; ++d) db[d] += dy[static_cast<size_t>(i) * dim + d];
}

void ffn_train_forward(const FeedForward& f, const float* x, int n, FfnCache& cache, float* y) {
  const int inter = f.gate_proj.rows, H = f.down_proj.rows;
  const size_t m = static_cast<size_t>(n) * inter;
  cache.gate.resize(m);
  cache.up.resize(m);
  cache.hidden.resize(m);
  linear_train_forward(f.gate_proj, x, n, cache.gate.data());
  linear_train_forward(f.up_proj, x, n, cache.up.data());
  add_bias_rows(cache.gate.data(), f.gate_bias, n, inter);
  add_bias_rows(cache.up.data(), f.up_bias, n, inter);
  for (size_t i = 0; i < m; ++i) {
    float g = cache.gate[i];
    cache.hidden[i] = g / (1.0f + std::exp(-g)) * cache.up[i];
  }
  linear_train_forward(f.down_proj, cache.hidden.data(), n, y);
  add_bias_rows(y, f.down_bias, n, H);
}

// h = silu(g)·u: dg = dh·u·σ(g)(1 + g(1 − σ(g))), du = dh·silu(g).
void ffn_train_backward(const FeedForward& f, ParamStore& store, const float* x, int n,
                        const FfnCache& cache, const float* dy, float* dx) {
  const int inter = f.gate_proj.rows, H = f.down_proj.rows;
  const size_t m = static_cast<size_t>(n) * inter;
  bias_train_backward(f.down_bias, store, dy, n, H);
  std::vector<float> dhidden(m, 0.0f), dgate(m), dup(m);
  linear_train_backward(f.down_proj, store, cache.hidden.data(), dy, n, dhidden.data());
  for (size_t i = 0; i < m; ++i) {
    float g = cache.gate[i], s = 1.0f / (1.0f + std::exp(-g));
    dgate[i] = dhidden[i] * cache.up[i] * s * (1.0f + g * (1.0f - s));
    dup[i] = dhidden[i] * g * s;
  }
  bias_train_backward(f.gate_bias, store, dgate.data(), n, inter);
  bias_train_backward(f.up_bias, store, dup.data(), n, inter);
  linear_train_backward(f.gate_proj, store, x, dgate.data(), n, dx);
  linear_train_backward(f.up_proj, store, x, dup.data(), n, dx);
}

double cross_entropy(const float* logits, const int* targets, int n, int vocab, float weight,
                     float* dlogits) {
  int count = 0;
  for (int i = 0; i < n; ++i) count += targets[i] >= 0;
  // Per-row losses summed in order afterwards: the same bits on every run (resumes replay
  // exactly), whatever the threads do.
  std::vector<double> row_loss(n, 0.0);
#pragma omp parallel for schedule(static)
  for (int i = 0; i < n; ++i) {
    const float* row = logits + static_cast<size_t>(i) * vocab;
    float* drow = dlogits ? dlogits + static_cast<size_t>(i) * vocab : nullptr;
    if (targets[i] < 0) {
      if (drow) std::fill(drow, drow + vocab, 0.0f);
      continue;
    }
    float max = row[0];
    for (int v = 1; v < vocab; ++v) max = std::max(max, row[v]);
    double sum = 0;
    for (int v = 0; v < vocab; ++v) sum += std::exp(static_cast<double>(row[v]) - max);
    double log_z = max + std::log(sum);
    row_loss[i] = log_z - row[targets[i]];
    if (drow) {
      const float scale = weight / count;
      for (int v = 0; v < vocab; ++v)
        drow[v] = static_cast<float>(std::exp(row[v] - log_z)) * scale;
      drow[targets[i]] -= scale;
    }
  }
  double total = 0;
  for (double l : row_loss) total += l;
  return count ? total / count : 0.0;
}

double kl_divergence_row(const float* teacher, const float* student, int vocab, double tau,
                         double grad_scale, float* dstudent) {
  double ms = -INFINITY, mt = -INFINITY;
  for (int v = 0; v < vocab; ++v) {
    ms = std::max(ms, student[v] / tau);
    mt = std::max(mt, teacher[v] / tau);
  }
  // Per-thread scratch, kept between calls: a 129k vocabulary's rows would otherwise allocate
  // (and page-fault) 2 MB each.
  thread_local std::vector<double> es, et;
  es.resize(vocab);
  et.resize(vocab);
  double ss = 0, st = 0;
  for (int v = 0; v < vocab; ++v) {
    ss += (es[v] = std::exp(student[v] / tau - ms));
    st += (et[v] = std::exp(teacher[v] / tau - mt));
  }
  double kl = 0;
  for (int v = 0; v < vocab; ++v) {
    const double ps = es[v] / ss, pt = et[v] / st;
    if (pt > 0) kl += pt * (std::log(pt) - std::log(std::max(ps, 1e-300)));
    if (dstudent) dstudent[v] += static_cast<float>(grad_scale * (ps - pt));
  }
  return kl;
}

}  // namespace whale
