// The loop every fine-tuning objective shares (SFT, distillation, DPO): AdamW steps with a
// linear warm-up then a constant rate, an optional wall-clock budget, a progress bar, a CSV log
// and a loss plot, then the model (with its tokenizer) saved in HF layout.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "train/optimizer.h"
#include "train/params.h"

namespace whale {

struct FinetuneLoop {
  std::string name;      // "sft", "dpo": names the log (NAME_log.csv), plot and progress bar
  std::string out_dir;   // gets NAME_log.csv, NAME_loss.png, model/
  std::string tokenizer_dir;  // copied into out_dir/model
  std::vector<std::string> columns;  // what `step` returns, the first being the loss
  long steps = 100;
  double time_budget_seconds = 0;  // stop early when spent (0: no limit)
  float lr = 1e-4f;
  long warmup = 10;
  AdamWConfig adamw;
  bool progress = true;
};

struct FinetuneSummary {
  long steps = 0;
  double final_loss = 0, seconds = 0;
};

// `step(i)` computes the gradients of step i into the store (zeroed before each call) and
// returns the values named by `columns`.
FinetuneSummary run_finetune(ParamStore& store, const FinetuneLoop& loop,
                             const std::function<std::vector<double>(long)>& step);

}  // namespace whale
