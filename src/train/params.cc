#include "train/params.h"

#include <cmath>
#include <cstring>
#include <filesystem>

#include "base/error.h"
#include "base/file.h"
#include "model/random_init.h"
#include "ops/linear.h"

namespace whale {

ParamStore::ParamStore(const ModelConfig& config) : config_(config) {
  size_t offset = 0;
  for (const WeightSpec& spec : weight_specs(config)) {
    Param p;
    p.name = spec.name;
    p.shape = spec.shape;
    p.offset = offset;
    p.size = 1;
    for (int64_t d : spec.shape) p.size *= static_cast<size_t>(d);
    p.kind = spec.kind;
    p.trainable = spec.kind != WeightSpec::kRoutingBias;
    // AdamW's decay applies to matrices only: not to norms, biases or the routing bias.
    p.weight_decay = spec.kind == WeightSpec::kMatrix;
    offset += (p.size + 15) / 16 * 16;  // 64-byte aligned starts
    index_[p.name] = params_.size();
    params_.push_back(std::move(p));
  }
  values_.assign(offset, 0.0f);
  grads_.assign(offset, 0.0f);
  for (const Param& p : params_) {
    TensorView v;
    v.name = p.name;
    v.file = "parameter store";
    v.dtype = DType::F32;
    v.shape = p.shape;
    v.data = reinterpret_cast<const uint8_t*>(values_.data() + p.offset);
    v.nbytes = p.size * 4;
    views_[p.name] = v;
  }
}

const Param* ParamStore::param(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &params_[it->second];
}

const TensorView* ParamStore::find(const std::string& name) const {
  auto it = views_.find(name);
  return it == views_.end() ? nullptr : &it->second;
}

size_t ParamStore::freeze_all_but(const std::string& prefix) {
  size_t trainable = 0;
  for (Param& p : params_) {
    if (p.name.rfind(prefix, 0) != 0) p.trainable = false;
    if (p.trainable) trainable += p.size;
  }
  return trainable;
}

void ParamStore::zero_grads() {
  std::fill(grads_.begin(), grads_.end(), 0.0f);
}

void ParamStore::init_random(uint64_t seed, float stddev) {
  const float residual_scale = 1.0f / std::sqrt(2.0f * config_.num_hidden_layers);
  for (const Param& p : params_) {
    float* v = values_.data() + p.offset;
    switch (p.kind) {
      case WeightSpec::kNormWeight:
        std::fill(v, v + p.size, 1.0f);
        break;
      case WeightSpec::kBias:
      case WeightSpec::kRoutingBias:
        std::fill(v, v + p.size, 0.0f);
        break;
      case WeightSpec::kMatrix: {
        bool residual = p.name.ends_with("o_proj.weight") || p.name.ends_with("down_proj.weight");
        uint64_t s = seed * 0x9e3779b97f4a7c15ull + std::hash<std::string>{}(p.name);
        fill_normal(v, p.size, residual ? stddev * residual_scale : stddev, s);
        break;
      }
    }
  }
}

void ParamStore::load(const TensorSource& source) {
  for (const Param& p : params_) {
    const TensorView& t = source.get(p.name, p.shape);
    float* out = values_.data() + p.offset;
    if (p.shape.size() == 2) {
      // Through Linear, which knows every stored type (fp8 with its block scales included).
      Linear lin;
      lin.dtype = t.dtype;
      lin.rows = static_cast<int>(p.shape[0]);
      lin.cols = static_cast<int>(p.shape[1]);
      lin.data = t.data;
      if (t.dtype == DType::F8_E4M3) {
        lin.block_rows = config_.fp8_block_rows;
        lin.block_cols = config_.fp8_block_cols;
        int64_t br = (lin.rows + lin.block_rows - 1) / lin.block_rows;
        int64_t bc = (lin.cols + lin.block_cols - 1) / lin.block_cols;
        const TensorView& s = source.get(p.name + "_scale_inv", {br, bc});
        check(s.dtype == DType::F32, s.file + ": '" + s.name + "' must be F32");
        lin.block_scale.resize(static_cast<size_t>(br * bc));
        std::memcpy(lin.block_scale.data(), s.data, s.nbytes);
      } else {
        check(t.dtype == DType::F32 || t.dtype == DType::BF16 || t.dtype == DType::F16,
              t.file + ": tensor '" + p.name + "' has unsupported dtype " + dtype_name(t.dtype));
      }
      for (int r = 0; r < lin.rows; ++r) lin.row_to_f32(r, out + static_cast<size_t>(r) * lin.cols);
    } else {
      for (size_t i = 0; i < p.size; ++i) {
        if (t.dtype == DType::F32)
          std::memcpy(out + i, t.data + 4 * i, 4);
        else if (t.dtype == DType::BF16 || t.dtype == DType::F16) {
          uint16_t b;
          std::memcpy(&b, t.data + 2 * i, 2);
          out[i] = t.dtype == DType::BF16 ? bf16_to_f32(b) : f16_to_f32(b);
        } else {
          throw Error(t.file + ": tensor '" + p.name + "' has unsupported dtype " +
                      dtype_name(t.dtype));
        }
      }
    }
  }
}

void ParamStore::save(const std::string& dir, DType dtype) const {
  namespace fs = std::filesystem;
  check(dtype == DType::F32 || dtype == DType::BF16, "save: f32 or bf16 only");
  fs::create_directories(dir);
  std::vector<TensorSpec> specs;
  for (const Param& p : params_) {
    // The routing bias stays f32 as in the published checkpoints.
    DType t = p.kind == WeightSpec::kRoutingBias ? DType::F32 : dtype;
    specs.push_back({p.name, t, p.shape});
  }
  SafetensorsWriter writer((fs::path(dir) / "model.safetensors").string(), specs,
                           {{"format", "pt"}});
  std::vector<uint16_t> half;
  for (size_t i = 0; i < params_.size(); ++i) {
    const Param& p = params_[i];
    const float* v = values_.data() + p.offset;
    if (specs[i].dtype == DType::F32) {
      writer.write_next(v, p.size * 4);
    } else {
      half.resize(p.size);
      for (size_t k = 0; k < p.size; ++k) half[k] = f32_to_bf16(v[k]);
      writer.write_next(half.data(), p.size * 2);
    }
  }
  writer.finish();
  ModelConfig c = config_;
  c.fp8 = false;
  c.torch_dtype = dtype == DType::F32 ? "float32" : "bfloat16";
  fs::remove(fs::path(dir) / "model.safetensors.index.json");
  write_file_atomic((fs::path(dir) / "config.json").string(), c.to_json().dump(2) + "\n");
}

void ParamStore::save_grads(const std::string& path,
                            const std::map<std::string, std::string>& metadata) const {
  std::vector<TensorSpec> specs;
  for (const Param& p : params_) specs.push_back({p.name, DType::F32, p.shape});
  SafetensorsWriter writer(path, specs, metadata);
  for (const Param& p : params_) writer.write_next(grads_.data() + p.offset, p.size * 4);
  writer.finish();
}

}  // namespace whale
