// Training's parameters: every tensor of the model (Hugging Face names, weight_specs order) as
// f32 master weights in one contiguous buffer, with a gradient buffer of the same layout.
// It is a TensorSource, so load_weights() gives a Weights whose matrices and vectors are views
// of the master weights: the forward code reads them in place.
#pragma once
#include <map>
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "model/config.h"
#include "model/weights.h"

namespace whale {

struct Param {
  std::string name;
  std::vector<int64_t> shape;
  size_t offset = 0, size = 0;
  WeightSpec::Kind kind = WeightSpec::kMatrix;
  bool trainable = true;     // the routing bias is updated by the balancing rule, not by AdamW
  bool weight_decay = true;  // none on norms, biases and embeddings' ... (matrices only)
};

class ParamStore : public TensorSource {
 public:
  explicit ParamStore(const ModelConfig& config);
  ParamStore(const ParamStore&) = delete;
  ParamStore& operator=(const ParamStore&) = delete;

  // Random initialization for training: matrices ~ N(0, stddev²) (output projections of each
  // block scaled by 1/sqrt(2·layers)), norm weights 1, biases 0.
  void init_random(uint64_t seed, float stddev = 0.02f);
  // Copies every tensor from a checkpoint, converting bf16/f16/fp8 (with block scales) to f32.
  void load(const TensorSource& source);
  // Writes config.json + model.safetensors (f32 or bf16) into dir, atomically.
  void save(const std::string& dir, DType dtype = DType::F32) const;
  // Writes the gradients as f32 safetensors with the parameter names.
  void save_grads(const std::string& path,
                  const std::map<std::string, std::string>& metadata) const;

  const ModelConfig& config() const { return config_; }
  const std::vector<Param>& params() const { return params_; }
  // Freezes every parameter whose name does not start with prefix (AdamW leaves frozen ones
  // alone); returns how many values stay trainable.
  size_t freeze_all_but(const std::string& prefix);
  const Param* param(const std::string& name) const;
  float* values() { return values_.data(); }
  const float* values() const { return values_.data(); }
  float* grads() { return grads_.data(); }
  const float* grads() const { return grads_.data(); }
  size_t size() const { return values_.size(); }
  void zero_grads();
  // The gradient of a value inside the store (same offset in the gradient buffer).
  float* grad_of(const void* value) {
    return grads_.data() + (static_cast<const float*>(value) - values_.data());
  }

  const TensorView* find(const std::string& name) const override;
  std::string where() const override { return "parameter store"; }

 private:
  ModelConfig config_;
  std::vector<Param> params_;
  std::map<std::string, size_t> index_;
  std::vector<float> values_, grads_;
  std::map<std::string, TensorView> views_;
};

}  // namespace whale
