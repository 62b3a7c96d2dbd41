// The tokenizer's lookup structures: flat open-addressing tables (no allocation per entry, a
// lookup touches one or two cache lines) for the merges, the vocabulary and the word cache, and
// a byte trie for added tokens. Internal to src/text.
#pragma once
#include <array>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace whale::text {

// Open-addressing hash map from a pair of adjacent token ids to the merge that joins them.
class MergeTable {
 public:
  struct Merge {
    uint32_t rank;
    int32_t result;
  };

  void reserve(size_t count) {
    size_t capacity = 16;
    while (capacity < 2 * count) capacity *= 2;
    mask_ = capacity - 1;
    keys_.assign(capacity, kEmpty);
    merges_.assign(capacity, Merge{0, -1});
  }
  // A later merge of the same pair replaces the earlier one, as in HF's HashMap collect.
  void insert(int32_t left, int32_t right, Merge merge) {
    uint64_t key = pack(left, right);
    size_t slot = hash(key);
    while (keys_[slot] != kEmpty && keys_[slot] != key) slot = (slot + 1) & mask_;
    keys_[slot] = key;
    merges_[slot] = merge;
  }
  const Merge* find(int32_t left, int32_t right) const {
    uint64_t key = pack(left, right);
    for (size_t slot = hash(key);; slot = (slot + 1) & mask_) {
      if (keys_[slot] == key) return &merges_[slot];
      if (keys_[slot] == kEmpty) return nullptr;
    }
  }

 private:
  static constexpr uint64_t kEmpty = ~uint64_t{0};
  static uint64_t pack(int32_t left, int32_t right) {
    return (uint64_t(uint32_t(left)) << 32) | uint32_t(right);
  }
  size_t hash(uint64_t key) const { return ((key * 0x9E3779B97F4A7C15ull) >> 20) & mask_; }
  size_t mask_ = 0;
  std::vector<uint64_t> keys_;
  std::vector<Merge> merges_;
};

// String → id with open addressing over flat arrays: the vocabulary (~150k entries) is built
// and probed hundreds of thousands of times while loading, where std::unordered_map's node
// allocations and pointer chasing dominate.
class StringIdMap {
 public:
  void reserve(size_t count) {
    size_t slots = 16;
    while (slots < 2 * count) slots *= 2;
    slots_.assign(slots, Slot{});
    keys_.reserve(count * 8);
  }
  // Adds or replaces (a repeated JSON key keeps its last value, as nlohmann does).
  void insert_or_assign(std::string_view key, int id) {
    if (2 * (size_ + 1) > slots_.size()) grow();
    Slot& slot = slots_[probe(key, hash(key))];
    if (slot.id < 0) {
      slot = {hash(key), static_cast<uint32_t>(keys_.size()), static_cast<uint32_t>(key.size()),
              id};
      keys_.append(key);
      ++size_;
    } else {
      slot.id = id;
    }
  }
  // The id of `key`, or -1.
  int find(std::string_view key) const {
    if (slots_.empty()) return -1;
    return slots_[probe(key, hash(key))].id;
  }
  size_t size() const { return size_; }
  template <typename F>
  void for_each(F&& visit) const {
    for (const Slot& s : slots_)
      if (s.id >= 0) visit(std::string_view(keys_).substr(s.key_offset, s.key_length), s.id);
  }

 private:
  struct Slot {
    uint64_t hash = 0;
    uint32_t key_offset = 0, key_length = 0;
    int id = -1;  // -1: empty
  };
  static uint64_t hash(std::string_view key) { return std::hash<std::string_view>{}(key); }
  // The slot holding `key`, or the empty slot where it would go.
  size_t probe(std::string_view key, uint64_t h) const {
    size_t mask = slots_.size() - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
      const Slot& s = slots_[i];
      if (s.id < 0) return i;
      if (s.hash == h && s.key_length == key.size() &&
          std::memcmp(keys_.data() + s.key_offset, key.data(), key.size()) == 0)
        return i;
    }
  }
  void grow() {
    std::vector<Slot> old = std::move(slots_);
    slots_.assign(std::max<size_t>(16, old.size() * 2), Slot{});
    size_t mask = slots_.size() - 1;
    for (const Slot& s : old) {
      if (s.id < 0) continue;
      size_t i = s.hash & mask;
      while (slots_[i].id >= 0) i = (i + 1) & mask;
      slots_[i] = s;
    }
  }
  std::vector<Slot> slots_;
  std::string keys_;
  size_t size_ = 0;
};

// Pre-token bytes → ids, so a word seen before costs one hash lookup instead of a BPE run.
// Open addressing over flat arrays: no allocation per entry, and a probe touches one slot.
class WordCache {
 public:
  WordCache() : slots_(kSlots) {}

  // The cached ids of `word`, or nullptr (count is set when found).
  const int32_t* find(std::string_view word, uint64_t hash, size_t& count) const {
    for (size_t i = hash & (kSlots - 1);; i = (i + 1) & (kSlots - 1)) {
      const Slot& s = slots_[i];
      if (s.key_length == 0) return nullptr;
      if (s.hash == hash && s.key_length == word.size() &&
          std::memcmp(keys_.data() + s.key_offset, word.data(), word.size()) == 0) {
        count = s.id_count;
        return ids_.data() + s.ids_offset;
      }
    }
  }
  // Stops taking entries when full (like HF's cache, it is never evicted).
  void insert(std::string_view word, uint64_t hash, const int* ids, size_t count) {
    if (size_ >= kCapacity || word.empty() || count > UINT16_MAX) return;
    size_t i = hash & (kSlots - 1);
    while (slots_[i].key_length != 0) i = (i + 1) & (kSlots - 1);
    slots_[i] = {hash, static_cast<uint32_t>(keys_.size()), static_cast<uint16_t>(word.size()),
                 static_cast<uint16_t>(count), static_cast<uint32_t>(ids_.size())};
    keys_.append(word);
    ids_.insert(ids_.end(), ids, ids + count);
    ++size_;
  }

 private:
  static constexpr size_t kCapacity = 1 << 16;
  static constexpr size_t kSlots = kCapacity * 2;  // at most half full: short probe runs
  struct Slot {
    uint64_t hash = 0;
    uint32_t key_offset = 0;
    uint16_t key_length = 0;  // 0: empty slot (words of one byte are never cached)
    uint16_t id_count = 0;
    uint32_t ids_offset = 0;
  };
  std::vector<Slot> slots_;
  std::string keys_;
  std::vector<int32_t> ids_;
  size_t size_ = 0;
};

// Finds added tokens in text: leftmost match first, the longest one at that position (the
// aho-corasick LeftmostLongest rule HF uses).
class AddedTokenTrie {
 public:
  void insert(std::string_view content, int token_index) {
    if (content.empty()) return;
    int node = 0;
    for (unsigned char b : content) {
      int child = find_child(node, b);
      if (child < 0) {
        child = static_cast<int>(nodes_.size());
        nodes_[node].children.push_back({b, child});
        nodes_.emplace_back();
      }
      node = child;
    }
    nodes_[node].token_index = token_index;
    starts_token_[static_cast<unsigned char>(content[0])] = true;
  }
  bool empty() const { return nodes_.size() == 1; }
  bool may_start_at(unsigned char b) const { return starts_token_[b]; }
  // The longest token starting at text[i]: {token index, length}, or {-1, 0}.
  std::pair<int, size_t> longest_at(std::string_view text, size_t i) const {
    std::pair<int, size_t> best{-1, 0};
    int node = 0;
    for (size_t j = i; j < text.size(); ++j) {
      node = find_child(node, static_cast<unsigned char>(text[j]));
      if (node < 0) break;
      if (nodes_[node].token_index >= 0) best = {nodes_[node].token_index, j + 1 - i};
    }
    return best;
  }

 private:
  struct Node {
    std::vector<std::pair<unsigned char, int>> children;
    int token_index = -1;
  };
  int find_child(int node, unsigned char b) const {
    for (const auto& [byte, child] : nodes_[node].children)
      if (byte == b) return child;
    return -1;
  }
  std::vector<Node> nodes_{1};
  std::array<bool, 256> starts_token_{};
};

}  // namespace whale::text
