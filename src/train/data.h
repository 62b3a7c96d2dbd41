// Training data: token shards on disk, the built-in synthetic corpus, and batch sampling.
// A data folder holds train.bin and val.bin (little-endian uint32 token ids; each document is
// BOS, its tokens, EOS) and data.json (vocabulary size, special ids, counts, tokenizer).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace whale {

namespace text {
class Tokenizer;
}

struct TokenData {
  int vocab_size = 0, bos_token_id = -1, eos_token_id = -1;
  std::vector<uint32_t> train, val;
  static TokenData load(const std::string& dir);
};

struct PrepareOptions {
  double val_fraction = 0.05;  // documents go to val.bin with this probability (by hash)
  bool progress = true;
};

// Tokenizes text files into a data folder. A .jsonl file holds one {"text": ...} document per
// line; any other file is plain text whose documents are separated by blank lines.
void prepare_data(const text::Tokenizer& tokenizer, const std::string& tokenizer_dir,
                  const std::vector<std::string>& inputs, const std::string& out_dir,
                  const PrepareOptions& options);

// The built-in synthetic corpus: arithmetic facts, word problems and small stories, documents
// separated by blank lines, about `bytes` long, the same for the same seed.
std::string synthetic_corpus(size_t bytes, uint64_t seed);

// A Hugging Face tokenizer.json for byte-level tokens with no merges: id b is byte b
// (0–255), then <｜begin▁of▁sentence｜> = 256 and <｜end▁of▁sentence｜> = 257. Loads in whale
// and in the Hugging Face library; pairs with tokenizer_config.json below.
std::string byte_level_tokenizer_json();
std::string byte_level_tokenizer_config_json();
constexpr int kByteVocabSize = 258;

// B windows of T tokens from `tokens`, at positions drawn from (seed, step): the same batch
// for the same step on every run, so a resumed run sees exactly the data it would have seen.
void sample_batch(const std::vector<uint32_t>& tokens, int B, int T, uint64_t seed, uint64_t step,
                  int* out);

// Entropy (nats per token) of the unigram distribution of `tokens`: the loss of a model that
// knows only token frequencies.
double unigram_entropy(const std::vector<uint32_t>& tokens);

}  // namespace whale
