#include "model/random_init.h"

#include <omp.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "base/error.h"
#include "base/file.h"
#include "base/progress.h"
#include "io/safetensors.h"
#include "model/weights.h"

namespace whale {

namespace {

std::vector<uint8_t> encode(const std::vector<float>& values, DType dtype) {
  std::vector<uint8_t> bytes(values.size() * dtype_size(dtype));
  if (dtype == DType::F32) {
    std::memcpy(bytes.data(), values.data(), bytes.size());
  } else {
    uint16_t* out = reinterpret_cast<uint16_t*>(bytes.data());
#pragma omp parallel for schedule(static) if (values.size() > 65536)
    for (size_t i = 0; i < values.size(); ++i) out[i] = f32_to_bf16(values[i]);
  }
  return bytes;
}

// DeepSeek-V3's FP8 weights: per block, scale = amax/448 and code = e4m3(w / scale).
void quantize_fp8(const std::vector<float>& w, int rows, int cols, int br, int bc,
                  std::vector<uint8_t>& codes, std::vector<float>& scales) {
  const int nbr = (rows + br - 1) / br, nbc = (cols + bc - 1) / bc;
  codes.resize(w.size());
  scales.assign(static_cast<size_t>(nbr) * nbc, 0.0f);
#pragma omp parallel for collapse(2) schedule(static)
  for (int bi = 0; bi < nbr; ++bi)
    for (int bj = 0; bj < nbc; ++bj) {
      float amax = 0;
      for (int r = bi * br; r < std::min(rows, (bi + 1) * br); ++r)
        for (int c = bj * bc; c < std::min(cols, (bj + 1) * bc); ++c)
          amax = std::max(amax, std::fabs(w[static_cast<size_t>(r) * cols + c]));
      float scale = amax > 0 ? amax / 448.0f : 1.0f;
      scales[static_cast<size_t>(bi) * nbc + bj] = scale;
      for (int r = bi * br; r < std::min(rows, (bi + 1) * br); ++r)
        for (int c = bj * bc; c < std::min(cols, (bj + 1) * bc); ++c)
          codes[static_cast<size_t>(r) * cols + c] =
              f32_to_e4m3(w[static_cast<size_t>(r) * cols + c] / scale);
    }
}

struct Planned {
  TensorSpec spec;
  const WeightSpec* source;  // null for a _scale_inv companion
};

}  // namespace

static uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

void fill_normal(float* out, size_t n, float stddev, uint64_t seed) {
  constexpr size_t kChunk = 1 << 16;
  const size_t chunks = (n + kChunk - 1) / kChunk;
  // Sum of 4 U(0,1): mean 2, variance 4/12.
  const float scale = stddev / std::sqrt(4.0f / 12.0f);
#pragma omp parallel for schedule(static) if (n > kChunk)
  for (size_t ch = 0; ch < chunks; ++ch) {
    uint64_t state = seed ^ (ch * 0xd1b54a32d192ed03ull);
    size_t end = std::min(n, (ch + 1) * kChunk);
    for (size_t i = ch * kChunk; i < end; ++i) {
      uint64_t r = splitmix64(state);
      float sum = 0;
      for (int k = 0; k < 4; ++k) sum += static_cast<float>((r >> (16 * k)) & 0xffff) / 65536.0f;
      out[i] = (sum - 2.0f) * scale;
    }
  }
}

void write_random_model(const ModelConfig& config, const std::string& dir,
                        const InitOptions& options) {
  namespace fs = std::filesystem;
  check(options.dtype == DType::F32 || options.dtype == DType::BF16 ||
            options.dtype == DType::F8_E4M3,
        "init: --dtype must be f32, bf16 or fp8");
  ModelConfig c = config;
  c.fp8 = options.dtype == DType::F8_E4M3;
  if (c.fp8) check(c.is_deepseek(), "init: fp8 weights are for DeepSeek models");
  c.torch_dtype = options.dtype == DType::F32 ? "float32" : "bfloat16";
  c.validate("init");
  fs::create_directories(dir);

  const std::vector<WeightSpec> specs = weight_specs(c);
  std::vector<Planned> plan;
  for (const WeightSpec& s : specs) {
    DType t = options.dtype == DType::F32 ? DType::F32 : DType::BF16;
    if (s.kind == WeightSpec::kRoutingBias) t = DType::F32;
    if (c.fp8 && s.quantizable) {
      plan.push_back({{s.name, DType::F8_E4M3, s.shape}, &s});
      int64_t nbr = (s.shape[0] + c.fp8_block_rows - 1) / c.fp8_block_rows;
      int64_t nbc = (s.shape[1] + c.fp8_block_cols - 1) / c.fp8_block_cols;
      plan.push_back({{s.name + "_scale_inv", DType::F32, {nbr, nbc}}, nullptr});
    } else {
      plan.push_back({{s.name, t, s.shape}, &s});
    }
  }
  // Split into shards of at most shard_bytes (a tensor never straddles two).
  std::vector<std::vector<size_t>> shards(1);
  size_t shard_size = 0, total = 0;
  for (size_t i = 0; i < plan.size(); ++i) {
    size_t b = plan[i].spec.nbytes();
    if (shard_size > 0 && shard_size + b > options.shard_bytes) {
      shards.emplace_back();
      shard_size = 0;
    }
    shards.back().push_back(i);
    shard_size += b;
    total += b;
  }
  auto shard_name = [&](size_t k) {
    if (shards.size() == 1) return std::string("model.safetensors");
    char buf[64];
    std::snprintf(buf, sizeof buf, "model-%05zu-of-%05zu.safetensors", k + 1, shards.size());
    return std::string(buf);
  };

  Progress progress(options.progress ? "init" : "", total, "B");
  nlohmann::json weight_map = nlohmann::json::object();
  std::vector<float> values;
  std::vector<uint8_t> codes;
  std::vector<float> scales;
  for (size_t k = 0; k < shards.size(); ++k) {
    std::vector<TensorSpec> shard_specs;
    for (size_t i : shards[k]) {
      shard_specs.push_back(plan[i].spec);
      weight_map[plan[i].spec.name] = shard_name(k);
    }
    SafetensorsWriter writer((fs::path(dir) / shard_name(k)).string(), shard_specs,
                             {{"format", "pt"}});
    for (size_t i : shards[k]) {
      const Planned& p = plan[i];
      if (!p.source) {  // the scale companion of the fp8 tensor just written
        writer.write_next(scales.data(), scales.size() * 4);
        progress.advance(scales.size() * 4);
        continue;
      }
      const WeightSpec& s = *p.source;
      size_t n = 1;
      for (int64_t d : s.shape) n *= static_cast<size_t>(d);
      values.resize(n);
      uint64_t seed = options.seed * 0x9e3779b97f4a7c15ull + std::hash<std::string>{}(s.name);
      switch (s.kind) {
        case WeightSpec::kNormWeight:
          std::fill(values.begin(), values.end(), 1.0f);
          break;
        case WeightSpec::kBias:
        case WeightSpec::kRoutingBias:
          std::fill(values.begin(), values.end(), 0.0f);
          break;
        case WeightSpec::kMatrix: {
          // Embedding rows ~ N(0, 1) (they are normed before use); other matrices
          // ~ N(0, 1/fan_in) so activations keep their scale through the layers.
          bool embedding = s.name.find("embed_tokens") != std::string::npos;
          float stddev = embedding ? 1.0f : 1.0f / std::sqrt(static_cast<float>(s.shape[1]));
          fill_normal(values.data(), n, stddev, seed);
          break;
        }
      }
      if (p.spec.dtype == DType::F8_E4M3) {
        quantize_fp8(values, static_cast<int>(s.shape[0]), static_cast<int>(s.shape[1]),
                     c.fp8_block_rows, c.fp8_block_cols, codes, scales);
        writer.write_next(codes.data(), codes.size());
      } else {
        std::vector<uint8_t> bytes = encode(values, p.spec.dtype);
        writer.write_next(bytes.data(), bytes.size());
      }
      progress.advance(p.spec.nbytes());
    }
    writer.finish();
  }
  if (shards.size() > 1) {
    nlohmann::json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
    write_file_atomic((fs::path(dir) / "model.safetensors.index.json").string(), index.dump(2));
  } else {
    fs::remove(fs::path(dir) / "model.safetensors.index.json");
  }
  // config.json last: a folder with a config is a finished model.
  write_file_atomic((fs::path(dir) / "config.json").string(), c.to_json().dump(2) + "\n");
  progress.finish();
}

}  // namespace whale
