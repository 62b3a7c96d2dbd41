// whale's group quantization of weight matrices, and `whale convert`, which writes a quantized
// copy of a model folder.
//
// Layout on disk (safetensors; a matrix W [rows, cols] of the Hugging Face name NAME):
//   q8  NAME          I8  [rows, cols]           codes in [-127, 127]
//       NAME_qscale   F16 [rows, G]              G = ceil(cols / 32); w = code · scale
//       Symmetric, per group of 32 inputs: scale = amax / 127, code = round(w / scale).
//   q4  NAME          U8  [rows, G · 16]         16 bytes per group of 32 inputs: value j < 16
//                                                in the low nibble of byte j, value 16 + j in its
//                                                high nibble (a short last group is zero-padded)
//       NAME_qscale   F16 [rows, G, 2]           (scale, min); w = nibble · scale + min
//       Asymmetric, per group: min = the group's minimum, scale = (max − min) / 15,
//       nibble = round((w − min) / scale).
// Codes are computed against the scale (and min) as rounded to f16, so what is stored is
// exactly what was meant. Per 32 weights: q8 34 bytes (8.5 bits), q4 20 bytes (5 bits).
// config.json records the scheme as
//   "whale_quantization": {"method": "q8" | "q4", "group_size": 32, "scale_dtype": "F16",
//                          "lm_head": "q8" | "q4" | "unchanged", "source": "<original dtype>"}
// (method "bf16" with an "mtp" entry when only the MTP module is quantized; ConvertOptions::mtp)
// and loses any "quantization_config" (an FP8 source's e4m3 weights are requantized from
// their dequantized values; its `weight_scale_inv` companions are dropped). Other tensors
// (embeddings, norms, router gates, routing biases) are copied unchanged.
#pragma once
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

namespace whale {

// kBF16 is no quantization: every f32, f16 and FP8 (block scale applied) matrix becomes bf16 —
// e.g. a model `whale train` wrote in f32, or DeepSeek-V3's FP8 release as its bf16 version.
enum class QuantMethod { kQ8, kQ4, kBF16 };

// One row of n values → codes (q8: n bytes; q4: ceil(n/32)·16 bytes) and f16 scales
// (q8: ceil(n/32); q4: 2·ceil(n/32), (scale, min) pairs).
void quantize_row_q8(const float* w, size_t n, int8_t* codes, uint16_t* scales);
void quantize_row_q4(const float* w, size_t n, uint8_t* packed, uint16_t* scale_min);

struct ConvertOptions {
  QuantMethod method = QuantMethod::kQ8;
  // lm_head: q8 (the default, whatever the method: the head is a large share of a decode step's
  // bytes and its errors land directly in the logits), q4, or kept as stored (nullopt). With
  // kBF16 the head is a matrix like the others.
  std::optional<QuantMethod> head = QuantMethod::kQ8;
  // The MTP module's matrices (eh_proj, its block's as --quant picks them, its head; not its
  // embedding, a row lookup, nor its router gate): nullopt = as the rest (q8/q4: eh_proj as the
  // other matrices, its head as lm_head; bf16: as stored or widened); otherwise that method, e.g.
  // q8 under a bf16 model — a draft for speculative decoding that reads half the bytes, while the
  // main model, which verifies every draft, keeps its arithmetic (recorded as "mtp").
  std::optional<QuantMethod> mtp;
  double shard_gb = 4.0;
  bool progress = false;
};

// Reads the model folder `in_dir` (any dtype whale loads) and writes `out_dir`: config.json
// (with kBF16: no whale_quantization, torch_dtype bfloat16, no FP8 quantization_config),
// safetensors shards (+ index when more than one), and the other files of in_dir (tokenizer,
// generation config) copied. Every file is written atomically; config.json last.
void convert_model(const std::string& in_dir, const std::string& out_dir,
                   const ConvertOptions& options);

}  // namespace whale
