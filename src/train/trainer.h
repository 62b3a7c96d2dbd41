// `whale train`: the pre-training loop. A run folder holds
//   run.json       the settings, log.csv (one row per step), experts.csv (load per MoE layer),
//   loss.png       train/validation loss curves, experts.png (expert-load imbalance),
//   checkpoints/   step-NNNNNN/ (HF layout: config.json, model.safetensors, optimizer.safetensors,
//                  trainer_state.json), the newest named in checkpoints/latest,
//   model/         the final model in HF layout (for whale generate / logits / chat).
// Checkpoints are written to a temp folder and renamed; `--resume` continues from the newest
// one and, being deterministic, replays exactly the steps an uninterrupted run would take.
#pragma once
#include <cmath>
#include <cstdint>
#include <string>

#include "train/objective.h"
#include "train/optimizer.h"

namespace whale {

struct TrainerConfig {
  std::string out_dir = "runs/train";
  std::string data_dir;
  // The model: a folder (continue training it), a preset or a config.json (random init).
  std::string model_dir, preset, config_file;
  int vocab_size = 0;  // override the preset's vocabulary (e.g. to the data's)
  float init_std = 0.02f;

  int batch = 8, seq_len = 128, accumulation = 1;
  long steps = 200;
  float lr = 3e-3f;
  long warmup = 20;
  Schedule schedule = Schedule::kMultiStep;
  AdamWConfig adamw;
  ObjectiveOptions objective;
  float bias_gamma = 0.001f;  // auxiliary-loss-free balancing speed γ (0: off)

  int eval_every = 25, eval_batches = 4, save_every = 50;
  // When positive: after three steps, cap the run at the steps that fit in this many seconds
  // (the schedule follows the capped length). Not for resumable runs.
  double time_budget_seconds = 0;
  uint64_t seed = 0;
  bool resume = false;
  bool progress = true;
};

struct TrainSummary {
  long steps = 0;
  double final_loss = 0, final_val_loss = 0, unigram_entropy = 0, tokens_per_second = 0;
  double final_imbalance = 0;
  double final_val_mtp_agreement = NAN;  // the MTP module's top-1 agreement with the main model
  double seconds = 0, gemm_seconds = 0, gemm_flops = 0;  // where the time went
};

TrainSummary train(const TrainerConfig& config);

}  // namespace whale
