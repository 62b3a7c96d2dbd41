// Batches of prompt + response sequences for the training forward, shared by every objective
// that scores responses (GRPO, SFT, distillation, DPO): padding into one [B, T] block and
// per-token log-probabilities from rows of logits.
#pragma once
#include <vector>

#include "train/train_model.h"

namespace whale {

// The batch as one padded [B, T] block (padding sits after each sequence, where causal
// attention keeps it from touching the real tokens), plus optionally replayed routing.
struct PaddedBatch {
  int B = 0, T = 0;
  std::vector<int> tokens;
  std::vector<std::vector<int>> forced;  // per MoE layer [B·T·K]; empty: route freely
};
PaddedBatch pad_sequences(const std::vector<std::vector<int>>& sequences);

// The training forward over a padded batch: main head only (no MTP, no balance loss).
void forward_padded(TrainModel& model, const PaddedBatch& batch);

// The logits row that predicts token `pos` of sequence b (it sits at position pos − 1).
inline const float* prediction_row(const TrainModel& model, const PaddedBatch& p, int b, int pos) {
  return model.logits().data() +
         (static_cast<size_t>(b) * p.T + pos - 1) * model.config().vocab_size;
}

// log π(token) from a row of logits, over `allowed` (sorted ids) or the whole vocabulary;
// optionally the probabilities over that set (zero elsewhere).
double token_log_prob(const float* logits, int vocab, int token, const std::vector<int>* allowed,
                      std::vector<double>* probs);

}  // namespace whale
