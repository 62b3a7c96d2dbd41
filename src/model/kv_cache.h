// The inference cache. For MLA it holds only what the paper caches: per token and layer the
// normalized latent c_KV (kv_lora_rank) and the one shared RoPE key (qk_rope_head_dim), plus,
// for V3.2, the indexer's FP8 key (index_head_dim codes and their block scales).
// For the dense students it holds per-head keys and values.
#pragma once
#include <cstdint>
#include <vector>

#include "model/config.h"

namespace whale {

struct LayerCache {
  std::vector<float> kv;                // per token: MLA [c_KV ; k_rope], dense [k ; v]
  std::vector<uint8_t> index_keys;      // V3.2: e4m3 codes, index_head_dim per token
  std::vector<float> index_key_scales;  // V3.2: one per 128-block of index_head_dim

  // Paged form (the server's cache): the entries live in fixed-size pages of
  // 2^page_shift tokens owned by a shared pool, so sequences can share a prompt's pages and
  // memory is taken a page at a time. Empty `pages`: the entries are `kv`, contiguous.
  // The indexer's keys stay contiguous either way.
  std::vector<float*> pages;
  int page_shift = 0;

  // Token s's entry (width floats).
  const float* entry(int s, int width) const {
    if (pages.empty()) return kv.data() + static_cast<size_t>(s) * width;
    const int mask = (1 << page_shift) - 1;
    return pages[s >> page_shift] + static_cast<size_t>(s & mask) * width;
  }
  // How many of the n entries from s lie one after another in memory (the rest of s's page).
  int contiguous_entries(int s, int n) const {
    if (pages.empty()) return n;
    const int page_left = (1 << page_shift) - (s & ((1 << page_shift) - 1));
    return n < page_left ? n : page_left;
  }
  // Stores n entries for positions pos0 … pos0 + n − 1, the next ones of the sequence:
  // contiguous, appended to kv; paged, written into pages already attached.
  void store(const float* entries, int n, int pos0, int width);
};

struct KVCache {
  std::vector<LayerCache> layers;
  int length = 0;  // positions already processed

  static KVCache for_layers(int n) {
    KVCache c;
    c.layers.resize(n);
    return c;
  }
  void clear() {
    for (auto& l : layers) l = LayerCache();
    length = 0;
  }
  // Forgets every position from n on (speculative decoding drops a rejected draft's entries).
  void truncate(int n);
};

// Width of one token's entry in LayerCache::kv.
int cache_width(const ModelConfig& c);
// Bytes one token occupies in the cache over all main layers (f32 entries, fp8 indexer keys).
size_t kv_cache_bytes_per_token(const ModelConfig& c);
// Number of FP8 scale blocks of an indexer head.
inline int index_blocks(const ModelConfig& c) {
  return (c.index_head_dim + 127) / 128;
}
inline int index_block_size(const ModelConfig& c) {
  return c.index_head_dim < 128 ? c.index_head_dim : 128;
}

}  // namespace whale
