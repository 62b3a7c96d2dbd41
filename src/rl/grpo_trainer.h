// `whale grpo`: reinforcement learning of a model on tasks with checkable answers. Each step
// samples G answers to each of P prompts (batched, through the KV cache), scores them by the
// rule rewards, and takes `inner_steps` GRPO updates against the sampling policy, with a KL
// penalty to the frozen starting model. A run folder gets rl_log.csv, rl_curves.png (reward,
// accuracy, response length), heldout.csv, and the final model in HF layout (model/).
#pragma once
#include <string>
#include <vector>

#include "rl/grpo.h"
#include "rl/reward.h"
#include "rl/tasks.h"
#include "train/optimizer.h"

namespace whale {

struct GrpoTrainConfig {
  std::string model_dir, out_dir = "runs/grpo";
  std::vector<std::string> tasks = {"arithmetic", "word", "countdown"};
  std::string task_file;  // users' tasks instead (JSONL)
  int prompts_per_step = 16, steps = 100, inner_steps = 2, max_new_tokens = 72;
  double time_budget_seconds = 0;  // stop early when spent (0: no limit)
  float temperature = 1.0f, top_p = 1.0f;
  int top_k = 0;
  float lr = 2e-4f;
  int warmup = 10;  // RL steps of linear learning-rate warm-up
  AdamWConfig adamw;
  GrpoOptions grpo;
  RewardWeights rewards;
  int heldout_per_task = 50, eval_every = 10;
  uint64_t seed = 0;
  bool progress = true;
};

struct GrpoCurvePoint {
  int step;
  double reward, accuracy, format_rate, response_tokens, kl, heldout_accuracy;
};

struct GrpoTrainSummary {
  int steps = 0;
  double seconds = 0, rollout_seconds = 0, update_seconds = 0;
  double rollout_tokens_per_second = 0, step_seconds = 0;
  std::vector<GrpoCurvePoint> curve;
  std::vector<std::string> sample_traces;  // a few rollouts, for reports
};

GrpoTrainSummary grpo_train(const GrpoTrainConfig& config);

}  // namespace whale
