#include "model/kv_cache.h"

#include <algorithm>

#include "base/error.h"

namespace whale {

void KVCache::truncate(int n) {
  check(n >= 0 && n <= length, "cache truncate: position out of range");
  if (n == length) return;
  // Every entry is a fixed number of elements per position, so the width is size / length.
  for (LayerCache& l : layers) {
    l.kv.resize(l.kv.size() / length * n);
    l.index_keys.resize(l.index_keys.size() / length * n);
    l.index_key_scales.resize(l.index_key_scales.size() / length * n);
  }
  length = n;
}

void LayerCache::store(const float* entries, int n, int pos0, int width) {
  if (pages.empty()) {
    kv.insert(kv.end(), entries, entries + static_cast<size_t>(n) * width);
    return;
  }
  const int page_tokens = 1 << page_shift;
  check(static_cast<size_t>(pos0 + n) <= pages.size() * page_tokens,
        "KV cache: positions past the attached pages");
  for (int t = 0; t < n; ++t) {
    const int s = pos0 + t;
    std::copy_n(entries + static_cast<size_t>(t) * width, width,
                pages[s >> page_shift] + static_cast<size_t>(s & (page_tokens - 1)) * width);
  }
}

int cache_width(const ModelConfig& c) {
  if (c.is_deepseek()) return c.kv_lora_rank + c.qk_rope_head_dim;
  return 2 * c.num_key_value_heads * c.dense_head_dim();
}

size_t kv_cache_bytes_per_token(const ModelConfig& c) {
  size_t per_layer = static_cast<size_t>(cache_width(c)) * sizeof(float);
  if (c.has_indexer()) per_layer += c.index_head_dim + index_blocks(c) * sizeof(float);
  return per_layer * c.num_hidden_layers;
}

}  // namespace whale
