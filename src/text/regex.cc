#define PCRE2_CODE_UNIT_WIDTH 8
#include "text/regex.h"

#include <pcre2.h>

#include "base/error.h"

namespace whale::text {

namespace {

#include "text/unicode_patch.inc"

// Unicode's White_Space property, which Oniguruma's \s matches.
constexpr const char* kWhiteSpaceSet =
    "\\x{9}-\\x{D}\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}"
    "\\x{205F}\\x{3000}";

std::string pcre2_message(int code) {
  PCRE2_UCHAR buffer[256];
  pcre2_get_error_message(code, buffer, sizeof buffer);
  return reinterpret_cast<const char*>(buffer);
}

}  // namespace

std::string oniguruma_to_pcre2(const std::string& pattern) {
  std::string out;
  bool in_class = false;
  for (size_t i = 0; i < pattern.size(); ++i) {
    char c = pattern[i];
    if (c == '\\' && i + 1 < pattern.size()) {
      char next = pattern[++i];
      // \p{L} and friends: PCRE2's Unicode 14 plus the characters newer Unicode versions
      // (which Oniguruma knows) added to the category.
      size_t close = pattern.find('}', i);
      std::string property = next == 'p' && i + 1 < pattern.size() && pattern[i + 1] == '{' &&
                                     close != std::string::npos
                                 ? pattern.substr(i + 2, close - i - 2)
                                 : "";
      const char* newer = property == "L"   ? kNewerL
                          : property == "M" ? kNewerM
                          : property == "N" ? kNewerN
                          : property == "P" ? kNewerP
                          : property == "S" ? kNewerS
                                            : nullptr;
      if (newer) {
        std::string expanded = "\\p{" + property + "}" + newer;
        out += in_class ? expanded : "[" + expanded + "]";
        i = close;
        continue;
      }
      if (next == 's' || next == 'S') {
        bool negated = next == 'S';
        if (in_class) {
          // A negated set cannot be nested in a class without PCRE2's extended syntax; no
          // tokenizer uses [\S...], so refuse it rather than guess.
          check(!negated, "regex '" + pattern + "': \\S inside a character class is unsupported");
          out += kWhiteSpaceSet;
        } else {
          out += negated ? "[^" : "[";
          out += kWhiteSpaceSet;
          out += "]";
        }
      } else {
        out += c;
        out += next;
      }
      continue;
    }
    if (!in_class && c == '[') {
      in_class = true;
      out += c;
      // A ']' right after '[' or '[^' is a literal, not the end of the class.
      if (i + 1 < pattern.size() && pattern[i + 1] == '^') out += pattern[++i];
      if (i + 1 < pattern.size() && pattern[i + 1] == ']') out += pattern[++i];
      continue;
    }
    if (in_class && c == ']') in_class = false;
    out += c;
  }
  return out;
}

struct Regex::Impl {
  pcre2_code* code = nullptr;
  pcre2_match_data* match_data = nullptr;
  pcre2_match_context* match_context = nullptr;
  pcre2_jit_stack* jit_stack = nullptr;
  bool jit = false;
};

Regex::Regex(const std::string& pattern) : pattern_(pattern), impl_(std::make_unique<Impl>()) {
  std::string translated = oniguruma_to_pcre2(pattern);
  int error_code = 0;
  PCRE2_SIZE error_offset = 0;
  impl_->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(translated.data()), translated.size(),
                              PCRE2_UTF | PCRE2_UCP, &error_code, &error_offset, nullptr);
  check(impl_->code != nullptr, "regex '" + pattern + "' does not compile at offset " +
                                    std::to_string(error_offset) + ": " +
                                    pcre2_message(error_code));
  impl_->jit = pcre2_jit_compile(impl_->code, PCRE2_JIT_COMPLETE) == 0;
  impl_->match_data = pcre2_match_data_create_from_pattern(impl_->code, nullptr);
  if (impl_->jit) {
    // Long runs of whitespace backtrack deeply in \s+(?!\S); give the JIT room for them.
    impl_->jit_stack = pcre2_jit_stack_create(64 * 1024, 8 * 1024 * 1024, nullptr);
    impl_->match_context = pcre2_match_context_create(nullptr);
    pcre2_jit_stack_assign(impl_->match_context, nullptr, impl_->jit_stack);
  }
}

Regex::~Regex() {
  pcre2_match_context_free(impl_->match_context);
  pcre2_jit_stack_free(impl_->jit_stack);
  pcre2_match_data_free(impl_->match_data);
  pcre2_code_free(impl_->code);
}

void Regex::find_all(std::string_view subject, std::vector<Match>& matches) const {
  matches.clear();
  auto* data = reinterpret_cast<PCRE2_SPTR>(subject.data());
  size_t offset = 0;
  while (offset <= subject.size()) {
    int rc = impl_->jit ? pcre2_jit_match(impl_->code, data, subject.size(), offset, 0,
                                          impl_->match_data, impl_->match_context)
                        : pcre2_match(impl_->code, data, subject.size(), offset, PCRE2_NO_UTF_CHECK,
                                      impl_->match_data, nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    check(rc >= 0, "regex '" + pattern_ + "' failed: " + pcre2_message(rc));
    PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(impl_->match_data);
    size_t begin = ovector[0], end = ovector[1];
    if (end > begin) {
      matches.push_back({begin, end});
      offset = end;
    } else {
      // Empty match: skip it and move on by one character.
      if (begin >= subject.size()) break;
      offset = begin + 1;
      while (offset < subject.size() &&
             (static_cast<unsigned char>(subject[offset]) & 0xC0) == 0x80)
        ++offset;
    }
  }
}

}  // namespace whale::text
