#include "train/train_model.h"

#include "base/error.h"

namespace whale {

TrainModel::TrainModel(ParamStore& store) : store_(store), config_(store.config()) {
  check(!config_.has_indexer(),
        "training deepseek_v32 (sparse attention with the indexer) is not supported yet");
  weights_ = load_weights(config_, store);
  if (config_.tie_word_embeddings) weights_.lm_head = weights_.embed_tokens;
  rope_ =
      Rope(config_, config_.is_deepseek() ? config_.qk_rope_head_dim : config_.dense_head_dim());
}

void TrainModel::block_forward(const Layer& layer, float* x, int B, int T, BlockCache& bc,
                               const std::vector<int>* forced) {
  const ModelConfig& c = config_;
  const int n = B * T, H = c.hidden_size;
  const size_t size = static_cast<size_t>(n) * H;
  bc.x_in.assign(x, x + size);
  bc.normed1.resize(size);
  bc.rstd1.resize(n);
  rmsnorm_train_forward(x, layer.input_layernorm, n, H, c.rms_norm_eps, bc.normed1.data(),
                        bc.rstd1.data());
  std::vector<float> delta(size);
  if (c.is_deepseek())
    mla_train_forward(c, layer.mla, rope_, bc.normed1.data(), B, T, bc.mla, delta.data());
  else
    dense_attention_train_forward(c, layer.attn, rope_, bc.normed1.data(), B, T, bc.attn,
                                  delta.data());
  for (size_t i = 0; i < size; ++i) x[i] += delta[i];
  bc.x_mid.assign(x, x + size);
  bc.normed2.resize(size);
  bc.rstd2.resize(n);
  rmsnorm_train_forward(x, layer.post_attention_layernorm, n, H, c.rms_norm_eps, bc.normed2.data(),
                        bc.rstd2.data());
  if (layer.is_moe)
    moe_train_forward(c, layer.moe, bc.normed2.data(), B, T, bc.moe, delta.data(), forced);
  else
    ffn_train_forward(layer.mlp, bc.normed2.data(), n, bc.ffn, delta.data());
  for (size_t i = 0; i < size; ++i) x[i] += delta[i];
}

// x_out = x_mid + FFN(norm2(x_mid)); x_mid = x_in + Attn(norm1(x_in)). dx: in d(x_out), out
// d(x_in).
void TrainModel::block_backward(const Layer& layer, float* dx, int B, int T, BlockCache& bc,
                                float balance_alpha, double* bal) {
  const ModelConfig& c = config_;
  const int n = B * T, H = c.hidden_size;
  const size_t size = static_cast<size_t>(n) * H;
  std::vector<float> dnormed(size, 0.0f);
  if (layer.is_moe) {
    double b = moe_train_backward(c, layer.moe, store_, bc.normed2.data(), B, T, bc.moe, dx,
                                  dnormed.data(), balance_alpha, options_.balance_scope);
    if (bal) *bal += b;
  } else {
    ffn_train_backward(layer.mlp, store_, bc.normed2.data(), n, bc.ffn, dx, dnormed.data());
  }
  rmsnorm_train_backward(bc.x_mid.data(), layer.post_attention_layernorm, bc.rstd2.data(),
                         dnormed.data(), n, H, store_, dx);
  std::fill(dnormed.begin(), dnormed.end(), 0.0f);
  if (c.is_deepseek())
    mla_train_backward(c, layer.mla, rope_, store_, bc.normed1.data(), B, T, bc.mla, dx,
                       dnormed.data());
  else
    dense_attention_train_backward(c, layer.attn, rope_, store_, bc.normed1.data(), B, T, bc.attn,
                                   dx, dnormed.data());
  rmsnorm_train_backward(bc.x_in.data(), layer.input_layernorm, bc.rstd1.data(), dnormed.data(), n,
                         H, store_, dx);
}

void TrainModel::forward(const int* tokens, int B, int T, const TrainOptions& options) {
  const ModelConfig& c = config_;
  check(B > 0 && T > 0, "training batch must have at least one token");
  for (int i = 0; i < B * T; ++i)
    check(tokens[i] >= 0 && tokens[i] < c.vocab_size,
          "token id " + std::to_string(tokens[i]) + " is outside the vocabulary");
  B_ = B;
  T_ = T;
  options_ = options;
  tokens_.assign(tokens, tokens + B * T);
  const int n = B * T, H = c.hidden_size, V = c.vocab_size;
  std::vector<float> x(static_cast<size_t>(n) * H);
  for (int i = 0; i < n; ++i)
    weights_.embed_tokens.row_to_f32(tokens[i], x.data() + static_cast<size_t>(i) * H);
  blocks_.resize(c.num_hidden_layers);
  int moe_index = 0;
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    const std::vector<int>* forced = nullptr;
    if (weights_.layers[l].is_moe && options.forced_routing)
      forced = &(*options.forced_routing)[moe_index];
    if (weights_.layers[l].is_moe) ++moe_index;
    block_forward(weights_.layers[l], x.data(), B, T, blocks_[l], forced);
  }
  final_in_ = x;
  normed_.resize(x.size());
  final_rstd_.resize(n);
  rmsnorm_train_forward(x.data(), weights_.norm, n, H, c.rms_norm_eps, normed_.data(),
                        final_rstd_.data());
  logits_.resize(static_cast<size_t>(n) * V);
  linear_train_forward(weights_.lm_head, normed_.data(), n, logits_.data());

  run_mtp_ = weights_.has_mtp && options.mtp && T >= 2;
  if (!run_mtp_) return;
  // MTP over positions 0..T−2 of each sequence: x = eh_proj([enorm(Emb(t_{i+1})) ; hnorm(h_i)]).
  const MtpWeights& m = weights_.mtp;
  const int Tm = T - 1, nm = B * Tm;
  mtp_next_.resize(nm);
  mtp_embed_.resize(static_cast<size_t>(nm) * H);
  mtp_h_.resize(static_cast<size_t>(nm) * H);
  for (int b = 0; b < B; ++b)
    for (int i = 0; i < Tm; ++i) {
      const int r = b * Tm + i;
      mtp_next_[r] = tokens[b * T + i + 1];
      m.embed_tokens.row_to_f32(mtp_next_[r], mtp_embed_.data() + static_cast<size_t>(r) * H);
      std::copy_n(normed_.data() + static_cast<size_t>(b * T + i) * H, H,
                  mtp_h_.data() + static_cast<size_t>(r) * H);
    }
  mtp_enormed_.resize(mtp_embed_.size());
  mtp_erstd_.resize(nm);
  mtp_hnormed_.resize(mtp_h_.size());
  mtp_hrstd_.resize(nm);
  rmsnorm_train_forward(mtp_embed_.data(), m.enorm, nm, H, c.rms_norm_eps, mtp_enormed_.data(),
                        mtp_erstd_.data());
  rmsnorm_train_forward(mtp_h_.data(), m.hnorm, nm, H, c.rms_norm_eps, mtp_hnormed_.data(),
                        mtp_hrstd_.data());
  mtp_concat_.resize(static_cast<size_t>(nm) * 2 * H);
  for (int r = 0; r < nm; ++r) {
    std::copy_n(mtp_enormed_.data() + static_cast<size_t>(r) * H, H,
                mtp_concat_.data() + static_cast<size_t>(r) * 2 * H);
    std::copy_n(mtp_hnormed_.data() + static_cast<size_t>(r) * H, H,
                mtp_concat_.data() + static_cast<size_t>(r) * 2 * H + H);
  }
  mtp_x_.resize(static_cast<size_t>(nm) * H);
  linear_train_forward(m.eh_proj, mtp_concat_.data(), nm, mtp_x_.data());
  block_forward(m.block, mtp_x_.data(), B, Tm, mtp_block_, nullptr);
  mtp_out_normed_.resize(mtp_x_.size());
  mtp_out_rstd_.resize(nm);
  rmsnorm_train_forward(mtp_x_.data(), m.shared_head_norm, nm, H, c.rms_norm_eps,
                        mtp_out_normed_.data(), mtp_out_rstd_.data());
  mtp_logits_.resize(static_cast<size_t>(nm) * V);
  linear_train_forward(m.shared_head_head, mtp_out_normed_.data(), nm, mtp_logits_.data());
}

double TrainModel::backward(const float* dlogits, const float* dmtp_logits, bool main) {
  const ModelConfig& c = config_;
  const int B = B_, T = T_, n = B * T, H = c.hidden_size;
  std::vector<float> dnormed(main ? static_cast<size_t>(n) * H : 0, 0.0f);
  if (main)
    linear_train_backward(weights_.lm_head, store_, normed_.data(), dlogits, n, dnormed.data());

  if (run_mtp_ && dmtp_logits) {
    const MtpWeights& m = weights_.mtp;
    const int Tm = T - 1, nm = B * Tm;
    std::vector<float> dout_normed(static_cast<size_t>(nm) * H, 0.0f),
        dx(static_cast<size_t>(nm) * H, 0.0f);
    linear_train_backward(m.shared_head_head, store_, mtp_out_normed_.data(), dmtp_logits, nm,
                          dout_normed.data());
    // The block's output went through shared_head.norm; mtp_x_ now holds that output.
    rmsnorm_train_backward(mtp_x_.data(), m.shared_head_norm, mtp_out_rstd_.data(),
                           dout_normed.data(), nm, H, store_, dx.data());
    block_backward(m.block, dx.data(), B, Tm, mtp_block_, 0.0f, nullptr);
    std::vector<float> dconcat(static_cast<size_t>(nm) * 2 * H, 0.0f);
    linear_train_backward(m.eh_proj, store_, mtp_concat_.data(), dx.data(), nm, dconcat.data());
    std::vector<float> de(static_cast<size_t>(nm) * H), dh(de.size()), de_raw(de.size(), 0.0f),
        dh_raw(de.size(), 0.0f);
    for (int r = 0; r < nm; ++r) {
      std::copy_n(dconcat.data() + static_cast<size_t>(r) * 2 * H, H,
                  de.data() + static_cast<size_t>(r) * H);
      std::copy_n(dconcat.data() + static_cast<size_t>(r) * 2 * H + H, H,
                  dh.data() + static_cast<size_t>(r) * H);
    }
    rmsnorm_train_backward(mtp_embed_.data(), m.enorm, mtp_erstd_.data(), de.data(), nm, H, store_,
                           de_raw.data());
    // (Also when main is false: hnorm's weight is the MTP module's; dh_raw then goes unused.)
    rmsnorm_train_backward(mtp_h_.data(), m.hnorm, mtp_hrstd_.data(), dh.data(), nm, H, store_,
                           dh_raw.data());
    float* demb = store_.grad_of(m.embed_tokens.data);
    for (int r = 0; r < nm; ++r) {
      float* row = demb + static_cast<size_t>(mtp_next_[r]) * H;
      for (int d = 0; d < H; ++d) row[d] += de_raw[static_cast<size_t>(r) * H + d];
    }
    if (!main) return 0;
    for (int b = 0; b < B; ++b)
      for (int i = 0; i < Tm; ++i) {
        float* target = dnormed.data() + static_cast<size_t>(b * T + i) * H;
        const float* src = dh_raw.data() + static_cast<size_t>(b * Tm + i) * H;
        for (int d = 0; d < H; ++d) target[d] += src[d];
      }
  }

  if (!main) return 0;
  std::vector<float> dx(static_cast<size_t>(n) * H, 0.0f);
  rmsnorm_train_backward(final_in_.data(), weights_.norm, final_rstd_.data(), dnormed.data(), n, H,
                         store_, dx.data());
  double bal = 0;
  for (int l = c.num_hidden_layers - 1; l >= 0; --l)
    block_backward(weights_.layers[l], dx.data(), B, T, blocks_[l], options_.balance_alpha, &bal);
  float* demb = store_.grad_of(weights_.embed_tokens.data);
  for (int i = 0; i < n; ++i) {
    float* row = demb + static_cast<size_t>(tokens_[i]) * H;
    for (int d = 0; d < H; ++d) row[d] += dx[static_cast<size_t>(i) * H + d];
  }
  return bal;
}

std::vector<std::vector<int>> TrainModel::expert_loads() const {
  std::vector<std::vector<int>> loads;
  for (int l = 0; l < config_.num_hidden_layers; ++l)
    if (weights_.layers[l].is_moe) loads.push_back(blocks_[l].moe.load);
  return loads;
}

std::vector<std::vector<int>> TrainModel::routing() const {
  std::vector<std::vector<int>> r;
  for (int l = 0; l < config_.num_hidden_layers; ++l)
    if (weights_.layers[l].is_moe) r.push_back(blocks_[l].moe.routing.experts);
  return r;
}

double TrainModel::balance_loss_value() const {
  double total = 0;
  for (int l = 0; l < config_.num_hidden_layers; ++l)
    if (weights_.layers[l].is_moe)
      total += balance_loss(config_, blocks_[l].moe, B_, T_, options_.balance_scope);
  return total;
}

}  // namespace whale
