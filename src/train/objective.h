// The pre-training objective of DeepSeek-V3 (MISSION §1–2) for a batch of B sequences:
//   loss = CE_main + λ·CE_mtp + α·BAL
// CE_main: mean over positions i ≤ T−2 of CE(logits_i, t_{i+1});
// CE_mtp: mean over i ≤ T−3 of CE(mtp_logits_i, t_{i+2});
// BAL: Σ over the main MoE layers of Σ_e f_e·P_e, averaged over sequences.
#pragma once
#include "train/train_model.h"

namespace whale {

struct LossParts {
  double loss = 0, ce_main = 0, ce_mtp = 0, bal = 0;
};

struct ObjectiveOptions {
  float mtp_weight = 0.3f;      // λ
  float balance_alpha = 1e-4f;  // α
  BalanceScope balance_scope = BalanceScope::kSequence;
};

// Forward, loss, and (if backward) gradients added into the store.
LossParts language_model_loss(TrainModel& model, const int* tokens, int B, int T,
                              const ObjectiveOptions& options, bool backward = true);

}  // namespace whale
