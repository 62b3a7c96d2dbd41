// Small per-vector operations of the transformer: norms, activations, softmax, RoPE,
// and the V3.2 indexer's Hadamard rotation and FP8 activation quantization.
#pragma once
#include <cstdint>
#include <vector>

#include "model/config.h"

namespace whale {

// y = x / sqrt(mean(x²) + eps) · weight, computed in f32 (y may alias x).
void rms_norm(const float* x, const float* weight, int n, float eps, float* y);
// y = (x − mean) / sqrt(var + eps) · weight + bias (y may alias x).
void layer_norm(const float* x, const float* weight, const float* bias, int n, float eps, float* y);
// gate[i] = silu(gate[i]) · up[i]  (SwiGLU's inner product).
void silu_mul(float* gate, const float* up, int n);
// In place; entries equal to -inf get probability 0.
void softmax(float* x, int n);

// Rotary embedding frequencies for one model: plain, YaRN (DeepSeek) or Llama 3 scaling.
class Rope {
 public:
  Rope() = default;
  Rope(const ModelConfig& config, int rotary_dim);
  // One position's rotation: cos and sin of each pair's angle (times YaRN's scale). A row's heads
  // all take the same one: computed once a row, not once a head (two libm calls a pair).
  struct Rotation {
    std::vector<float> cos, sin;
  };
  Rotation rotation(int position) const;
  // Rotates pairs (x[2i], x[2i+1]) — MLA's convention in the published DeepSeek weights.
  void apply_interleaved(float* x, const Rotation& r) const;
  void apply_interleaved(float* x, int position) const { apply_interleaved(x, rotation(position)); }
  // Rotates pairs (x[i], x[i + d/2]) — Llama/Qwen's rotate_half and the V3.2 indexer.
  void apply_halves(float* x, const Rotation& r) const;
  void apply_halves(float* x, int position) const { apply_halves(x, rotation(position)); }
  int dim() const { return dim_; }

 private:
  uint64_t id_ = 0;  // one per constructed frequency set (rotation()'s cache key)
  int dim_ = 0;
  std::vector<double> inv_freq_;
  double attention_scale_ = 1.0;  // YaRN multiplies cos and sin by this
};

// x ← H x / sqrt(n) with H the Sylvester Hadamard matrix (n a power of two).
void hadamard_transform(float* x, int n);

// FP8 e4m3 quantization of an activation vector in blocks of `block` elements, as DeepSeek's
// act_quant: scale = max(amax, 1e-4)/448 (rounded up to a power of two when ue8m0),
// code = e4m3(clamp(x/scale, ±448)).
void quantize_e4m3_blocks(const float* x, int n, int block, bool ue8m0, uint8_t* codes,
                          float* scales);

}  // namespace whale
