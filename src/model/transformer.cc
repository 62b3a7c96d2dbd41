#include "model/transformer.h"

#include "base/aligned.h"
#include "base/error.h"
#include "base/file.h"
#include "model/moe.h"
#include "ops/nn.h"
#include "ops/team.h"

namespace whale {

std::unique_ptr<Model> Model::load(const std::string& dir) {
  ModelConfig config = ModelConfig::load(dir);
  auto checkpoint = std::make_unique<Checkpoint>(dir);
  auto model = from_source(config, *checkpoint);
  put_rows_in_group_lanes(model->config_, model->weights_, &model->group_lanes_,
                          release_mapped_pages);
  pack_bf16_rows(model->config_, model->weights_, &model->packed_bf16_, release_mapped_pages);
  model->checkpoint_ = std::move(checkpoint);
  return model;
}

std::unique_ptr<Model> Model::from_source(const ModelConfig& config, const TensorSource& source) {
  auto model = std::unique_ptr<Model>(new Model());
  model->config_ = config;
  model->weights_ = load_weights(config, source);
  const ModelConfig& c = model->config_;
  model->rope_ = Rope(c, c.is_deepseek() ? c.qk_rope_head_dim : c.dense_head_dim());
  return model;
}

void Model::check_tokens(const int* tokens, int T) const {
  for (int t = 0; t < T; ++t)
    check(tokens[t] >= 0 && tokens[t] < config_.vocab_size,
          "token id " + std::to_string(tokens[t]) + " at position " + std::to_string(t) +
              " is outside the vocabulary [0, " + std::to_string(config_.vocab_size) + ")");
}

// h = x + Attn(RMSNorm(x)); out = h + FFN(RMSNorm(h)).
void Model::block_forward(const Layer& layer, int layer_index, float* x,
                          const std::vector<Segment>& segments,
                          const ForwardOptions& options) const {
  const ModelConfig& c = config_;
  const int H = c.hidden_size;
  int T = 0;
  for (const Segment& s : segments) T += s.rows;
  const size_t n = static_cast<size_t>(T) * H;
  // The normed input and each sublayer's output, in buffers kept from block to block
  // (base/aligned.h's grown).
  thread_local std::vector<float> normed_rows, delta_rows;
  float* normed = grown(normed_rows, n);
  float* delta = grown(delta_rows, n);
  for (int t = 0; t < T; ++t)
    rms_norm(x + static_cast<size_t>(t) * H, layer.input_layernorm.data(), H, c.rms_norm_eps,
             normed + static_cast<size_t>(t) * H);
  if (c.is_deepseek())
    mla_forward(c, layer.mla, rope_, normed, segments, options, delta);
  else
    dense_attention_forward(c, layer.attn, rope_, normed, segments, delta);
  for (size_t i = 0; i < n; ++i) x[i] += delta[i];

  for (int t = 0; t < T; ++t)
    rms_norm(x + static_cast<size_t>(t) * H, layer.post_attention_layernorm.data(), H,
             c.rms_norm_eps, normed + static_cast<size_t>(t) * H);
  if (layer.is_moe) {
    Routing routing;
    moe_forward(c, layer.moe, normed, T, delta, options.on_routing ? &routing : nullptr);
    if (options.on_routing) options.on_routing(layer_index, routing);
  } else {
    ffn_forward(layer.mlp, normed, T, delta);
  }
  for (size_t i = 0; i < n; ++i) x[i] += delta[i];
}

namespace {
// A few rows (decode, speculative verification, MTP drafts): their work inside one team of
// threads, whose parallel pieces start and meet by spinning instead of a libgomp region per
// product (ops/team.h: q8 v2-lite-8l decode 1.03–1.06× faster in fast minutes, alternated in one
// process). Every parallel piece of a few rows' forward is a parallel_region (an OpenMP region
// left inside the team would run on one thread) — except forced naive MLA, whose expansion of
// the cached latents is a product of many rows (sgemm and OpenMP tiles): it stays outside.
template <class Work>
void in_decode_team(int rows, const ForwardOptions& options, const Work& work) {
  if (rows < kGemmMinTokens && options.attention != AttentionPath::kNaive)
    with_decode_team(work);
  else
    work();
}
}  // namespace

void Model::forward(const int* tokens, int T, KVCache& cache, float* logits, float* normed_hidden,
                    const ForwardOptions& options) const {
  forward_batch(tokens, {&cache}, {T}, logits, normed_hidden, options);
}

void Model::forward_batch(const int* tokens, const std::vector<KVCache*>& caches,
                          const std::vector<int>& counts, float* logits, float* normed_hidden,
                          const ForwardOptions& options) const {
  check(!caches.empty() && caches.size() == counts.size(), "forward: one count per sequence");
  int T = 0;
  for (int n : counts) {
    check(n > 0, "forward needs at least one token per sequence");
    T += n;
  }
  check_tokens(tokens, T);
  in_decode_team(T, options,
                 [&] { forward_rows(tokens, T, caches, counts, logits, normed_hidden, options); });
}

void Model::forward_rows(const int* tokens, int T, const std::vector<KVCache*>& caches,
                         const std::vector<int>& counts, float* logits, float* normed_hidden,
                         const ForwardOptions& options) const {
  const ModelConfig& c = config_;
  const int H = c.hidden_size;
  std::vector<float> x(static_cast<size_t>(T) * H);
  for (int t = 0; t < T; ++t)
    weights_.embed_tokens.row_to_f32(tokens[t], x.data() + static_cast<size_t>(t) * H);
  std::vector<Segment> segments(caches.size());
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    for (size_t i = 0; i < caches.size(); ++i)
      segments[i] = {&caches[i]->layers[l], caches[i]->length, counts[i]};
    block_forward(weights_.layers[l], l, x.data(), segments, options);
  }
  for (size_t i = 0; i < caches.size(); ++i) caches[i]->length += counts[i];
  for (int t = 0; t < T; ++t)
    rms_norm(x.data() + static_cast<size_t>(t) * H, weights_.norm.data(), H, c.rms_norm_eps,
             x.data() + static_cast<size_t>(t) * H);
  if (normed_hidden) std::copy(x.begin(), x.end(), normed_hidden);
  if (!logits) return;
  if (!options.last_logits_only) {
    linear_forward(weights_.lm_head, x.data(), T, logits);
    return;
  }
  const int S = static_cast<int>(counts.size());
  std::vector<float> last(static_cast<size_t>(S) * H);
  for (int i = 0, end = 0; i < S; ++i) {
    end += counts[i];
    std::copy_n(x.data() + static_cast<size_t>(end - 1) * H, H,
                last.data() + static_cast<size_t>(i) * H);
  }
  linear_forward(weights_.lm_head, last.data(), S, logits);
}

void Model::mtp_forward(const int* next_tokens, const float* normed_hidden, int T,
                        KVCache& mtp_cache, float* logits, const ForwardOptions& options,
                        float* head_input) const {
  check(weights_.has_mtp, "this model has no MTP module (num_nextn_predict_layers is 0)");
  check(T > 0, "MTP forward needs at least one token");
  check_tokens(next_tokens, T);
  in_decode_team(T, options, [&] {
    mtp_rows(next_tokens, normed_hidden, T, mtp_cache, logits, options, head_input);
  });
}

void Model::mtp_rows(const int* next_tokens, const float* normed_hidden, int T, KVCache& mtp_cache,
                     float* logits, const ForwardOptions& options, float* head_input) const {
  const ModelConfig& c = config_;
  const MtpWeights& m = weights_.mtp;
  const int H = c.hidden_size;
  std::vector<float> concat(static_cast<size_t>(T) * 2 * H), x(static_cast<size_t>(T) * H);
  for (int t = 0; t < T; ++t) {
    float* e = concat.data() + static_cast<size_t>(t) * 2 * H;  // [enorm(Emb) ; hnorm(h)]
    m.embed_tokens.row_to_f32(next_tokens[t], e);
    rms_norm(e, m.enorm.data(), H, c.rms_norm_eps, e);
    rms_norm(normed_hidden + static_cast<size_t>(t) * H, m.hnorm.data(), H, c.rms_norm_eps, e + H);
  }
  linear_forward(m.eh_proj, concat.data(), T, x.data());
  // Rows whose outputs nobody reads only enter the cache (what later rows attend to): all of
  // them when only filling it (the prompt's rows), all but the last with last_logits_only (a
  // speculative step's verified rows, of which only the last drafts). Their attention and FFN
  // would not change the other rows' results. (A V3.2 layer keeps its indexer's keys as well:
  // it runs whole.)
  const int wanted = !logits && !head_input ? 0 : options.last_logits_only ? 1 : T;
  const int cache_only = c.has_indexer() ? 0 : T - wanted;
  LayerCache* layer_cache = &mtp_cache.layers[0];
  if (cache_only > 0) {
    std::vector<float> normed(static_cast<size_t>(cache_only) * H);
    for (int t = 0; t < cache_only; ++t)
      rms_norm(x.data() + static_cast<size_t>(t) * H, m.block.input_layernorm.data(), H,
               c.rms_norm_eps, normed.data() + static_cast<size_t>(t) * H);
    mla_fill_cache(c, m.block.mla, rope_, normed.data(),
                   {layer_cache, mtp_cache.length, cache_only});
  }
  const int rows = T - cache_only;
  float* first = x.data() + static_cast<size_t>(cache_only) * H;
  if (rows > 0)
    block_forward(m.block, c.num_hidden_layers, first,
                  {{layer_cache, mtp_cache.length + cache_only, rows}}, options);
  mtp_cache.length += T;
  if (wanted == 0) return;
  float* out = x.data() + static_cast<size_t>(T - wanted) * H;
  for (int t = 0; t < wanted; ++t)
    rms_norm(out + static_cast<size_t>(t) * H, m.shared_head_norm.data(), H, c.rms_norm_eps,
             out + static_cast<size_t>(t) * H);
  if (head_input) std::copy_n(out, static_cast<size_t>(wanted) * H, head_input);
  if (logits) linear_forward(m.shared_head_head, out, wanted, logits);
}

Model::ParamCounts Model::parameter_counts() const {
  ParamCounts counts;
  const ModelConfig& c = config_;
  const std::string mtp_prefix = "model.layers." + std::to_string(c.num_hidden_layers) + ".";
  for (const WeightSpec& spec : weight_specs(c)) {
    size_t n = 1;
    for (int64_t d : spec.shape) n *= static_cast<size_t>(d);
    if (c.has_mtp() && spec.name.rfind(mtp_prefix, 0) == 0) {
      counts.mtp += n;
      continue;
    }
    counts.total += n;
    if (spec.name == "model.embed_tokens.weight") {
      if (c.tie_word_embeddings) counts.active += n;  // it is also the head
      continue;
    }
    if (spec.name.find(".mlp.experts.") != std::string::npos) {
      counts.active += n * c.num_experts_per_tok / c.n_routed_experts;  // K of N experts
      continue;
    }
    counts.active += n;
  }
  return counts;
}

}  // namespace whale
