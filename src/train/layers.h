// Training forward and backward of each layer, side by side (llm.c style). Forward functions
// keep what their backward needs in a cache struct; backward functions take the output
// gradient, ADD into the input gradient, and add parameter gradients into the ParamStore.
// Weights are f32 views into the store (see ParamStore), so a parameter's gradient lives at
// store.grad_of(its data).
// Shapes: n = B·T rows of a batch of B sequences of T tokens each.
#pragma once
#include <vector>

#include "model/config.h"
#include "model/moe.h"
#include "model/weights.h"
#include "ops/nn.h"
#include "train/params.h"

namespace whale {

// ---- Linear (f32 weight views) ----
void linear_train_forward(const Linear& w, const float* x, int n, float* y);
// dW += dyᵀx; dx += dy·W (dx may be null).
void linear_train_backward(const Linear& w, ParamStore& store, const float* x, const float* dy,
                           int n, float* dx);

// ---- Bias rows: y[i] += b, and db += Σ_i dy[i] (both no-ops for an empty bias) ----
void add_bias_rows(float* y, const Vector& b, int n, int dim);
void bias_train_backward(const Vector& b, ParamStore& store, const float* dy, int n, int dim);

// ---- Causal softmax over a [T, T] score matrix, and its backward (in place over dP) ----
void causal_softmax(float* S, int T);
void causal_softmax_backward(const float* P, float* dP, int T, float scale);

// ---- RMSNorm over rows of `dim` ----
void rmsnorm_train_forward(const float* x, const Vector& w, int n, int dim, float eps, float* y,
                           float* rstd);
void rmsnorm_train_backward(const float* x, const Vector& w, const float* rstd, const float* dy,
                            int n, int dim, ParamStore& store, float* dx);

// ---- SwiGLU FFN ----
struct FfnCache {
  std::vector<float> gate, up, hidden;  // gate and up pre-activations; silu(gate)·up
};
void ffn_train_forward(const FeedForward& f, const float* x, int n, FfnCache& cache, float* y);
void ffn_train_backward(const FeedForward& f, ParamStore& store, const float* x, int n,
                        const FfnCache& cache, const float* dy, float* dx);

// ---- Multi-head latent attention (naive form, causal over each sequence) ----
struct MlaCache {
  std::vector<float> c_q_raw, c_q, c_q_rstd;           // q-LoRA: W_DQ x, its RMSNorm, 1/rms
  std::vector<float> q;                                // [n, heads·(nope+rope)], rope part rotated
  std::vector<float> latent_raw, latent, latent_rstd;  // c_KV before/after its RMSNorm
  std::vector<float> k_rope;                           // [n, rope], rotated
  std::vector<float> kv;                               // [n, heads·(nope+v)] = W_UKV c_KV
  std::vector<float> probs;                            // [B, heads, T, T] attention weights
  std::vector<float> attn;                             // [n, heads·v] before o_proj
};
void mla_train_forward(const ModelConfig& c, const MlaWeights& w, const Rope& rope, const float* x,
                       int B, int T, MlaCache& cache, float* out);
void mla_train_backward(const ModelConfig& c, const MlaWeights& w, const Rope& rope,
                        ParamStore& store, const float* x, int B, int T, const MlaCache& cache,
                        const float* dout, float* dx);

// ---- Grouped-query attention of the dense students ----
struct DenseAttentionCache {
  std::vector<float> q, k, v;  // after bias and RoPE
  std::vector<float> probs;    // [B, heads, T, T]
  std::vector<float> attn;     // [n, heads·head_dim]
};
void dense_attention_train_forward(const ModelConfig& c, const DenseAttentionWeights& w,
                                   const Rope& rope, const float* x, int B, int T,
                                   DenseAttentionCache& cache, float* out);
void dense_attention_train_backward(const ModelConfig& c, const DenseAttentionWeights& w,
                                    const Rope& rope, ParamStore& store, const float* x, int B,
                                    int T, const DenseAttentionCache& cache, const float* dout,
                                    float* dx);

// ---- DeepSeekMoE ----
// The complementary balance loss BAL = Σ_e f_e·P_e (MISSION §1), with f_e the fraction-scaled
// count of tokens routed to e and P_e the mean normalized score, computed per sequence
// ("sequence", V3) or over the whole batch ("batch", V2's expert-level loss), averaged over
// the batch's sequences.
enum class BalanceScope { kSequence, kBatch };
struct MoeCache {
  std::vector<float> scores;  // [n, E] unbiased router scores
  Routing routing;
  std::vector<std::vector<int>> slots;  // per expert: slot ids t·K + k routed to it
  std::vector<std::vector<float>> expert_in, expert_out;
  std::vector<FfnCache> experts;
  FfnCache shared;
  std::vector<float> shared_out;
  std::vector<int> load;  // tokens per expert in this batch
};
// `forced` (optional): use these experts instead of the router's choice (keep-routing), the
// gates still come from the current scores.
void moe_train_forward(const ModelConfig& c, const Moe& moe, const float* u, int B, int T,
                       MoeCache& cache, float* out, const std::vector<int>* forced = nullptr);
// Returns BAL of this layer (for logging); adds balance_alpha·∂BAL into the router gradient.
double moe_train_backward(const ModelConfig& c, const Moe& moe, ParamStore& store, const float* u,
                          int B, int T, const MoeCache& cache, const float* dout, float* du,
                          float balance_alpha, BalanceScope scope);
double balance_loss(const ModelConfig& c, const MoeCache& cache, int B, int T, BalanceScope scope);

// ---- Cross-entropy ----
// Mean over rows with target >= 0 of −log softmax(logits)[target]; writes
// dlogits = weight·(softmax − onehot)/count (zero for rows without a target). Returns the mean.
double cross_entropy(const float* logits, const int* targets, int n, int vocab, float weight,
                     float* dlogits);
// KL(softmax(teacher/τ) ‖ softmax(student/τ)) of one row of logits, in double; when dstudent is
// given, adds grad_scale·(p_student − p_teacher) to it (the KL's gradient in the student's
// logits is (p_student − p_teacher)/τ). The teacher gets no gradient.
double kl_divergence_row(const float* teacher, const float* student, int vocab, double tau,
                         double grad_scale, float* dstudent);

}  // namespace whale
