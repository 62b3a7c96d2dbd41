#include "ops/nn.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>

#include "ops/kernels.h"
#include "tensor/dtype.h"

namespace whale {

void rms_norm(const float* x, const float* weight, int n, float eps, float* y) {
  // The squares summed in eight running sums, combined in a fixed order: one sum would be a
  // chain of n dependent additions (1.2 µs for 1024 values, per row and norm in decode).
  double lanes[8] = {};
  int i = 0;
  for (; i + 8 <= n; i += 8)
    for (int k = 0; k < 8; ++k) lanes[k] += static_cast<double>(x[i + k]) * x[i + k];
  double sum = ((lanes[0] + lanes[4]) + (lanes[2] + lanes[6])) +
               ((lanes[1] + lanes[5]) + (lanes[3] + lanes[7]));
  for (; i < n; ++i) sum += static_cast<double>(x[i]) * x[i];
  float inv = static_cast<float>(1.0 / std::sqrt(sum / n + eps));
  for (i = 0; i < n; ++i) y[i] = x[i] * inv * weight[i];
}

void layer_norm(const float* x, const float* weight, const float* bias, int n, float eps,
                float* y) {
  double mean = 0, var = 0;
  for (int i = 0; i < n; ++i) mean += x[i];
  mean /= n;
  for (int i = 0; i < n; ++i) var += (x[i] - mean) * (x[i] - mean);
  var /= n;
  double inv = 1.0 / std::sqrt(var + eps);
  for (int i = 0; i < n; ++i) y[i] = static_cast<float>((x[i] - mean) * inv) * weight[i] + bias[i];
}

void silu_mul(float* gate, const float* up, int n) {
  silu_mul_kernel(gate, up, n);
}

void softmax(float* x, int n) {
  float max = -std::numeric_limits<float>::infinity();
  for (int i = 0; i < n; ++i) max = std::max(max, x[i]);
  const float inv = 1.0f / exp_shifted(x, n, max);
  for (int i = 0; i < n; ++i) x[i] *= inv;
}

namespace {
double yarn_mscale(double scale, double mscale) {
  return scale <= 1 ? 1.0 : 0.1 * mscale * std::log(scale) + 1.0;
}
// The dimension index at which a frequency completes `rotations` turns over the original length.
double yarn_correction_dim(double rotations, int dim, double base, double max_pos) {
  return dim * std::log(max_pos / (rotations * 2 * M_PI)) / (2 * std::log(base));
}
}  // namespace

Rope::Rope(const ModelConfig& c, int rotary_dim) : dim_(rotary_dim) {
  static std::atomic<uint64_t> next_id{0};
  id_ = ++next_id;
  const int half = rotary_dim / 2;
  const RopeScaling& s = c.rope_scaling;
  inv_freq_.resize(half);
  for (int i = 0; i < half; ++i)
    inv_freq_[i] = 1.0 / std::pow(c.rope_theta, (2.0 * i) / rotary_dim);
  if (s.type == "yarn") {
    // DeepSeek's YaRN: interpolate low frequencies by `factor`, keep high ones, ramp between.
    double low = std::floor(yarn_correction_dim(s.beta_fast, rotary_dim, c.rope_theta,
                                                s.original_max_position_embeddings));
    double high = std::ceil(yarn_correction_dim(s.beta_slow, rotary_dim, c.rope_theta,
                                                s.original_max_position_embeddings));
    low = std::max(low, 0.0);
    high = std::min(high, rotary_dim - 1.0);
    if (low == high) high += 0.001;
    for (int i = 0; i < half; ++i) {
      double ramp = std::clamp((i - low) / (high - low), 0.0, 1.0);
      double extrapolation_weight = 1.0 - ramp;
      inv_freq_[i] = inv_freq_[i] / s.factor * (1 - extrapolation_weight) +
                     inv_freq_[i] * extrapolation_weight;
    }
    attention_scale_ = yarn_mscale(s.factor, s.mscale) / yarn_mscale(s.factor, s.mscale_all_dim);
  } else if (s.type == "llama3") {
    double low_wavelen = s.original_max_position_embeddings / s.low_freq_factor;
    double high_wavelen = s.original_max_position_embeddings / s.high_freq_factor;
    for (int i = 0; i < half; ++i) {
      double wavelen = 2 * M_PI / inv_freq_[i];
      if (wavelen > low_wavelen) {
        inv_freq_[i] /= s.factor;
      } else if (wavelen >= high_wavelen) {
        double smooth = (s.original_max_position_embeddings / wavelen - s.low_freq_factor) /
                        (s.high_freq_factor - s.low_freq_factor);
        inv_freq_[i] = (1 - smooth) * inv_freq_[i] / s.factor + smooth * inv_freq_[i];
      }
    }
  } else if (s.type == "linear") {
    for (auto& f : inv_freq_) f /= s.factor;
  }
}

Rope::Rotation Rope::rotation(int position) const {
  // A decode step rotates its row at one position in every layer, the queries and the key: the
  // thread's last rotation is kept (v2-lite-8l: 16 a step, each 64 libm calls, ~30 µs a step).
  thread_local struct {
    uint64_t rope = 0;
    int position = -1;
    Rotation rotation;
  } last;
  if (last.rope == id_ && last.position == position) return last.rotation;
  const int half = dim_ / 2;
  Rotation r{std::vector<float>(half), std::vector<float>(half)};
  for (int i = 0; i < half; ++i) {
    const double angle = position * inv_freq_[i];
    r.cos[i] = static_cast<float>(std::cos(angle) * attention_scale_);
    r.sin[i] = static_cast<float>(std::sin(angle) * attention_scale_);
  }
  last = {id_, position, r};
  return r;
}

void Rope::apply_interleaved(float* x, const Rotation& r) const {
  for (int i = 0; i < dim_ / 2; ++i) {
    const float a = x[2 * i], b = x[2 * i + 1];
    x[2 * i] = a * r.cos[i] - b * r.sin[i];
    x[2 * i + 1] = a * r.sin[i] + b * r.cos[i];
  }
}

void Rope::apply_halves(float* x, const Rotation& r) const {
  const int half = dim_ / 2;
  for (int i = 0; i < half; ++i) {
    const float a = x[i], b = x[i + half];
    x[i] = a * r.cos[i] - b * r.sin[i];
    x[i + half] = a * r.sin[i] + b * r.cos[i];
  }
}

void hadamard_transform(float* x, int n) {
  for (int h = 1; h < n; h *= 2)
    for (int i = 0; i < n; i += 2 * h)
      for (int j = i; j < i + h; ++j) {
        float a = x[j], b = x[j + h];
        x[j] = a + b;
        x[j + h] = a - b;
      }
  float scale = 1.0f / std::sqrt(static_cast<float>(n));
  for (int i = 0; i < n; ++i) x[i] *= scale;
}

void quantize_e4m3_blocks(const float* x, int n, int block, bool ue8m0, uint8_t* codes,
                          float* scales) {
  for (int b = 0; b * block < n; ++b) {
    const float* xb = x + b * block;
    int len = std::min(block, n - b * block);
    float amax = 1e-4f;
    for (int i = 0; i < len; ++i) amax = std::max(amax, std::fabs(xb[i]));
    float scale = amax * (1.0f / 448.0f);  // as the published kernel: amax · fp8_max_inv
    if (ue8m0) scale = std::exp2(std::ceil(std::log2(scale)));
    scales[b] = scale;
    for (int i = 0; i < len; ++i)
      codes[b * block + i] = f32_to_e4m3(std::clamp(xb[i] / scale, -448.0f, 448.0f));
  }
}

}  // namespace whale
