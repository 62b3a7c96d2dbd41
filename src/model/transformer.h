// The whole model: embedding → blocks (pre-norm attention and FFN/MoE, residual) → final norm
// → head; plus DeepSeek-V3's MTP module. Works for DeepSeek V2/V3/V3.2 and Qwen2/Llama.
#pragma once
#include <memory>
#include <string>

#include "io/safetensors.h"
#include "model/attention.h"
#include "model/config.h"
#include "model/kv_cache.h"
#include "model/weights.h"

namespace whale {

class Model {
 public:
  // Opens DIR/config.json and the safetensors weights (memory-mapped; on AVX512-VNNI CPUs, unless
  // --exact, the q8 and q4 matrices are copied with their rows in decode's order,
  // model/weights.h).
  static std::unique_ptr<Model> load(const std::string& dir);
  // A model over tensors held elsewhere (e.g. training's parameter store: the model then sees
  // every optimizer update, as its weights are views). The source must outlive the model.
  static std::unique_ptr<Model> from_source(const ModelConfig& config, const TensorSource& source);

  const ModelConfig& config() const { return config_; }
  const Weights& weights() const { return weights_; }
  const Checkpoint& checkpoint() const { return *checkpoint_; }  // only for load()
  KVCache new_cache() const { return KVCache::for_layers(config_.num_hidden_layers); }
  KVCache new_mtp_cache() const { return KVCache::for_layers(1); }

  // Runs T tokens at positions cache.length … cache.length + T − 1 and advances the cache.
  // logits: [T, vocab] or null; normed_hidden: [T, hidden] (after the final norm) or null.
  void forward(const int* tokens, int T, KVCache& cache, float* logits,
               float* normed_hidden = nullptr, const ForwardOptions& options = {}) const;

  // Several sequences in one pass (their rows share every weight read): sequence i
  // contributes counts[i] consecutive tokens, at positions caches[i]->length …; each cache
  // advances. Outputs are [Σ counts, ·] in the same row order (logits [sequences, vocab] with
  // options.last_logits_only).
  void forward_batch(const int* tokens, const std::vector<KVCache*>& caches,
                     const std::vector<int>& counts, float* logits, float* normed_hidden = nullptr,
                     const ForwardOptions& options = {}) const;

  // MTP (D = 1): row i predicts token i+2 from the main model's normed hidden state h_i and the
  // embedding of token i+1: x = eh_proj([enorm(Emb(next_tokens[i])) ; hnorm(h_i)]), then one
  // transformer block (its own cache, RoPE position i), shared_head.norm and shared_head.head.
  // logits: [T, vocab], or null to only extend the MTP cache. head_input, when given, receives
  // [T, hidden]: the normed states the head reads (shared_head.norm's output) — speculative
  // decoding chains drafts by feeding them back in place of the main model's normed states.
  // With options.last_logits_only both hold the last row's only ([1, ·]); the rows before it
  // then only enter the cache, as all rows do when neither is given.
  void mtp_forward(const int* next_tokens, const float* normed_hidden, int T, KVCache& mtp_cache,
                   float* logits, const ForwardOptions& options = {},
                   float* head_input = nullptr) const;

  // Parameter counts. active: per token (routed experts counted K of N; the input embedding
  // is a row lookup and is not counted, the head is).
  struct ParamCounts {
    size_t total = 0, active = 0, mtp = 0;
  };
  ParamCounts parameter_counts() const;

 private:
  // forward_batch's and mtp_forward's work once their input is checked.
  void mtp_rows(const int* next_tokens, const float* normed_hidden, int T, KVCache& mtp_cache,
                float* logits, const ForwardOptions& options, float* head_input) const;
  void forward_rows(const int* tokens, int T, const std::vector<KVCache*>& caches,
                    const std::vector<int>& counts, float* logits, float* normed_hidden,
                    const ForwardOptions& options) const;
  void block_forward(const Layer& layer, int layer_index, float* x,
                     const std::vector<Segment>& segments, const ForwardOptions& options) const;
  void check_tokens(const int* tokens, int T) const;

  ModelConfig config_;
  std::unique_ptr<Checkpoint> checkpoint_;
  Weights weights_;
  PageBuffer group_lanes_;         // the reordered q8/q4 matrices weights_ points into
  PackedBf16Storage packed_bf16_;  // and the packed bf16 ones
  Rope rope_;
};

}  // namespace whale
