// DeepSeekMoE for training: the router's choice is discrete (no gradient through it); the
// gates are differentiable functions of the unbiased scores; the routing bias gets none.
#include <cmath>

#include "ops/gemm.h"
#include "train/layers.h"

namespace whale {

void moe_train_forward(const ModelConfig& c, const Moe& moe, const float* u, int B, int T,
                       MoeCache& m, float* out, const std::vector<int>* forced) {
  const int n = B * T, H = c.hidden_size, E = c.n_routed_experts, K = c.num_experts_per_tok;
  m.scores = router_scores(c, moe.router, u, n);
  m.routing = choose_experts(c, moe.router, m.scores.data(), n);
  if (forced) {
    // Keep routing: the experts chosen at sampling time; gates from the current scores.
    m.routing.experts = *forced;
    for (int t = 0; t < n; ++t) {
      float sum = 0;
      for (int k = 0; k < K; ++k)
        sum += m.scores[static_cast<size_t>(t) * E + m.routing.experts[t * K + k]];
      for (int k = 0; k < K; ++k) {
        float g = m.scores[static_cast<size_t>(t) * E + m.routing.experts[t * K + k]];
        if (c.norm_topk_prob) g /= (sum + 1e-20f);
        m.routing.gates[t * K + k] = g * static_cast<float>(c.routed_scaling_factor);
      }
    }
  }
  m.slots.assign(E, {});
  m.load.assign(E, 0);
  for (int i = 0; i < n * K; ++i) {
    m.slots[m.routing.experts[i]].push_back(i);
    m.load[m.routing.experts[i]]++;
  }
  if (moe.has_shared) {
    m.shared_out.resize(static_cast<size_t>(n) * H);
    ffn_train_forward(moe.shared, u, n, m.shared, m.shared_out.data());
    std::copy(m.shared_out.begin(), m.shared_out.end(), out);
  } else {
    std::fill(out, out + static_cast<size_t>(n) * H, 0.0f);
  }
  m.expert_in.assign(E, {});
  m.expert_out.assign(E, {});
  m.experts.assign(E, {});
  for (int e = 0; e < E; ++e) {
    const int count = static_cast<int>(m.slots[e].size());
    if (count == 0) continue;
    auto& in = m.expert_in[e];
    auto& y = m.expert_out[e];
    in.resize(static_cast<size_t>(count) * H);
    y.resize(in.size());
    for (int i = 0; i < count; ++i)
      std::copy_n(u + static_cast<size_t>(m.slots[e][i] / K) * H, H,
                  in.data() + static_cast<size_t>(i) * H);
    ffn_train_forward(moe.experts[e], in.data(), count, m.experts[e], y.data());
    for (int i = 0; i < count; ++i) {
      const float g = m.routing.gates[m.slots[e][i]];
      float* o = out + static_cast<size_t>(m.slots[e][i] / K) * H;
      for (int d = 0; d < H; ++d) o[d] += g * y[static_cast<size_t>(i) * H + d];
    }
  }
}

namespace {

// f_e = N_r/(K_r·T')·count_e and the scores normalized per token, over one group of tokens
// (a sequence, or the whole batch). Returns Σ_e f_e·P_e; adds coef·∂/∂s into dscores.
double balance_group(const ModelConfig& c, const MoeCache& m, int first, int count, float coef,
                     float* dscores) {
  const int E = c.n_routed_experts, K = c.num_experts_per_tok;
  std::vector<double> f(E, 0.0), P(E, 0.0);
  for (int t = first; t < first + count; ++t)
    for (int k = 0; k < K; ++k) f[m.routing.experts[t * K + k]] += 1.0;
  for (double& v : f) v *= static_cast<double>(E) / (static_cast<double>(K) * count);
  for (int t = first; t < first + count; ++t) {
    const float* s = m.scores.data() + static_cast<size_t>(t) * E;
    double z = 0, fs = 0;
    for (int e = 0; e < E; ++e) {
      z += s[e];
      fs += f[e] * s[e];
    }
    for (int e = 0; e < E; ++e) P[e] += s[e] / z / count;
    if (dscores) {
      // ∂(Σ_e f_e s_e/z)/∂s_j = f_j/z − Σ_e f_e s_e/z².
      float* ds = dscores + static_cast<size_t>(t) * E;
      for (int e = 0; e < E; ++e)
        ds[e] += static_cast<float>(coef * (f[e] / z - fs / (z * z)) / count);
    }
  }
  double bal = 0;
  for (int e = 0; e < E; ++e) bal += f[e] * P[e];
  return bal;
}

// BAL averaged over the groups; the gradient of α·BAL goes into dscores when non-null.
double balance(const ModelConfig& c, const MoeCache& m, int B, int T, BalanceScope scope,
               float alpha, float* dscores) {
  if (scope == BalanceScope::kBatch) return balance_group(c, m, 0, B * T, alpha, dscores);
  double total = 0;
  for (int b = 0; b < B; ++b) total += balance_group(c, m, b * T, T, alpha / B, dscores);
  return total / B;
}

}  // namespace

double balance_loss(const ModelConfig& c, const MoeCache& m, int B, int T, BalanceScope scope) {
  return balance(c, m, B, T, scope, 0.0f, nullptr);
}

double moe_train_backward(const ModelConfig& c, const Moe& moe, ParamStore& store, const float* u,
                          int B, int T, const MoeCache& m, const float* dout, float* du,
                          float balance_alpha, BalanceScope scope) {
  const int n = B * T, H = c.hidden_size, E = c.n_routed_experts, K = c.num_experts_per_tok;
  if (moe.has_shared) ffn_train_backward(moe.shared, store, u, n, m.shared, dout, du);

  std::vector<float> dgates(static_cast<size_t>(n) * K, 0.0f);
  std::vector<float> dy, dx;
  for (int e = 0; e < E; ++e) {
    const int count = static_cast<int>(m.slots[e].size());
    if (count == 0) continue;
    dy.assign(static_cast<size_t>(count) * H, 0.0f);
    dx.assign(dy.size(), 0.0f);
    for (int i = 0; i < count; ++i) {
      const int slot = m.slots[e][i];
      const float* d = dout + static_cast<size_t>(slot / K) * H;
      const float* y = m.expert_out[e].data() + static_cast<size_t>(i) * H;
      const float g = m.routing.gates[slot];
      double dg = 0;
      for (int k = 0; k < H; ++k) {
        dg += static_cast<double>(d[k]) * y[k];
        dy[static_cast<size_t>(i) * H + k] = g * d[k];
      }
      dgates[slot] = static_cast<float>(dg);
    }
    ffn_train_backward(moe.experts[e], store, m.expert_in[e].data(), count, m.experts[e], dy.data(),
                       dx.data());
    for (int i = 0; i < count; ++i) {
      float* target = du + static_cast<size_t>(m.slots[e][i] / K) * H;
      for (int k = 0; k < H; ++k) target[k] += dx[static_cast<size_t>(i) * H + k];
    }
  }

  // Gates → scores: g_k = ρ·s_k/S (normalized) or ρ·s_k.
  const float rho = static_cast<float>(c.routed_scaling_factor);
  std::vector<float> dscores(static_cast<size_t>(n) * E, 0.0f);
  for (int t = 0; t < n; ++t) {
    const int* chosen = m.routing.experts.data() + static_cast<size_t>(t) * K;
    const float* s = m.scores.data() + static_cast<size_t>(t) * E;
    float* ds = dscores.data() + static_cast<size_t>(t) * E;
    const float* dg = dgates.data() + static_cast<size_t>(t) * K;
    if (c.norm_topk_prob) {
      double S = 1e-20, weighted = 0;
      for (int k = 0; k < K; ++k) S += s[chosen[k]];
      for (int k = 0; k < K; ++k) weighted += static_cast<double>(dg[k]) * s[chosen[k]];
      for (int k = 0; k < K; ++k)
        ds[chosen[k]] += static_cast<float>(rho * (dg[k] / S - weighted / (S * S)));
    } else {
      for (int k = 0; k < K; ++k) ds[chosen[k]] += rho * dg[k];
    }
  }
  double bal =
      balance(c, m, B, T, scope, balance_alpha, balance_alpha != 0 ? dscores.data() : nullptr);

  // Scores → router logits.
  std::vector<float> dlogits(dscores.size());
  for (int t = 0; t < n; ++t) {
    const float* s = m.scores.data() + static_cast<size_t>(t) * E;
    const float* ds = dscores.data() + static_cast<size_t>(t) * E;
    float* dl = dlogits.data() + static_cast<size_t>(t) * E;
    if (c.scoring_func == "softmax") {
      double dot = 0;
      for (int e = 0; e < E; ++e) dot += static_cast<double>(s[e]) * ds[e];
      for (int e = 0; e < E; ++e) dl[e] = s[e] * (ds[e] - static_cast<float>(dot));
    } else {
      for (int e = 0; e < E; ++e) dl[e] = ds[e] * s[e] * (1.0f - s[e]);
    }
  }
  linear_train_backward(moe.router.weight, store, u, dlogits.data(), n, du);
  return bal;
}

}  // namespace whale
