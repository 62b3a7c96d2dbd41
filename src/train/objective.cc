#include "train/objective.h"

#include "base/error.h"
#include "infer/sampler.h"

namespace whale {

bool parse_mtp_target(const std::string& name, MtpTarget* out) {
  if (name == "data")
    *out = MtpTarget::kData;
  else if (name == "model")
    *out = MtpTarget::kModel;
  else
    return false;
  return true;
}

const char* mtp_target_name(MtpTarget target) {
  return target == MtpTarget::kModel ? "model" : "data";
}

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
  const bool main_backward = backward && !options.mtp_only;
  std::vector<float> dlogits(main_backward ? model.logits().size() : 0);
  parts.ce_main = cross_entropy(model.logits().data(), targets.data(), B * T, V, 1.0f,
                                main_backward ? dlogits.data() : nullptr);
  std::vector<float> dmtp;
  if (model.has_mtp_output()) {
    // MTP row (b, i) predicts token i+2 of sequence b, as main row (b, i+1) does.
    const int Tm = T - 1;
    const float* mtp_logits = model.mtp_logits().data();
    const auto main_row = [&](int b, int i) {
      return model.logits().data() + static_cast<size_t>(b * T + i + 1) * V;
    };
    if (backward) dmtp.resize(model.mtp_logits().size());
    if (options.mtp_target == MtpTarget::kData) {
      std::vector<int> mtp_targets(static_cast<size_t>(B) * Tm);
      for (int b = 0; b < B; ++b)
        for (int i = 0; i < Tm; ++i)
          mtp_targets[b * Tm + i] = i + 2 < T ? tokens[b * T + i + 2] : -1;
      parts.ce_mtp = cross_entropy(mtp_logits, mtp_targets.data(), B * Tm, V, options.mtp_weight,
                                   backward ? dmtp.data() : nullptr);
    } else {
      // KL(p_main ‖ q_mtp) per row, summed in row order afterwards (the same bits whatever the
      // threads do).
      std::vector<double> row_kl(static_cast<size_t>(B) * Tm);
      const double scale = static_cast<double>(options.mtp_weight) / (B * Tm);
#pragma omp parallel for schedule(static)
      for (int r = 0; r < B * Tm; ++r)
        row_kl[r] = kl_divergence_row(
            main_row(r / Tm, r % Tm), mtp_logits + static_cast<size_t>(r) * V, V, 1.0, scale,
            backward ? dmtp.data() + static_cast<size_t>(r) * V : nullptr);
      for (double kl : row_kl) parts.ce_mtp += kl / (B * Tm);
    }
    int agree = 0;
    for (int b = 0; b < B; ++b)
      for (int i = 0; i < Tm; ++i)
        agree += argmax(mtp_logits + static_cast<size_t>(b * Tm + i) * V, V) ==
                 argmax(main_row(b, i), V);
    parts.mtp_agreement = static_cast<double>(agree) / (B * Tm);
  }
  if (options.mtp_only) {
    parts.bal = model.balance_loss_value();
    if (backward) {
      check(!dmtp.empty() && options.mtp_weight > 0,
            "training only the MTP module needs a model with one and an MTP weight > 0");
      model.backward(nullptr, dmtp.data(), /*main=*/false);
    }
  } else {
    parts.bal = backward ? model.backward(dlogits.data(), dmtp.empty() ? nullptr : dmtp.data())
                         : model.balance_loss_value();
  }
  parts.loss =
      parts.ce_main + options.mtp_weight * parts.ce_mtp + options.balance_alpha * parts.bal;
  return parts;
}

}  // namespace whale
