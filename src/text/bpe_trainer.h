// Byte-level BPE training with DeepSeek-V3's pre-tokenizer (its three Split regexes, then
// ByteLevel), writing a tokenizer.json + tokenizer_config.json that whale and Hugging Face's
// tokenizers library load and encode identically.
//
// The vocabulary: id 0 <｜begin▁of▁sentence｜>, id 1 <｜end▁of▁sentence｜> (special added
// tokens, also listed in the model's vocab as DeepSeek's files do), ids 2–257 the 256 byte-level
// symbols in byte order (always all of them, so every input encodes), then one id per new token
// in the order the merges created them.
//
// Training is the classic algorithm: count the pre-tokens (words) of the corpus, then
// repeatedly merge the adjacent pair of symbols that occurs most often (weighted by word
// frequency) into a new symbol. Ties are broken deterministically by the pair's spelling: the
// pair whose left token's raw bytes are lexicographically smallest (as unsigned bytes), then
// the smallest right token. Pair counts are updated incrementally (only the words containing
// the merged pair are revisited) and the best pair comes from a lazily-updated priority queue,
// so a merge costs time in proportion to the words it touches, not the corpus.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "text/tokenizer.h"

namespace whale::text {

inline constexpr const char* kBpeBosToken = "<｜begin▁of▁sentence｜>";
inline constexpr const char* kBpeEosToken = "<｜end▁of▁sentence｜>";
inline constexpr int kBpeSpecialTokens = 2;
inline constexpr int kBpeFirstMergedId = kBpeSpecialTokens + 256;

// DeepSeek-V3's tokenizer.json "pre_tokenizer" node, verbatim.
const char* deepseek_v3_pre_tokenizer_json();

struct BpeTrainOptions {
  int vocab_size = 32000;     // all ids: the 2 special tokens, the 256 bytes and the merged tokens
  int64_t min_frequency = 2;  // a pair seen fewer times than this is never merged
  bool progress = true;       // progress bars on stderr
};

// A learned model: the raw bytes of every non-special token (index i is id i + 2) and the
// merges in rank order, as pairs of ids.
struct BpeModel {
  std::vector<std::string> tokens;
  std::vector<std::pair<int, int>> merges;
  int vocab_size() const { return kBpeSpecialTokens + static_cast<int>(tokens.size()); }
};

class BpeTrainer {
 public:
  // progress: a bar on stderr while add_file reads (train has its own switch).
  explicit BpeTrainer(bool progress = true);
  ~BpeTrainer();

  // Counts the pre-tokens of one document. Added tokens (<｜begin▁of▁sentence｜>, ...) in the
  // text are left out, as encode would emit them whole.
  void add_text(std::string_view text);
  // Several documents, counted in parallel (OpenMP threads).
  void add_texts(const std::vector<std::string_view>& texts);
  // A file: .jsonl is one JSON object per line whose "text" field is a document; anything
  // else is plain text, read in blocks that are cut only where the pre-tokenizer would split
  // anyway. Throws whale::Error naming the file and line at fault.
  void add_file(const std::string& path);
  // Bytes of text counted so far.
  uint64_t bytes_seen() const { return bytes_; }
  // Distinct pre-tokens counted so far.
  size_t distinct_words() const;

  BpeModel train(const BpeTrainOptions& options) const;

 private:
  struct Counts;
  std::unique_ptr<Counts> counts_;
  uint64_t bytes_ = 0;
  bool progress_ = true;
};

// The files for a learned model. tokenizer_json is deterministic: the same model gives the
// same bytes.
std::string bpe_tokenizer_json(const BpeModel& model);
std::string bpe_tokenizer_config_json();
// Writes DIR/tokenizer.json and DIR/tokenizer_config.json (atomically), creating DIR.
void save_bpe_tokenizer(const BpeModel& model, const std::string& dir);

}  // namespace whale::text
