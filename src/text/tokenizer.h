// Byte-level BPE tokenizer read from a Hugging Face tokenizer.json (+ tokenizer_config.json),
// encoding exactly as Hugging Face's tokenizers library does:
//   1. added tokens with normalized=false are cut out of the raw text,
//   2. each remaining piece is normalized (e.g. NFC) and the normalized=true added tokens are
//      cut out of it,
//   3. the pre-tokenizer splits the rest (regex Splits, then ByteLevel),
//   4. BPE merges each pre-token by rank, and the post-processor adds its special tokens.
// Input that is not valid UTF-8 is made valid first: each ill-formed subsequence becomes one
// U+FFFD (the maximal-subpart rule of Rust's from_utf8_lossy and Python's errors="replace").
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace whale::text {

struct AddedToken {
  int id = -1;
  std::string content;
  bool special = false;     // skipped by decode(..., skip_special_tokens=true)
  bool normalized = false;  // matched in the normalized text rather than the raw text
  bool lstrip = false;      // also swallows the whitespace on its left
  bool rstrip = false;      // ... and on its right
};

// Copies DIR/tokenizer.json and tokenizer_config.json (those present) into another model
// folder, atomically: every saved model carries its tokenizer.
void copy_tokenizer_files(const std::string& from_dir, const std::string& to_dir);

class Tokenizer {
 public:
  // Reads DIR/tokenizer.json and, if present, DIR/tokenizer_config.json (bos/eos tokens and
  // the chat template). Throws whale::Error naming the file and field at fault.
  static std::unique_ptr<Tokenizer> load(const std::string& dir);
  static std::unique_ptr<Tokenizer> from_json(const std::string& tokenizer_json,
                                              const std::string& tokenizer_config_json = "",
                                              const std::string& source_name = "tokenizer.json");
  ~Tokenizer();

  // Text → ids. add_special_tokens applies tokenizer.json's post-processor (for the
  // R1-distilled Qwen tokenizer: a leading <｜begin▁of▁sentence｜>), as the HF library does by
  // default. Safe to call from several threads (they take turns).
  std::vector<int> encode(std::string_view text, bool add_special_tokens = true) const;

  // The pre-tokens of `text` as encode sees them (raw bytes of each piece the BPE model would
  // merge), in order; added tokens in the text are skipped. Used by the BPE trainer. `visit`
  // runs under the encoding lock: it must not call back into this tokenizer.
  void pre_tokenize(std::string_view text,
                    const std::function<void(std::string_view)>& visit) const;

  // Ids → text, as HF's decode: the bytes of all tokens, then U+FFFD for any ill-formed
  // subsequence. Throws whale::Error for an id outside the vocabulary.
  std::string decode(std::span<const int> ids, bool skip_special_tokens = false) const;

  // The exact bytes token `id` stands for (possibly a fragment of a UTF-8 sequence).
  const std::string& token_bytes(int id) const;
  bool is_special(int id) const;
  // One past the largest id (model vocabulary and added tokens together).
  int vocab_size() const;
  // Id of an added token or vocabulary entry given its text (as written in tokenizer.json).
  std::optional<int> token_to_id(std::string_view token) const;

  // From tokenizer_config.json; -1 / empty when it is absent or does not say.
  int bos_id() const;
  int eos_id() const;
  const std::string& bos_token() const;
  const std::string& eos_token() const;
  bool add_bos_token() const;
  const std::string& chat_template() const;

  struct Impl;

 private:
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Turns a stream of ids into text without ever emitting part of a UTF-8 sequence: the bytes of
// a character split across tokens are held back until it is complete. Bytes that can no longer
// become valid are emitted as U+FFFD, so the concatenated output equals decode(all ids).
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tokenizer, bool skip_special_tokens = false)
      : tokenizer_(tokenizer), skip_special_tokens_(skip_special_tokens) {}
  // The text that token `id` completes (often empty or several characters).
  std::string push(int id);
  // Whatever is still held back (an incomplete sequence becomes U+FFFD).
  std::string finish();

 private:
  const Tokenizer& tokenizer_;
  bool skip_special_tokens_;
  std::string pending_;
};

}  // namespace whale::text
