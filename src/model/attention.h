// Attention layers: Multi-head Latent Attention (DeepSeek V2/V3/V3.2, with the V3.2 lightning
// indexer choosing which past tokens each query sees) and grouped-query attention (Qwen2, Llama).
#pragma once
#include <functional>
#include <vector>

#include "model/config.h"
#include "model/kv_cache.h"
#include "model/weights.h"
#include "ops/nn.h"

namespace whale {

// Naive: expand every cached latent to per-head keys and values (the training form).
// Absorbed: fold W_UK into the query and W_UV into the output and attend over the latents
// directly (MQA over kv_lora_rank + qk_rope_head_dim). Auto: absorbed for a segment of fewer
// than kAbsorbedMaxRows rows (decode, batched decode, speculative verification and the MTP
// rows that follow it: expanding every cached latent would cost far more than those few rows'
// attention), naive for longer ones (prefill). Both give the same result up to rounding.
enum class AttentionPath { kAuto, kNaive, kAbsorbed };
constexpr int kAbsorbedMaxRows = 8;

struct ForwardOptions {
  AttentionPath attention = AttentionPath::kAuto;
  // V3.2: attend only to the indexer's top-k (the published model). false gives dense
  // attention, as in DSA's dense warm-up stage; the indexer still runs and fills its cache.
  bool sparse_attention = true;
  // Called after each MoE layer with the experts chosen for the batch's rows (keep-routing
  // records them at sampling time to replay them in training).
  std::function<void(int layer, const struct Routing& routing)> on_routing;
  // Logits only for each sequence's last row ([sequences, vocab]): what sampling needs, without
  // the head's cost for every prompt token.
  bool last_logits_only = false;
};

// Which cached positions each of T queries may attend to: allowed[t][s] for s < pos0 + t + 1.
// Empty means plain causal attention.
using AttentionMask = std::vector<std::vector<char>>;

// A batch of rows may hold several sequences: a segment is a run of consecutive rows of one
// sequence, with that sequence's cache for this layer and the position of its first row.
// One sequence's prefill is one segment; a batched decode step is one single-row segment per
// sequence (continuous batching mixes both).
struct Segment {
  LayerCache* cache;
  int pos0;
  int rows;
};

// Appends every row's entry to its segment's cache and returns the attention output
// [rows, hidden]. `h` is the normed input [rows, hidden].
void mla_forward(const ModelConfig& c, const MlaWeights& w, const Rope& rope, const float* h,
                 const std::vector<Segment>& segments, const ForwardOptions& options, float* out);

// Only appends the rows' cache entries (their latents and rotated rope keys), for rows whose
// attention output nobody reads: the MTP rows of a speculative step before the last, which the
// next draft attends to but whose own predictions are not needed. Not for V3.2 layers.
void mla_fill_cache(const ModelConfig& c, const MlaWeights& w, const Rope& rope, const float* h,
                    const Segment& segment);

// V3.2 lightning indexer: scores every causal position for each query and keeps the top
// index_topk. Appends the T tokens' indexer keys to `cache`. c_q is the normed query latent.
AttentionMask indexer_select(const ModelConfig& c, const Indexer& w, const Rope& rope,
                             const float* h, const float* c_q, int T, int pos0, LayerCache& cache);

void dense_attention_forward(const ModelConfig& c, const DenseAttentionWeights& w, const Rope& rope,
                             const float* h, const std::vector<Segment>& segments, float* out);

// A prompt's attention for one head by sgemm, a block of rows at a time (MLA's naive form, the
// dense students' prefill): a dot and an axpy per position and head would cost 5× more at 512
// tokens. Rows [t0, t0 + n) of a segment whose first row sits at position pos0 see positions
// < pos0 + t + 1 (and only those `mask` allows, when given): scores = scale · Σ over the terms of
// q kᵀ, softmax per row, out = P V. Row j of a term's q is at q + j·ldq, position s's key at
// k + s·ldk (dim values); position s's value at v + s·ldv (dv values); row j's output at
// out + j·ldo. scores holds n · (pos0 + t0 + n) floats.
struct ScoreTerm {
  const float* q;
  int ldq;
  const float* k;
  int ldk, dim;
};
void attention_block(const std::vector<ScoreTerm>& terms, float scale, const float* v, int ldv,
                     int dv, int pos0, int t0, int n, const AttentionMask& mask, float* scores,
                     float* out, int ldo);
// Rows per block for a segment of L positions: at most 1 MiB of scores, 8 to 64 rows.
int attention_block_rows(int L);

// Total rows of a batch, and each row's segment and position.
struct RowMap {
  int rows = 0;
  std::vector<int> segment, position;
  explicit RowMap(const std::vector<Segment>& segments);
};

}  // namespace whale
