// The server's latent KV cache: one pool of fixed-size blocks (block_tokens positions of every
// layer each) allocated within a memory budget and shared by all sequences, so memory is taken
// a block at a time as a sequence grows rather than reserved for its longest possible length.
//
// Prefix caching on top: once a block is full its contents are a function of the tokens up to
// its end, so it is published under a chained hash (the previous block's hash and its own
// tokens). A new sequence whose prompt starts with the same tokens attaches those blocks
// (reference counts) instead of computing them. A block nobody references stays cached until
// its memory is needed: the least recently released one is evicted first.
#pragma once
#include <cstdint>
#include <list>
#include <memory>
#include <unordered_map>
#include <vector>

#include "model/config.h"
#include "model/kv_cache.h"

namespace whale::serve {

// One sequence's blocks, and the KVCache whose layers point into them.
struct SequenceBlocks {
  std::vector<int> blocks;
  std::vector<uint64_t> hashes;  // chained hash of each published (full) block
  KVCache cache;
};

class PagedCache {
 public:
  // block_tokens must be a power of two. prefix_caching false: blocks are never shared.
  PagedCache(const ModelConfig& config, size_t budget_bytes, int block_tokens, bool prefix_caching);
  PagedCache(const PagedCache&) = delete;
  PagedCache& operator=(const PagedCache&) = delete;

  int block_tokens() const { return block_tokens_; }
  int total_blocks() const { return static_cast<int>(blocks_.size()); }
  // Blocks that can be handed out now: never used, or cached but referenced by nobody.
  int available_blocks() const { return static_cast<int>(free_.size() + lru_.size()); }
  // Blocks referenced by at least one sequence.
  int used_blocks() const { return total_blocks() - available_blocks(); }
  int cached_blocks() const { return static_cast<int>(by_hash_.size()); }
  size_t block_bytes() const { return block_floats_ * sizeof(float); }

  // Attaches the longest run of published blocks that matches the start of tokens (at most
  // max_blocks of them) to an empty `seq`; returns how many. Their positions need no compute.
  int attach_prefix(SequenceBlocks& seq, const std::vector<int>& tokens, int max_blocks);
  // Makes seq hold blocks for positions [0, positions). False when the pool is exhausted;
  // the blocks it could get stay attached.
  bool reserve(SequenceBlocks& seq, int positions);
  // Publishes seq's blocks that are full among positions [0, computed) of `tokens`.
  void publish(SequenceBlocks& seq, const std::vector<int>& tokens, int computed);
  // Drops seq's references (its blocks become free or evictable) and empties its cache.
  void release(SequenceBlocks& seq);

 private:
  struct Block {
    int refs = 0;
    bool published = false;
    uint64_t hash = 0, parent = 0;
    std::vector<int> tokens;            // of a published block: checked on every match
    std::list<int>::iterator lru_slot;  // while published and unreferenced
  };
  int allocate();
  void attach(SequenceBlocks& seq, int block);
  float* page(int block, int layer) {
    return arena_.get() + static_cast<size_t>(block) * block_floats_ +
           static_cast<size_t>(layer) * block_tokens_ * width_;
  }

  int layers_, width_, block_tokens_, block_shift_;
  bool prefix_caching_;
  size_t block_floats_;
  std::unique_ptr<float[]> arena_;
  std::vector<Block> blocks_;
  std::vector<int> free_;  // never published, unreferenced
  std::list<int> lru_;     // published, unreferenced; least recently released first
  std::unordered_map<uint64_t, int> by_hash_;
};

}  // namespace whale::serve
