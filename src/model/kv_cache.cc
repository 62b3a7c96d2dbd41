#include "model/kv_cache.h"

namespace whale {

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
