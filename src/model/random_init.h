// `whale init`: a randomly initialized model written in the exact Hugging Face layout
// (config.json + model.safetensors, or shards + model.safetensors.index.json).
#pragma once
#include <cstdint>
#include <string>

#include "model/config.h"
#include "tensor/dtype.h"

namespace whale {

struct InitOptions {
  uint64_t seed = 0;
  DType dtype = DType::BF16;  // F32, BF16, or F8_E4M3 (block-quantized matrices, rest bf16)
  size_t shard_bytes = size_t{4} << 30;  // split into shards above this size
  bool progress = false;
};

// Approximately normal values (Irwin–Hall sum of four 16-bit uniforms, variance-corrected),
// deterministic for a given seed whatever the thread count.
void fill_normal(float* out, size_t n, float stddev, uint64_t seed);

void write_random_model(const ModelConfig& config, const std::string& dir,
                        const InitOptions& options);

}  // namespace whale
