#include "text/bpe_trainer.h"

#include <omp.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <queue>
#include <unordered_map>

#include "base/error.h"
#include "base/file.h"
#include "base/progress.h"
#include "text/unicode.h"

namespace whale::text {

using json = nlohmann::json;
using ordered_json = nlohmann::ordered_json;

const char* deepseek_v3_pre_tokenizer_json() {
  return R"json({"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"Regex": "\\p{N}{1,3}"}, "behavior": "Isolated", "invert": false}, {"type": "Split", "pattern": {"Regex": "[一-龥぀-ゟ゠-ヿ]+"}, "behavior": "Isolated", "invert": false}, {"type": "Split", "pattern": {"Regex": "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+"}, "behavior": "Isolated", "invert": false}, {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}]})json";
}

namespace {

std::string byte_level(std::string_view bytes) {
  std::string out;
  for (unsigned char b : bytes) append_utf8(out, byte_to_unicode()[b]);
  return out;
}

ordered_json added_token(int id, const char* content) {
  return ordered_json{{"id", id},        {"content", content}, {"single_word", false},
                      {"lstrip", false}, {"rstrip", false},    {"normalized", false},
                      {"special", true}};
}

// The tokenizer.json of the byte alphabet alone: the pre-tokenizer the trainer counts with.
BpeModel bytes_only_model() {
  BpeModel m;
  for (int b = 0; b < 256; ++b) m.tokens.push_back(std::string(1, static_cast<char>(b)));
  return m;
}

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};

uint64_t pair_key(int a, int b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

// Per pair of adjacent symbols: its count over the corpus (each word weighted by its
// frequency) and the words that may hold it (some may no longer: they are checked on use).
struct PairStats {
  int64_t count = 0;
  std::vector<uint32_t> words;
};

// An open-addressing hash map from pair_key to PairStats; keys are never removed (a pair
// that disappears keeps count 0).
class PairTable {
 public:
  PairTable() { rehash(1 << 16); }
  PairStats& operator[](uint64_t key) {
    size_t i = probe(key);
    if (keys_[i] == kEmpty) {
      if (2 * (stats_.size() + 1) > keys_.size()) {
        rehash(2 * keys_.size());
        i = probe(key);
      }
      keys_[i] = key;
      slots_[i] = static_cast<uint32_t>(stats_.size());
      stats_.emplace_back();
    }
    return stats_[slots_[i]];
  }
  PairStats* find(uint64_t key) {
    size_t i = probe(key);
    return keys_[i] == kEmpty ? nullptr : &stats_[slots_[i]];
  }
  template <typename F>
  void for_each(F f) const {
    for (size_t i = 0; i < keys_.size(); ++i)
      if (keys_[i] != kEmpty) f(keys_[i], stats_[slots_[i]]);
  }

 private:
  static constexpr uint64_t kEmpty = ~0ull;
  size_t probe(uint64_t key) const {
    size_t i = static_cast<size_t>((key * 0x9e3779b97f4a7c15ull) >> 20) & (keys_.size() - 1);
    while (keys_[i] != kEmpty && keys_[i] != key) i = (i + 1) & (keys_.size() - 1);
    return i;
  }
  void rehash(size_t size) {
    std::vector<uint64_t> old_keys = std::move(keys_);
    std::vector<uint32_t> old_slots = std::move(slots_);
    keys_.assign(size, kEmpty);
    slots_.assign(size, 0);
    for (size_t j = 0; j < old_keys.size(); ++j) {
      if (old_keys[j] == kEmpty) continue;
      size_t i = probe(old_keys[j]);
      keys_[i] = old_keys[j];
      slots_[i] = old_slots[j];
    }
  }
  std::vector<uint64_t> keys_;
  std::vector<uint32_t> slots_;
  std::vector<PairStats> stats_;
};

}  // namespace

using WordCounts = std::unordered_map<std::string, uint64_t, StringHash, std::equal_to<>>;

struct BpeTrainer::Counts {
  WordCounts words;
  std::vector<std::unique_ptr<Tokenizer>> pre_tokenizers;  // one per thread (each has a lock)
  std::vector<WordCounts> local;                           // per-thread counts of a batch
};

namespace {

void count_words(const Tokenizer& pre_tokenizer, std::string_view text, WordCounts& words) {
  pre_tokenizer.pre_tokenize(text, [&](std::string_view word) {
    auto it = words.find(word);
    if (it != words.end())
      ++it->second;
    else
      words.emplace(std::string(word), 1);
  });
}

// Whether a plain text may be cut just before text[i]: after a '\n' and before an ASCII byte
// that is not whitespace. Every Split regex of the pre-tokenizer ends a piece there (no pattern
// continues past a newline into a non-space, and none reaches back over a newline), so the
// pieces of the parts are exactly the pieces of the whole.
bool can_cut_before(std::string_view text, size_t i) {
  if (i == 0 || i >= text.size() || text[i - 1] != '\n') return false;
  unsigned char next = static_cast<unsigned char>(text[i]);
  return next < 0x80 && !std::isspace(next);
}

// The last cut point in (begin, end], or npos.
size_t last_cut(std::string_view text, size_t begin, size_t end) {
  if (text.empty()) return std::string::npos;
  for (size_t i = std::min(end, text.size() - 1); i > begin; --i)
    if (can_cut_before(text, i)) return i;
  return std::string::npos;
}

}  // namespace

BpeTrainer::BpeTrainer(bool progress) : counts_(std::make_unique<Counts>()), progress_(progress) {
  counts_->pre_tokenizers.push_back(Tokenizer::from_json(
      bpe_tokenizer_json(bytes_only_model()), bpe_tokenizer_config_json(), "bpe_trainer"));
}

BpeTrainer::~BpeTrainer() = default;

size_t BpeTrainer::distinct_words() const {
  return counts_->words.size();
}

void BpeTrainer::add_text(std::string_view text) {
  add_texts({text});
}

void BpeTrainer::add_texts(const std::vector<std::string_view>& texts) {
  for (std::string_view t : texts) bytes_ += t.size();
  Counts& c = *counts_;
  const int threads = static_cast<int>(
      std::min<size_t>(texts.size(), static_cast<size_t>(std::max(omp_get_max_threads(), 1))));
  if (threads <= 1) {
    for (std::string_view t : texts) count_words(*c.pre_tokenizers[0], t, c.words);
    return;
  }
  while (static_cast<int>(c.pre_tokenizers.size()) < threads)
    c.pre_tokenizers.push_back(Tokenizer::from_json(bpe_tokenizer_json(bytes_only_model()),
                                                    bpe_tokenizer_config_json(), "bpe_trainer"));
  c.local.resize(threads);
  const int64_t n = static_cast<int64_t>(texts.size());
#pragma omp parallel num_threads(threads)
  {
    const int id = omp_get_thread_num();
#pragma omp for schedule(dynamic, 1)
    for (int64_t i = 0; i < n; ++i) count_words(*c.pre_tokenizers[id], texts[i], c.local[id]);
  }
  for (WordCounts& local : c.local) {
    for (auto& [word, count] : local) {
      auto it = c.words.find(word);
      if (it != c.words.end())
        it->second += count;
      else
        c.words.emplace(word, count);
    }
    local.clear();
  }
}

void BpeTrainer::add_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  check(in.good(), path + ": cannot open");
  size_t total = std::filesystem::file_size(path);
  Progress progress(progress_ ? "counting " + std::filesystem::path(path).filename().string() : "",
                    total, "B");
  constexpr size_t kBatch = 4 << 20;  // bytes counted at a time, over all threads
  bool jsonl = path.size() >= 6 && path.substr(path.size() - 6) == ".jsonl";
  if (jsonl) {
    std::vector<std::string> docs;
    size_t batch_bytes = 0;
    auto flush = [&] {
      add_texts(std::vector<std::string_view>(docs.begin(), docs.end()));
      docs.clear();
      batch_bytes = 0;
    };
    std::string line;
    size_t line_number = 0;
    while (std::getline(in, line)) {
      ++line_number;
      progress.advance(line.size() + 1);
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      std::string where = path + ":" + std::to_string(line_number);
      json doc;
      try {
        doc = json::parse(line);
      } catch (const json::exception& e) {
        throw Error(where + ": not valid JSON: " + e.what());
      }
      check(doc.is_object() && doc.contains("text") && doc["text"].is_string(),
            where + ": expected an object with a string \"text\" field");
      docs.push_back(std::move(doc["text"].get_ref<std::string&>()));
      batch_bytes += docs.back().size();
      if (batch_bytes >= kBatch) flush();
    }
    check(!in.bad(), path + ": read error");
    flush();
    progress.finish();
    return;
  }
  // Plain text, one document, read in batches cut where the pre-tokenizer splits anyway; each
  // batch is cut again into one part per thread.
  std::string buffer;
  std::vector<char> chunk(kBatch);
  const size_t threads = static_cast<size_t>(std::max(omp_get_max_threads(), 1));
  auto count_parts = [&](std::string_view text) {
    std::vector<std::string_view> parts;
    size_t begin = 0;
    for (size_t k = 1; k < threads; ++k) {
      size_t cut = last_cut(text, begin, k * text.size() / threads);
      if (cut == std::string::npos) continue;
      parts.push_back(text.substr(begin, cut - begin));
      begin = cut;
    }
    parts.push_back(text.substr(begin));
    add_texts(parts);
  };
  for (;;) {
    in.read(chunk.data(), kBatch);
    size_t got = static_cast<size_t>(in.gcount());
    if (got == 0) break;
    buffer.append(chunk.data(), got);
    progress.advance(got);
    size_t cut = last_cut(buffer, 0, buffer.size() - 1);
    if (cut == std::string::npos) continue;
    count_parts(std::string_view(buffer).substr(0, cut));
    buffer.erase(0, cut);
  }
  check(!in.bad(), path + ": read error");
  if (!buffer.empty()) count_parts(buffer);
  progress.finish();
}

BpeModel BpeTrainer::train(const BpeTrainOptions& options) const {
  check(options.vocab_size >= kBpeFirstMergedId,
        "the vocabulary size must be at least " + std::to_string(kBpeFirstMergedId) +
            " (2 special tokens and the 256 bytes); got " + std::to_string(options.vocab_size));
  BpeModel model = bytes_only_model();
  // Token strings (raw bytes) by internal id (= output id − 2) and back.
  std::vector<std::string>& tokens = model.tokens;
  std::unordered_map<std::string, int, StringHash, std::equal_to<>> id_of;
  for (int b = 0; b < 256; ++b) id_of.emplace(tokens[b], b);

  // Words in a fixed order (sorted by spelling) so the result never depends on hash order.
  struct Word {
    std::vector<int> symbols;
    int64_t count;
  };
  std::vector<const std::pair<const std::string, uint64_t>*> sorted;
  sorted.reserve(counts_->words.size());
  for (const auto& entry : counts_->words) sorted.push_back(&entry);
  std::sort(sorted.begin(), sorted.end(), [](auto* a, auto* b) { return a->first < b->first; });
  std::vector<Word> words(sorted.size());
  for (size_t w = 0; w < sorted.size(); ++w) {
    for (unsigned char c : sorted[w]->first) words[w].symbols.push_back(c);
    words[w].count = static_cast<int64_t>(sorted[w]->second);
  }
  sorted.clear();

  PairTable pairs;
  for (size_t w = 0; w < words.size(); ++w) {
    const auto& s = words[w].symbols;
    for (size_t i = 0; i + 1 < s.size(); ++i) {
      uint64_t key = pair_key(s[i], s[i + 1]);
      PairStats& p = pairs[key];
      p.count += words[w].count;
      if (p.words.empty() || p.words.back() != w) p.words.push_back(static_cast<uint32_t>(w));
    }
  }

  // Max-heap on count, then the smallest (left, right) spelling.
  struct Entry {
    int64_t count;
    int left, right;
  };
  auto less_urgent = [&tokens](const Entry& a, const Entry& b) {
    if (a.count != b.count) return a.count < b.count;
    const std::string &al = tokens[a.left], &bl = tokens[b.left];
    if (al != bl) return al > bl;  // std::string compares bytes as unsigned char
    return tokens[a.right] > tokens[b.right];
  };
  std::priority_queue<Entry, std::vector<Entry>, decltype(less_urgent)> heap(less_urgent);
  pairs.for_each([&heap](uint64_t key, const PairStats& p) {
    heap.push({p.count, static_cast<int>(key >> 32), static_cast<int>(key & 0xffffffffu)});
  });

  const size_t target_tokens = static_cast<size_t>(options.vocab_size - kBpeSpecialTokens);
  Progress progress(options.progress ? "merging" : "", target_tokens - tokens.size(), " tokens");
  std::vector<uint32_t> visited(words.size(), UINT32_MAX);
  std::vector<uint64_t> touched;
  std::vector<int> merged_symbols;
  const int64_t min_frequency = std::max<int64_t>(options.min_frequency, 1);
  uint32_t step = 0;
  while (tokens.size() < target_tokens && !heap.empty()) {
    Entry top = heap.top();
    heap.pop();
    uint64_t key = pair_key(top.left, top.right);
    PairStats* found = pairs.find(key);
    int64_t current = found ? found->count : 0;
    if (current != top.count) {
      // Stale. A pair whose count rose was pushed again when it rose; one whose count fell
      // is pushed again now, with what it has left.
      if (current > 0 && current < top.count) heap.push({current, top.left, top.right});
      continue;
    }
    if (current < min_frequency) break;
    // The new token (an existing spelling keeps its id: two merge paths can reach it).
    std::string spelling = tokens[top.left] + tokens[top.right];
    int new_id;
    if (auto it = id_of.find(spelling); it != id_of.end()) {
      new_id = it->second;
    } else {
      new_id = static_cast<int>(tokens.size());
      tokens.push_back(spelling);
      id_of.emplace(std::move(spelling), new_id);
      progress.advance(1);
    }
    model.merges.push_back({top.left, top.right});
    // Revisit each word that holds the pair and merge it there, moving the counts of the
    // neighbouring pairs: (x, left) → (x, new) and (right, y) → (new, y).
    std::vector<uint32_t> list = std::move(found->words);
    found->words = {};
    touched.clear();
    for (uint32_t w : list) {
      if (visited[w] == step) continue;
      visited[w] = step;
      auto& s = words[w].symbols;
      const int64_t count = words[w].count;
      merged_symbols.clear();
      const size_t n = s.size();
      bool changed = false;
      for (size_t i = 0; i < n;) {
        if (i + 1 < n && s[i] == top.left && s[i + 1] == top.right) {
          if (!merged_symbols.empty()) {
            int x = merged_symbols.back();
            pairs[pair_key(x, top.left)].count -= count;
            uint64_t k = pair_key(x, new_id);
            PairStats& p = pairs[k];
            p.count += count;
            touched.push_back(k);
            if (p.words.empty() || p.words.back() != w) p.words.push_back(w);
          }
          if (i + 2 < n) {
            int y = s[i + 2];
            pairs[pair_key(top.right, y)].count -= count;
            uint64_t k = pair_key(new_id, y);
            PairStats& p = pairs[k];
            p.count += count;
            touched.push_back(k);
            if (p.words.empty() || p.words.back() != w) p.words.push_back(w);
          }
          merged_symbols.push_back(new_id);
          i += 2;
          changed = true;
        } else {
          merged_symbols.push_back(s[i]);
          ++i;
        }
      }
      if (changed) s.swap(merged_symbols);
    }
    pairs[key].count = 0;  // overlapping runs ("a a a") may have moved it below zero
    std::sort(touched.begin(), touched.end());
    touched.erase(std::unique(touched.begin(), touched.end()), touched.end());
    for (uint64_t k : touched) {
      int64_t c = pairs[k].count;
      if (c > 0) heap.push({c, static_cast<int>(k >> 32), static_cast<int>(k & 0xffffffffu)});
    }
    ++step;
  }
  progress.set_total(tokens.size() - 256);
  progress.finish();
  return model;
}

std::string bpe_tokenizer_json(const BpeModel& model) {
  // The big vocab and merges are written by hand (one entry per line, as HF does); the rest
  // through the JSON library, into which they are spliced.
  ordered_json root = {
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens", {added_token(0, kBpeBosToken), added_token(1, kBpeEosToken)}},
      {"normalizer", {{"type", "Sequence"}, {"normalizers", ordered_json::array()}}},
      {"pre_tokenizer", ordered_json::parse(deepseek_v3_pre_tokenizer_json())},
      {"post_processor",
       {{"type", "ByteLevel"},
        {"add_prefix_space", true},
        {"trim_offsets", false},
        {"use_regex", true}}},
      {"decoder",
       {{"type", "ByteLevel"},
        {"add_prefix_space", true},
        {"trim_offsets", true},
        {"use_regex", true}}},
      {"model",
       {{"type", "BPE"},
        {"dropout", nullptr},
        {"unk_token", nullptr},
        {"continuing_subword_prefix", nullptr},
        {"end_of_word_suffix", nullptr},
        {"fuse_unk", false},
        {"byte_fallback", false},
        {"vocab", "@VOCAB@"},
        {"merges", "@MERGES@"}}}};
  std::string text = root.dump(2);
  std::vector<std::string> spelled(model.tokens.size());
  for (size_t i = 0; i < model.tokens.size(); ++i) spelled[i] = byte_level(model.tokens[i]);
  std::string vocab = "{\n";
  auto entry = [&](const std::string& token, int id, bool last) {
    vocab += "      " + json(token).dump() + ": " + std::to_string(id) + (last ? "\n" : ",\n");
  };
  entry(kBpeBosToken, 0, false);
  entry(kBpeEosToken, 1, false);
  for (size_t i = 0; i < spelled.size(); ++i)
    entry(spelled[i], static_cast<int>(i) + kBpeSpecialTokens, i + 1 == spelled.size());
  vocab += "    }";
  std::string merges = model.merges.empty() ? "[]" : "[\n";
  for (size_t i = 0; i < model.merges.size(); ++i) {
    const auto& [a, b] = model.merges[i];
    merges += "      " + json(spelled[a] + " " + spelled[b]).dump() +
              (i + 1 == model.merges.size() ? "\n    ]" : ",\n");
  }
  auto splice = [&text](const std::string& placeholder, const std::string& with) {
    size_t at = text.find("\"" + placeholder + "\"");
    check(at != std::string::npos, "bpe_tokenizer_json: no " + placeholder);
    text.replace(at, placeholder.size() + 2, with);
  };
  splice("@VOCAB@", vocab);
  splice("@MERGES@", merges);
  return text + "\n";
}

std::string bpe_tokenizer_config_json() {
  ordered_json config = {{"add_bos_token", true},
                         {"add_eos_token", false},
                         {"bos_token", kBpeBosToken},
                         {"eos_token", kBpeEosToken},
                         {"pad_token", kBpeEosToken},
                         {"clean_up_tokenization_spaces", false},
                         {"legacy", true},
                         {"model_max_length", 16384},
                         {"unk_token", nullptr},
                         {"tokenizer_class", "LlamaTokenizerFast"}};
  return config.dump(2) + "\n";
}

void save_bpe_tokenizer(const BpeModel& model, const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  check(!ec, dir + ": cannot create the folder: " + ec.message());
  write_file_atomic(dir + "/tokenizer.json", bpe_tokenizer_json(model));
  write_file_atomic(dir + "/tokenizer_config.json", bpe_tokenizer_config_json());
}

}  // namespace whale::text
