// AdamW with global-norm gradient clipping (DeepSeek: β1 0.9, β2 0.95, weight decay 0.1 on
// matrices only, clip 1.0), learning-rate schedules (DeepSeek LLM's multi-step, or cosine),
// and DeepSeek LLM's scaling-law choice of batch size and learning rate.
#pragma once
#include <string>
#include <vector>

#include "train/params.h"

namespace whale {

struct AdamWConfig {
  float beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f, weight_decay = 0.1f;
  float clip_norm = 1.0f;  // 0: no clipping
};

class AdamW {
 public:
  AdamW(const ParamStore& store, AdamWConfig config);
  // One update from the store's gradients at learning rate lr; returns the gradient norm
  // before clipping. Frozen (non-trainable) parameters are left alone.
  float step(ParamStore& store, float lr);
  long steps() const { return steps_; }
  // Moments as f32 safetensors ("m.<name>", "v.<name>"), plus the step count in metadata.
  void save(const std::string& path, const ParamStore& store) const;
  void load(const std::string& path, const ParamStore& store);

 private:
  AdamWConfig config_;
  std::vector<float> m_, v_;
  long steps_ = 0;
};

enum class Schedule { kMultiStep, kCosine, kConstant };
bool parse_schedule(const std::string& name, Schedule* out);

// Linear warm-up to peak, then: multi-step — 100% until 80% of training, 31.6% until 90%,
// then 10% (DeepSeek LLM); cosine — down to 10% of peak at the end; constant.
float learning_rate(Schedule schedule, long step, long total_steps, long warmup_steps, float peak);

// DeepSeek LLM §3.1: for a compute budget C (FLOPs), B_opt = 0.2920·C^0.3271 tokens per batch
// and η_opt = 0.3118·C^−0.1250.
struct ScalingLawChoice {
  double batch_tokens, learning_rate;
};
ScalingLawChoice scaling_law(double compute_flops);

}  // namespace whale
