// Fine-tuning on (prompt, response) pairs with the loss on the response tokens only — R1's
// cold start and its rejection-sampling SFT round — and distillation from a teacher that shares
// the vocabulary (R1's distilled models are SFT on the teacher's samples; logit KD and CCKD's
// correlation congruence are options):
//   loss = (1 − w_kd)·CE + w_kd·τ²·KL(softmax(z_T/τ) ‖ softmax(z_S/τ)) + w_cc·L_CC
// CE and KL are means over the batch's response tokens. L_CC (Correlation Congruence KD, Peng
// et al. 2019): with e_i the centred, L2-normalized student logits of response token i (f_i the
// teacher's) for up to M tokens of the batch, and the Gaussian RBF kernel, for unit vectors
// k(x, y) = exp(−γ‖x − y‖²) = exp(−2γ)·exp(2γ x·y), expanded to order P in x·y,
//   L_CC = (1/M²) Σ_ij (k(e_i, e_j) − k(f_i, f_j))².
#pragma once
#include <string>
#include <vector>

#include "train/optimizer.h"
#include "train/train_model.h"

namespace whale {

namespace text {
class Tokenizer;
}

struct SftExample {
  std::vector<int> prompt, response;  // the response ends with EOS
};

struct DistillOptions {
  float kd_weight = 0;        // w_kd (0: plain SFT)
  float temperature = 1.0f;   // τ
  float cckd_weight = 0;      // w_cc (0: off)
  float cckd_gamma = 0.4f;    // γ of the RBF kernel
  int cckd_order = 2;         // P, terms of the Taylor expansion after the constant
  int cckd_tokens = 128;      // M, response tokens per batch in the correlation matrices
};

struct SftStats {
  double loss = 0, ce = 0, kd = 0, cckd = 0;
  long tokens = 0;
};

// One batch: forward, the loss, and (with backward) ∂loss/∂θ added into the student's store.
// `teacher` (same vocabulary) is needed when kd_weight or cckd_weight is positive.
SftStats sft_step(TrainModel& student, const std::vector<SftExample>& batch,
                  const DistillOptions& options, TrainModel* teacher, bool backward = true);

// JSONL with one {"prompt": "...", "response": "..."} per line (errors name file and line):
// the prompt is encoded with BOS, the response gets EOS appended.
std::vector<SftExample> load_sft_file(const std::string& path, const text::Tokenizer& tokenizer);

struct SftTrainConfig {
  std::string model_dir, out_dir = "runs/sft", data_file;
  std::vector<SftExample> examples;  // used when data_file is empty
  std::string teacher_dir;           // distillation
  DistillOptions distill;
  int batch = 16;
  long steps = 100;
  double time_budget_seconds = 0;  // stop early when spent (0: no limit)
  float lr = 1e-4f;
  long warmup = 10;
  AdamWConfig adamw;
  uint64_t seed = 0;
  bool progress = true;
};
struct SftTrainSummary {
  long steps = 0;
  double final_loss = 0, seconds = 0;
};
// The loop: shuffled batches (epochs as needed), AdamW with warm-up then constant rate,
// sft_log.csv + sft_loss.png, the model (and tokenizer) in out_dir/model.
SftTrainSummary sft_train(const SftTrainConfig& config);

}  // namespace whale
