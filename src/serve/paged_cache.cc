#include "serve/paged_cache.h"

#include <algorithm>

#include "base/error.h"

namespace whale::serve {

namespace {

uint64_t mix(uint64_t x) {  // splitmix64's finalizer
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

uint64_t block_hash(uint64_t parent, const int* tokens, int n) {
  uint64_t h = mix(parent ^ 0x5bd1e995u);
  for (int i = 0; i < n; ++i) h = mix(h ^ static_cast<uint32_t>(tokens[i]));
  return h;
}

}  // namespace

PagedCache::PagedCache(const ModelConfig& config, size_t budget_bytes, int block_tokens,
                       bool prefix_caching)
    : layers_(config.num_hidden_layers),
      width_(cache_width(config)),
      block_tokens_(block_tokens),
      block_shift_(0),
      prefix_caching_(prefix_caching) {
  check(block_tokens > 0 && (block_tokens & (block_tokens - 1)) == 0,
        "cache block size must be a power of two");
  while ((1 << block_shift_) < block_tokens) ++block_shift_;
  block_floats_ = static_cast<size_t>(layers_) * block_tokens_ * width_;
  const size_t count = budget_bytes / block_bytes();
  check(count >= 1, "the cache budget holds no block of " + std::to_string(block_bytes()) +
                        " bytes; raise --cache-mib");
  // Not value-initialized: pages are only read at positions a sequence has written, and
  // untouched memory is not committed until used.
  arena_.reset(new float[count * block_floats_]);
  blocks_.resize(count);
  free_.reserve(count);
  for (size_t b = count; b-- > 0;) free_.push_back(static_cast<int>(b));
}

int PagedCache::allocate() {
  int b;
  if (!free_.empty()) {
    b = free_.back();
    free_.pop_back();
  } else if (!lru_.empty()) {
    b = lru_.front();
    lru_.pop_front();
    Block& old = blocks_[b];
    by_hash_.erase(old.hash);
    old.published = false;
    old.tokens.clear();
  } else {
    return -1;
  }
  blocks_[b].refs = 1;
  return b;
}

void PagedCache::attach(SequenceBlocks& seq, int block) {
  if (seq.cache.layers.empty()) seq.cache = KVCache::for_layers(layers_);
  for (int l = 0; l < layers_; ++l) {
    LayerCache& layer = seq.cache.layers[l];
    layer.page_shift = block_shift_;
    layer.pages.push_back(page(block, l));
  }
  seq.blocks.push_back(block);
}

int PagedCache::attach_prefix(SequenceBlocks& seq, const std::vector<int>& tokens, int max_blocks) {
  check(seq.blocks.empty(), "attach_prefix: the sequence already holds blocks");
  if (!prefix_caching_) return 0;
  const int full = std::min(max_blocks, static_cast<int>(tokens.size()) / block_tokens_);
  uint64_t parent = 0;
  for (int j = 0; j < full; ++j) {
    const int* t = tokens.data() + static_cast<size_t>(j) * block_tokens_;
    const uint64_t h = block_hash(parent, t, block_tokens_);
    auto it = by_hash_.find(h);
    if (it == by_hash_.end()) break;
    Block& b = blocks_[it->second];
    if (b.parent != parent || !std::equal(b.tokens.begin(), b.tokens.end(), t)) break;
    if (b.refs++ == 0) lru_.erase(b.lru_slot);
    attach(seq, it->second);
    seq.hashes.push_back(h);
    parent = h;
  }
  seq.cache.length = static_cast<int>(seq.blocks.size()) * block_tokens_;
  return static_cast<int>(seq.blocks.size());
}

bool PagedCache::reserve(SequenceBlocks& seq, int positions) {
  while (static_cast<int>(seq.blocks.size()) * block_tokens_ < positions) {
    int b = allocate();
    if (b < 0) return false;
    attach(seq, b);
  }
  return true;
}

void PagedCache::publish(SequenceBlocks& seq, const std::vector<int>& tokens, int computed) {
  if (!prefix_caching_) return;
  const int full = std::min(computed / block_tokens_, static_cast<int>(seq.blocks.size()));
  for (int j = static_cast<int>(seq.hashes.size()); j < full; ++j) {
    const int* t = tokens.data() + static_cast<size_t>(j) * block_tokens_;
    const uint64_t parent = j == 0 ? 0 : seq.hashes[j - 1];
    const uint64_t h = block_hash(parent, t, block_tokens_);
    seq.hashes.push_back(h);
    // Another sequence may have published the same tokens first; this copy stays private.
    if (by_hash_.count(h)) continue;
    Block& b = blocks_[seq.blocks[j]];
    b.published = true;
    b.hash = h;
    b.parent = parent;
    b.tokens.assign(t, t + block_tokens_);
    by_hash_[h] = seq.blocks[j];
  }
}

void PagedCache::release(SequenceBlocks& seq) {
  // Last block first: a chain's tail is evicted before its head, which the tail's hash needs.
  for (auto it = seq.blocks.rbegin(); it != seq.blocks.rend(); ++it) {
    const int id = *it;
    Block& b = blocks_[id];
    if (--b.refs > 0) continue;
    if (b.published) {
      lru_.push_back(id);
      b.lru_slot = std::prev(lru_.end());
    } else {
      free_.push_back(id);
    }
  }
  seq.blocks.clear();
  seq.hashes.clear();
  seq.cache = KVCache();
}

}  // namespace whale::serve
