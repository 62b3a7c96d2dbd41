// The pre-training objective of DeepSeek-V3 (MISSION §1–2) for a batch of B sequences:
//   loss = CE_main + λ·CE_mtp + α·BAL
// CE_main: mean over positions i ≤ T−2 of CE(logits_i, t_{i+1});
// CE_mtp: mean over i ≤ T−3 of CE(mtp_logits_i, t_{i+2});
// BAL: Σ over the main MoE layers of Σ_e f_e·P_e, averaged over sequences.
//
// Two options tune the MTP module as a speculative-decoding draft for a model (EAGLE's and
// Medusa-2's self-distillation, not in DeepSeek-V3's recipe):
// - MtpTarget::kModel replaces CE_mtp's one-hot target t_{i+2} by the main model's own
//   distribution for that token, p_main = softmax(logits_{i+1}) (held fixed: no gradient flows
//   through it): the term becomes KL(p_main ‖ q_mtp), the cross-entropy −Σ_v p_main(v)·log
//   q_mtp(v) less p_main's entropy (the same gradient; zero when the draft matches), on every
//   row i ≤ T−2. Decoding accepts a draft by the main model's judgment, so that is what the
//   draft should predict.
// - mtp_only: only the MTP module learns; the main model is measured but not back-propagated
//   (the trainer freezes its parameters), so a step costs about 40% of a full one.
#pragma once
#include <cmath>
#include <string>

#include "train/train_model.h"

namespace whale {

struct LossParts {
  double loss = 0, ce_main = 0, ce_mtp = 0, bal = 0;
  // Rows where the MTP module's top token is the main model's top token one position later:
  // greedy speculative decoding's acceptance rate on these sequences (NaN without MTP).
  double mtp_agreement = NAN;
};

enum class MtpTarget { kData, kModel };
bool parse_mtp_target(const std::string& name, MtpTarget* out);
const char* mtp_target_name(MtpTarget target);

struct ObjectiveOptions {
  float mtp_weight = 0.3f;      // λ
  float balance_alpha = 1e-4f;  // α
  BalanceScope balance_scope = BalanceScope::kSequence;
  MtpTarget mtp_target = MtpTarget::kData;
  bool mtp_only = false;
};

// Forward, loss, and (if backward) gradients added into the store.
LossParts language_model_loss(TrainModel& model, const int* tokens, int B, int T,
                              const ObjectiveOptions& options, bool backward = true);

}  // namespace whale
