// The whole model for training: forward over a batch of B sequences of T tokens with every
// activation kept, and backward from the gradient of the logits (and of the MTP logits).
// Objectives (cross-entropy, GRPO, distillation, ...) are computed outside from the logits.
#pragma once
#include <vector>

#include "train/layers.h"
#include "train/params.h"

namespace whale {

struct TrainOptions {
  bool mtp = true;  // run the MTP module (when the model has one)
  float balance_alpha = 0.0f;
  BalanceScope balance_scope = BalanceScope::kSequence;
  // Keep routing: per main MoE layer, the experts [B·T·K] to use instead of the router's.
  const std::vector<std::vector<int>>* forced_routing = nullptr;
};

class TrainModel {
 public:
  explicit TrainModel(ParamStore& store);

  // logits: [B·T, vocab]. If the model has MTP and options.mtp, mtp_logits: [B·(T−1), vocab],
  // row (b, i) predicting token i+2 of sequence b from position i.
  void forward(const int* tokens, int B, int T, const TrainOptions& options);
  // Adds the gradients of (loss whose logits-gradients are given) + α·BAL into the store.
  // dmtp_logits may be null (no MTP loss). Returns the summed BAL over the main MoE layers.
  // main = false: only the MTP module's gradients (dlogits unused, may be null; the main model
  // is frozen, so nothing flows into it and its BAL is not back-propagated either).
  double backward(const float* dlogits, const float* dmtp_logits, bool main = true);

  const std::vector<float>& logits() const { return logits_; }
  const std::vector<float>& mtp_logits() const { return mtp_logits_; }
  bool has_mtp_output() const { return run_mtp_; }
  // Tokens routed to each expert in the last forward, per main MoE layer (empty for dense).
  std::vector<std::vector<int>> expert_loads() const;
  // Tokens routed to each expert of the MTP layer in the last forward (empty if none).
  std::vector<int> mtp_expert_load() const {
    return run_mtp_ && weights_.mtp.block.is_moe ? mtp_block_.moe.load : std::vector<int>{};
  }
  // The experts chosen in the last forward, per main MoE layer (for keep-routing replay).
  std::vector<std::vector<int>> routing() const;
  double balance_loss_value() const;  // BAL of the last forward, summed over main MoE layers
  const ModelConfig& config() const { return config_; }
  // Views of the parameters (refresh after the store's values are replaced wholesale).
  const Weights& weights() const { return weights_; }

 private:
  struct BlockCache {
    std::vector<float> x_in, normed1, rstd1, x_mid, normed2, rstd2;
    MlaCache mla;
    DenseAttentionCache attn;
    FfnCache ffn;
    MoeCache moe;
  };
  void block_forward(const Layer& layer, float* x, int B, int T, BlockCache& cache,
                     const std::vector<int>* forced);
  void block_backward(const Layer& layer, float* dx, int B, int T, BlockCache& cache,
                      float balance_alpha, double* bal);

  ParamStore& store_;
  ModelConfig config_;
  Weights weights_;
  Rope rope_;
  // Last forward.
  int B_ = 0, T_ = 0;
  TrainOptions options_;
  bool run_mtp_ = false;
  std::vector<int> tokens_;
  std::vector<BlockCache> blocks_;
  std::vector<float> final_in_, final_rstd_, normed_, logits_;
  // MTP module.
  std::vector<int> mtp_next_;
  std::vector<float> mtp_embed_, mtp_enormed_, mtp_erstd_, mtp_h_, mtp_hnormed_, mtp_hrstd_;
  std::vector<float> mtp_concat_, mtp_x_, mtp_out_rstd_, mtp_out_normed_, mtp_logits_;
  BlockCache mtp_block_;
};

}  // namespace whale
