#include "io/quantize.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <vector>

#include "base/error.h"
#include "base/file.h"
#include "base/progress.h"
#include "io/safetensors.h"
#include "model/config.h"
#include "model/weights.h"
#include "ops/kernels.h"
#include "ops/linear.h"
#include "tensor/dtype.h"

namespace whale {

namespace {
constexpr size_t kGroup = kQuantGroup;
constexpr float kF16Max = 65504.0f;

// The f16 the scale rounds to, back as f32 (what the kernels will multiply by).
float as_f16(float v, uint16_t* bits) {
  *bits = f32_to_f16(v);
  return f16_to_f32(*bits);
}
}  // namespace

void quantize_row_q8(const float* w, size_t n, int8_t* codes, uint16_t* scales) {
  for (size_t g = 0; g * kGroup < n; ++g) {
    const size_t begin = g * kGroup, end = std::min(n, begin + kGroup);
    float amax = 0;
    for (size_t i = begin; i < end; ++i) amax = std::max(amax, std::fabs(w[i]));
    const float scale = as_f16(std::min(amax / 127.0f, kF16Max), &scales[g]);
    const float inv = scale > 0 ? 1.0f / scale : 0.0f;
    for (size_t i = begin; i < end; ++i)
      codes[i] = static_cast<int8_t>(std::clamp(std::nearbyint(w[i] * inv), -127.0f, 127.0f));
  }
}

void quantize_row_q4(const float* w, size_t n, uint8_t* packed, uint16_t* scale_min) {
  for (size_t g = 0; g * kGroup < n; ++g) {
    const size_t begin = g * kGroup, end = std::min(n, begin + kGroup);
    float lo = w[begin], hi = w[begin];
    for (size_t i = begin; i < end; ++i) {
      lo = std::min(lo, w[i]);
      hi = std::max(hi, w[i]);
    }
    const float min = as_f16(std::clamp(lo, -kF16Max, kF16Max), &scale_min[2 * g + 1]);
    const float scale = as_f16(std::min((hi - min) / 15.0f, kF16Max), &scale_min[2 * g]);
    const float inv = scale > 0 ? 1.0f / scale : 0.0f;
    uint8_t* out = packed + g * (kGroup / 2);
    std::fill(out, out + kGroup / 2, 0);
    for (size_t i = begin; i < end; ++i) {
      const size_t j = i - begin;
      const int q = static_cast<int>(std::clamp(std::nearbyint((w[i] - min) * inv), 0.0f, 15.0f));
      out[j % (kGroup / 2)] |= static_cast<uint8_t>(j < kGroup / 2 ? q : q << 4);
    }
  }
}

namespace {

std::vector<float> tensor_to_f32(const TensorView& t) {
  std::vector<float> v(static_cast<size_t>(t.numel()));
  for (size_t i = 0; i < v.size(); ++i) {
    if (t.dtype == DType::F32) {
      std::memcpy(&v[i], t.data + 4 * i, 4);
    } else if (t.dtype == DType::BF16 || t.dtype == DType::F16) {
      uint16_t b;
      std::memcpy(&b, t.data + 2 * i, 2);
      v[i] = t.dtype == DType::BF16 ? bf16_to_f32(b) : f16_to_f32(b);
    } else {
      throw Error(t.file + ": tensor '" + t.name + "' has dtype " + dtype_name(t.dtype) +
                  " (expected F32, BF16 or F16)");
    }
  }
  return v;
}

struct Quantized {
  std::vector<uint8_t> codes;
  std::vector<uint16_t> scales;
};

// The source matrix (any dtype Linear reads) → q8 or q4, row by row in parallel.
Quantized quantize_matrix(const Linear& src, QuantMethod method, const std::string& name) {
  const size_t rows = src.rows, cols = src.cols, groups = (cols + kGroup - 1) / kGroup;
  Quantized q;
  const size_t row_codes = method == QuantMethod::kQ8 ? cols : groups * (kGroup / 2);
  const size_t row_scales = method == QuantMethod::kQ8 ? groups : 2 * groups;
  q.codes.resize(rows * row_codes);
  q.scales.resize(rows * row_scales);
  bool finite = true;
#pragma omp parallel reduction(&& : finite)
  {
    std::vector<float> row(cols);
#pragma omp for schedule(static)
    for (size_t r = 0; r < rows; ++r) {
      src.row_to_f32(static_cast<int>(r), row.data());
      for (float v : row) finite = finite && std::isfinite(v) && std::fabs(v) <= kF16Max;
      if (method == QuantMethod::kQ8)
        quantize_row_q8(row.data(), cols, reinterpret_cast<int8_t*>(q.codes.data()) + r * cols,
                        q.scales.data() + r * row_scales);
      else
        quantize_row_q4(row.data(), cols, q.codes.data() + r * row_codes,
                        q.scales.data() + r * row_scales);
    }
  }
  check(finite, "convert: tensor '" + name +
                    "' holds values that are not finite or beyond the f16 range (±65504)");
  return q;
}

// The source matrix → bf16 (round to nearest even), row by row in parallel.
std::vector<uint16_t> matrix_to_bf16(const Linear& src) {
  const size_t rows = src.rows, cols = src.cols;
  std::vector<uint16_t> out(rows * cols);
#pragma omp parallel
  {
    std::vector<float> row(cols);
#pragma omp for schedule(static)
    for (size_t r = 0; r < rows; ++r) {
      src.row_to_f32(static_cast<int>(r), row.data());
      for (size_t c = 0; c < cols; ++c) out[r * cols + c] = f32_to_bf16(row[c]);
    }
  }
  return out;
}

// One output tensor: a copy, one half (codes or scales) of a quantized matrix, or a matrix in
// bf16.
struct Item {
  TensorSpec spec;
  const TensorView* source;
  enum Role { kCopy, kCodes, kScales, kBf16 } role;
  QuantMethod method;
};

}  // namespace

void convert_model(const std::string& in_dir, const std::string& out_dir,
                   const ConvertOptions& options) {
  namespace fs = std::filesystem;
  check(fs::is_directory(in_dir), "convert: " + in_dir + " is not a folder");
  check(!fs::exists(out_dir) || !fs::equivalent(in_dir, out_dir),
        "convert: --out must be a different folder from --model");
  const std::string config_path = (fs::path(in_dir) / "config.json").string();
  nlohmann::json config_json;
  try {
    config_json = nlohmann::json::parse(read_file(config_path));
  } catch (const nlohmann::json::exception& e) {
    throw Error(config_path + ": not valid JSON (" + e.what() + ")");
  }
  check(!config_json.contains("whale_quantization"),
        config_path + ": the model is already quantized (whale_quantization)");
  const ModelConfig config = ModelConfig::from_json(config_json, config_path);
  Checkpoint checkpoint(in_dir);

  // Which matrices become what: the ones FP8 checkpoints quantize, and optionally the head.
  // kBF16: every matrix that is not bf16 yet.
  const bool to_bf16 = options.method == QuantMethod::kBF16;
  std::map<std::string, QuantMethod> plan;
  for (const WeightSpec& s : weight_specs(config)) {
    if (to_bf16) {
      const TensorView* view = checkpoint.find(s.name);
      if (view && view->shape.size() == 2 && view->dtype != DType::BF16)
        plan[s.name] = QuantMethod::kBF16;
    } else if (s.kind == WeightSpec::kMatrix && s.quantizable) {
      plan[s.name] = options.method;
    }
  }
  if (!to_bf16 && options.head && !config.tie_word_embeddings)
    plan["lm_head.weight"] = *options.head;
  if (config.has_mtp() && (options.mtp || !to_bf16)) {
    const std::string mtp = "model.layers." + std::to_string(config.num_hidden_layers) + ".";
    // By default (q8, q4) the MTP module follows the main model: its input projection as the
    // other matrices, its head as lm_head (else a draft reads a vocabulary-wide bf16 matrix).
    const auto method_of = [&](const std::string& name) -> std::optional<QuantMethod> {
      if (options.mtp) return options.mtp;
      return name == mtp + "shared_head.head.weight" ? options.head : options.method;
    };
    // Its block's matrices that --quant would quantize (not the router gate), its input
    // projection and its head (a vocabulary-wide matrix: a large share of a draft's bytes).
    for (const WeightSpec& s : weight_specs(config)) {
      if (s.name.rfind(mtp, 0) != 0 || !(s.quantizable || s.name == mtp + "eh_proj.weight" ||
                                         s.name == mtp + "shared_head.head.weight"))
        continue;
      const std::optional<QuantMethod> method = method_of(s.name);
      const TensorView* view = checkpoint.find(s.name);
      if (!method || (*method == QuantMethod::kBF16 && view && view->dtype == DType::BF16))
        plan.erase(s.name);  // kept as stored (--head keep), or bf16 already
      else
        plan[s.name] = *method;
    }
  }

  std::vector<Item> items;
  std::string source_dtype;
  for (const auto& [name, view] : checkpoint.tensors()) {
    const std::string suffix = "_scale_inv";
    if (name.size() > suffix.size() &&
        name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0 &&
        plan.count(name.substr(0, name.size() - suffix.size())))
      continue;  // an FP8 block scale of a matrix being requantized
    auto it = plan.find(name);
    if (it == plan.end()) {
      items.push_back({{name, view->dtype, view->shape}, view, Item::kCopy, options.method});
      continue;
    }
    check(view->shape.size() == 2, view->file + ": tensor '" + name + "' is not a matrix");
    check(view->dtype != DType::I8 && view->dtype != DType::U8,
          view->file + ": tensor '" + name + "' is already quantized");
    if (source_dtype.empty()) source_dtype = dtype_name(view->dtype);
    const int64_t rows = view->shape[0], cols = view->shape[1], groups = (cols + 31) / 32;
    if (it->second == QuantMethod::kBF16) {
      items.push_back({{name, DType::BF16, {rows, cols}}, view, Item::kBf16, it->second});
    } else if (it->second == QuantMethod::kQ8) {
      items.push_back({{name, DType::I8, {rows, cols}}, view, Item::kCodes, it->second});
      items.push_back(
          {{name + "_qscale", DType::F16, {rows, groups}}, view, Item::kScales, it->second});
    } else {
      items.push_back({{name, DType::U8, {rows, groups * 16}}, view, Item::kCodes, it->second});
      items.push_back(
          {{name + "_qscale", DType::F16, {rows, groups, 2}}, view, Item::kScales, it->second});
    }
  }
  for (const auto& [name, method] : plan)
    check(checkpoint.find(name) != nullptr, in_dir + ": tensor '" + name + "' is missing");

  // Shards of at most shard_gb; a quantized matrix's codes and scales stay together. Inside a
  // shard, wider elements come first, so every tensor is aligned to its element size.
  const size_t shard_bytes = static_cast<size_t>(options.shard_gb * (1ull << 30));
  std::vector<std::vector<size_t>> shards(1);
  size_t shard_size = 0, total = 0;
  for (size_t i = 0; i < items.size(); ++i) {
    size_t b = items[i].spec.nbytes();
    if (items[i].role == Item::kCodes) b += items[i + 1].spec.nbytes();
    if (items[i].role == Item::kScales) continue;  // counted with its codes
    if (shard_size > 0 && shard_size + b > shard_bytes) {
      shards.emplace_back();
      shard_size = 0;
    }
    shards.back().push_back(i);
    if (items[i].role == Item::kCodes) shards.back().push_back(i + 1);
    shard_size += b;
    total += b;
  }
  for (auto& shard : shards)
    std::stable_sort(shard.begin(), shard.end(), [&](size_t a, size_t b) {
      return dtype_size(items[a].spec.dtype) > dtype_size(items[b].spec.dtype);
    });
  auto shard_name = [&](size_t k) {
    if (shards.size() == 1) return std::string("model.safetensors");
    char buf[64];
    std::snprintf(buf, sizeof buf, "model-%05zu-of-%05zu.safetensors", k + 1, shards.size());
    return std::string(buf);
  };

  fs::create_directories(out_dir);
  Progress progress(options.progress ? "convert" : "", total, "B");
  nlohmann::json weight_map = nlohmann::json::object();
  std::map<std::string, std::vector<float>> fp8_scales;  // per matrix, while it is converted
  for (size_t k = 0; k < shards.size(); ++k) {
    std::vector<TensorSpec> specs;
    for (size_t i : shards[k]) {
      specs.push_back(items[i].spec);
      weight_map[items[i].spec.name] = shard_name(k);
    }
    SafetensorsWriter writer((fs::path(out_dir) / shard_name(k)).string(), specs,
                             {{"format", "pt"}});
    for (size_t i : shards[k]) {
      const Item& item = items[i];
      const TensorView& t = *item.source;
      if (item.role == Item::kCopy) {
        writer.write_next(t.data, t.nbytes);
        progress.advance(t.nbytes);
        continue;
      }
      // Scales and codes sit apart in the shard (alignment), so each is computed on its turn;
      // the quantization is deterministic, so both halves agree.
      Linear src;
      src.dtype = t.dtype;
      src.rows = static_cast<int>(t.shape[0]);
      src.cols = static_cast<int>(t.shape[1]);
      src.data = t.data;
      if (t.dtype == DType::F8_E4M3) {
        src.block_rows = config.fp8_block_rows;
        src.block_cols = config.fp8_block_cols;
        src.block_scale = tensor_to_f32(checkpoint.get(t.name + "_scale_inv"));
        const size_t expected = ((src.rows + src.block_rows - 1) / src.block_rows) *
                                ((src.cols + src.block_cols - 1) / src.block_cols);
        check(src.block_scale.size() == expected,
              t.file + ": tensor '" + t.name + "_scale_inv' has the wrong number of blocks");
      } else {
        check(t.dtype == DType::F32 || t.dtype == DType::BF16 || t.dtype == DType::F16,
              t.file + ": tensor '" + t.name + "' has dtype " + dtype_name(t.dtype) +
                  ", which convert cannot read");
      }
      if (item.role == Item::kBf16) {
        const std::vector<uint16_t> b = matrix_to_bf16(src);
        writer.write_next(b.data(), b.size() * 2);
        progress.advance(item.spec.nbytes());
        continue;
      }
      Quantized q = quantize_matrix(src, item.method, t.name);
      if (item.role == Item::kCodes)
        writer.write_next(q.codes.data(), q.codes.size());
      else
        writer.write_next(q.scales.data(), q.scales.size() * 2);
      progress.advance(item.spec.nbytes());
    }
    writer.finish();
  }
  const fs::path index_path = fs::path(out_dir) / "model.safetensors.index.json";
  if (shards.size() > 1) {
    nlohmann::json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
    write_file_atomic(index_path.string(), index.dump(2));
  } else {
    fs::remove(index_path);
  }
  // The folder's other files (tokenizer, generation config, ...) come along unchanged.
  for (const auto& entry : fs::directory_iterator(in_dir)) {
    const std::string file = entry.path().filename().string();
    if (!entry.is_regular_file() || file == "config.json" ||
        file == "model.safetensors.index.json" || entry.path().extension() == ".safetensors")
      continue;
    write_file_atomic((fs::path(out_dir) / file).string(), read_file(entry.path().string()));
  }
  config_json.erase("quantization_config");
  const auto method_name = [](QuantMethod m) {
    return m == QuantMethod::kQ8 ? "q8" : m == QuantMethod::kQ4 ? "q4" : "bf16";
  };
  const bool quantized_mtp = options.mtp && config.has_mtp() && *options.mtp != QuantMethod::kBF16;
  if (to_bf16) config_json["torch_dtype"] = "bfloat16";
  if (!to_bf16 || quantized_mtp) {  // (a plain bf16 model has no quantization to record)
    config_json["whale_quantization"] = {
        {"method", method_name(options.method)},
        {"group_size", kGroup},
        {"scale_dtype", "F16"},
        {"lm_head", to_bf16 || !options.head || config.tie_word_embeddings
                        ? "unchanged"
                        : method_name(*options.head)},
        {"source", source_dtype}};
    if (options.mtp && config.has_mtp())
      config_json["whale_quantization"]["mtp"] = method_name(*options.mtp);
  }
  write_file_atomic((fs::path(out_dir) / "config.json").string(), config_json.dump(2) + "\n");
  progress.finish();
}

}  // namespace whale
