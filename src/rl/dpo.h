// Direct Preference Optimization (Rafailov et al. 2023), the preference step of DeepSeek LLM's
// chat recipe. On pairs (prompt x, chosen y_w, rejected y_l), with log π(y|x) the sum of the
// response tokens' log-probabilities and π_ref the frozen starting model:
//   z = β·[(log π(y_w|x) − log π_ref(y_w|x)) − (log π(y_l|x) − log π_ref(y_l|x))]
//   loss = −log σ(z), averaged over pairs.
#pragma once
#include <string>
#include <vector>

#include "train/train_model.h"

namespace whale {

namespace text {
class Tokenizer;
}

struct PreferencePair {
  std::vector<int> prompt, chosen, rejected;  // responses end with EOS
};

struct DpoStats {
  double loss = 0;
  double margin = 0;    // mean z/β: how much more the policy prefers y_w than the reference does
  double accuracy = 0;  // share of pairs with z > 0
};

// log π(y_w|x) then log π(y_l|x) for each pair: [chosen_0, rejected_0, chosen_1, ...].
std::vector<double> pair_logprobs(TrainModel& model, const std::vector<PreferencePair>& batch);

// The loss at the current parameters given the reference's pair_logprobs; with backward, adds
// ∂loss/∂θ into the policy's store.
DpoStats dpo_step(TrainModel& policy, const std::vector<PreferencePair>& batch,
                  const std::vector<double>& reference_logprobs, float beta, bool backward = true);

// JSONL, one {"prompt": ..., "chosen": ..., "rejected": ...} per line (as `whale sample --keep
// pairs` writes); errors name file and line.
std::vector<PreferencePair> load_preference_file(const std::string& path, const text::Tokenizer& tokenizer);

struct DpoTrainConfig {
  std::string model_dir, out_dir = "runs/dpo", data_file;
  float beta = 0.1f;
  int batch = 8;
  long steps = 100;
  double time_budget_seconds = 0;
  float lr = 5e-6f;
  long warmup = 10;
  uint64_t seed = 0;
  bool progress = true;
};
struct DpoTrainSummary {
  long steps = 0;
  double final_loss = 0, seconds = 0;
};
DpoTrainSummary dpo_train(const DpoTrainConfig& config);

}  // namespace whale
