#include "train/optimizer.h"

#include <cmath>
#include <cstring>

#include "base/error.h"
#include "io/safetensors.h"

namespace whale {

AdamW::AdamW(const ParamStore& store, AdamWConfig config)
    : config_(config), m_(store.size(), 0.0f), v_(store.size(), 0.0f) {}

float AdamW::step(ParamStore& store, float lr) {
  // Global gradient norm over trainable parameters, summed in a fixed order.
  double sq = 0;
  for (const Param& p : store.params()) {
    if (!p.trainable) continue;
    const float* g = store.grads() + p.offset;
    double s = 0;
    for (size_t i = 0; i < p.size; ++i) s += static_cast<double>(g[i]) * g[i];
    sq += s;
  }
  const float norm = static_cast<float>(std::sqrt(sq));
  const float clip =
      (config_.clip_norm > 0 && norm > config_.clip_norm) ? config_.clip_norm / norm : 1.0f;
  ++steps_;
  const float b1 = config_.beta1, b2 = config_.beta2;
  const float correction1 = 1.0f - std::pow(b1, static_cast<float>(steps_));
  const float correction2 = 1.0f - std::pow(b2, static_cast<float>(steps_));
  for (const Param& p : store.params()) {
    if (!p.trainable) continue;
    float* w = store.values() + p.offset;
    const float* g = store.grads() + p.offset;
    float* m = m_.data() + p.offset;
    float* v = v_.data() + p.offset;
    const float decay = p.weight_decay ? config_.weight_decay : 0.0f;
#pragma omp parallel for schedule(static) if (p.size > 65536)
    for (size_t i = 0; i < p.size; ++i) {
      const float gi = g[i] * clip;
      m[i] = b1 * m[i] + (1 - b1) * gi;
      v[i] = b2 * v[i] + (1 - b2) * gi * gi;
      const float update = (m[i] / correction1) / (std::sqrt(v[i] / correction2) + config_.eps);
      w[i] -= lr * (update + decay * w[i]);
    }
  }
  return norm;
}

void AdamW::save(const std::string& path, const ParamStore& store) const {
  std::vector<TensorSpec> specs;
  for (const Param& p : store.params()) {
    specs.push_back({"m." + p.name, DType::F32, p.shape});
    specs.push_back({"v." + p.name, DType::F32, p.shape});
  }
  SafetensorsWriter writer(path, specs, {{"step", std::to_string(steps_)}});
  for (const Param& p : store.params()) {
    writer.write_next(m_.data() + p.offset, p.size * 4);
    writer.write_next(v_.data() + p.offset, p.size * 4);
  }
  writer.finish();
}

void AdamW::load(const std::string& path, const ParamStore& store) {
  SafetensorsFile file(path);
  for (const Param& p : store.params())
    for (auto [prefix, buffer] : {std::pair{"m.", &m_}, std::pair{"v.", &v_}}) {
      auto it = file.tensors().find(prefix + p.name);
      check(it != file.tensors().end(),
            path + ": missing optimizer state '" + prefix + p.name + "'");
      check(it->second.dtype == DType::F32 && it->second.shape == p.shape,
            path + ": optimizer state '" + prefix + p.name + "' has the wrong shape or type");
      std::memcpy(buffer->data() + p.offset, it->second.data, p.size * 4);
    }
  auto it = file.metadata().find("step");
  check(it != file.metadata().end(), path + ": no step count in the optimizer state");
  steps_ = std::stol(it->second);
}

bool parse_schedule(const std::string& name, Schedule* out) {
  if (name == "multistep")
    *out = Schedule::kMultiStep;
  else if (name == "cosine")
    *out = Schedule::kCosine;
  else if (name == "constant")
    *out = Schedule::kConstant;
  else
    return false;
  return true;
}

float learning_rate(Schedule schedule, long step, long total, long warmup, float peak) {
  if (warmup > 0 && step < warmup) return peak * static_cast<float>(step + 1) / warmup;
  const double progress = total > 0 ? static_cast<double>(step) / total : 0.0;
  switch (schedule) {
    case Schedule::kMultiStep:
      return progress < 0.8 ? peak : progress < 0.9 ? peak * 0.316f : peak * 0.1f;
    case Schedule::kCosine: {
      double span = std::max<long>(1, total - warmup);
      double t = std::min(1.0, static_cast<double>(step - warmup) / span);
      return static_cast<float>(peak * (0.1 + 0.9 * 0.5 * (1 + std::cos(M_PI * t))));
    }
    case Schedule::kConstant:
      return peak;
  }
  return peak;
}

ScalingLawChoice scaling_law(double c) {
  check(c > 0, "the compute budget must be positive");
  return {0.2920 * std::pow(c, 0.3271), 0.3118 * std::pow(c, -0.1250)};
}

}  // namespace whale
