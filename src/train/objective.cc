#include "train/objective.h"

namespace whale {

LossParts language_model_loss(TrainModel& model, const int* tokens, int B, int T,
                              const ObjectiveOptions& options, bool backward) {
  const ModelConfig& c = model.config();
  const int V = c.vocab_size;
  TrainOptions train;
  train.mtp = options.mtp_weight != 0.0f;
  train.balance_alpha = options.balance_alpha;
  train.balance_scope = options.balance_scope;
  model.forward(tokens, B, T, train);

  LossParts parts;
  std::vector<int> targets(static_cast<size_t>(B) * T);
  for (int b = 0; b < B; ++b)
    for (int i = 0; i < T; ++i) targets[b * T + i] = i + 1 < T ? tokens[b * T + i + 1] : -1;
  std::vector<float> dlogits(backward ? model.logits().size() : 0);
  parts.ce_main = cross_entropy(model.logits().data(), targets.data(), B * T, V, 1.0f,
                                backward ? dlogits.data() : nullptr);
  std::vector<float> dmtp;
  if (model.has_mtp_output()) {
    const int Tm = T - 1;
    std::vector<int> mtp_targets(static_cast<size_t>(B) * Tm);
    for (int b = 0; b < B; ++b)
      for (int i = 0; i < Tm; ++i) mtp_targets[b * Tm + i] = i + 2 < T ? tokens[b * T + i + 2] : -1;
    if (backward) dmtp.resize(model.mtp_logits().size());
    parts.ce_mtp = cross_entropy(model.mtp_logits().data(), mtp_targets.data(), B * Tm, V,
                                 options.mtp_weight, backward ? dmtp.data() : nullptr);
  }
  parts.bal = backward ? model.backward(dlogits.data(), dmtp.empty() ? nullptr : dmtp.data())
                       : model.balance_loss_value();
  parts.loss =
      parts.ce_main + options.mtp_weight * parts.ce_mtp + options.balance_alpha * parts.bal;
  return parts;
}

}  // namespace whale
