// A compiled PCRE2 pattern (UTF + UCP, JIT) that behaves like the Oniguruma regexes Hugging
// Face's tokenizers library uses for its Split pre-tokenizer.
#pragma once
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace whale::text {

class Regex {
 public:
  // Throws whale::Error naming the pattern if it does not compile.
  explicit Regex(const std::string& pattern);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  struct Match {
    size_t begin, end;
  };
  // All non-overlapping matches in a valid UTF-8 subject, left to right (Perl semantics; an
  // empty match advances by one character). Not thread-safe: it reuses its match buffers.
  void find_all(std::string_view subject, std::vector<Match>& matches) const;

  const std::string& pattern() const { return pattern_; }

 private:
  struct Impl;
  std::string pattern_;
  std::unique_ptr<Impl> impl_;
};

// Rewrites a tokenizer.json pattern (written for Oniguruma) into PCRE2 syntax with the same
// meaning: \s and \S become Unicode's White_Space set (PCRE2's \s differs: it includes
// U+180E and not U+0085), and \p{L}, \p{M}, \p{N}, \p{P}, \p{S} also take the characters
// that Unicode versions newer than PCRE2's (14) added to them, such as the emoji U+1FA77 🩷
// (src/text/unicode_patch.inc). Exposed for tests.
std::string oniguruma_to_pcre2(const std::string& pattern);

}  // namespace whale::text
