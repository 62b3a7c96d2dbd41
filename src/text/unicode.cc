#include "text/unicode.h"

#include <algorithm>
#include <unordered_map>
#include <vector>

namespace whale::text {

namespace {

struct CombiningClassEntry {
  char32_t code_point;
  uint8_t combining_class;
};
struct DecompositionEntry {
  char32_t code_point;
  uint32_t offset;
  uint32_t length;
};
struct CompositionEntry {
  char32_t first, second, composite;
};
struct CodePointRange {
  char32_t first, last;
};

#include "text/unicode_tables.inc"

// Hangul syllables decompose and compose by formula (Unicode ch. 3.12).
constexpr char32_t kHangulBase = 0xAC00, kLeadBase = 0x1100, kVowelBase = 0x1161,
                   kTrailBase = 0x11A7;
constexpr int kLeadCount = 19, kVowelCount = 21, kTrailCount = 28;
constexpr int kSyllableCount = kLeadCount * kVowelCount * kTrailCount;

bool is_continuation(unsigned char b) {
  return (b & 0xC0) == 0x80;
}

// Valid second-byte range for a lead byte (the first continuation byte is restricted for E0,
// ED, F0 and F4 to rule out overlong forms, surrogates and values above U+10FFFF).
void second_byte_range(unsigned char lead, unsigned char& low, unsigned char& high) {
  low = 0x80;
  high = 0xBF;
  if (lead == 0xE0) low = 0xA0;
  if (lead == 0xED) high = 0x9F;
  if (lead == 0xF0) low = 0x90;
  if (lead == 0xF4) high = 0x8F;
}

size_t expected_length(unsigned char lead) {
  if (lead < 0x80) return 1;
  if (lead >= 0xC2 && lead <= 0xDF) return 2;
  if (lead >= 0xE0 && lead <= 0xEF) return 3;
  if (lead >= 0xF0 && lead <= 0xF4) return 4;
  return 0;
}

// How many bytes at text[i] form a prefix of a valid sequence (at least 1 for a valid lead).
size_t valid_prefix_length(std::string_view text, size_t i, size_t& needed) {
  auto lead = static_cast<unsigned char>(text[i]);
  needed = expected_length(lead);
  if (needed <= 1) return needed;
  unsigned char low, high;
  second_byte_range(lead, low, high);
  size_t n = 1;
  while (n < needed && i + n < text.size()) {
    auto b = static_cast<unsigned char>(text[i + n]);
    bool ok = n == 1 ? (b >= low && b <= high) : is_continuation(b);
    if (!ok) break;
    ++n;
  }
  return n;
}

const std::unordered_map<char32_t, uint8_t>& combining_class_map() {
  static const auto* map = [] {
    auto* m = new std::unordered_map<char32_t, uint8_t>;
    for (const auto& e : kCombiningClasses) (*m)[e.code_point] = e.combining_class;
    return m;
  }();
  return *map;
}

uint8_t combining_class(char32_t c) {
  if (c < 0x300) return 0;
  const auto& m = combining_class_map();
  auto it = m.find(c);
  return it == m.end() ? 0 : it->second;
}

const std::unordered_map<char32_t, const DecompositionEntry*>& decomposition_map() {
  static const auto* map = [] {
    auto* m = new std::unordered_map<char32_t, const DecompositionEntry*>;
    for (const auto& e : kDecompositions) (*m)[e.code_point] = &e;
    return m;
  }();
  return *map;
}

uint64_t pair_key(char32_t a, char32_t b) {
  return (uint64_t(a) << 32) | b;
}

const std::unordered_map<uint64_t, char32_t>& composition_map() {
  static const auto* map = [] {
    auto* m = new std::unordered_map<uint64_t, char32_t>;
    for (const auto& e : kCompositions) (*m)[pair_key(e.first, e.second)] = e.composite;
    return m;
  }();
  return *map;
}

bool is_nfc_unstable(char32_t c) {
  auto it = std::upper_bound(std::begin(kNfcUnstable), std::end(kNfcUnstable), c,
                             [](char32_t v, const CodePointRange& r) { return v < r.first; });
  return it != std::begin(kNfcUnstable) && c <= std::prev(it)->last;
}

std::vector<char32_t> decode_all(std::string_view text) {
  std::vector<char32_t> out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    size_t n = valid_sequence_length(text, i);
    if (n == 0) {
      out.push_back(kReplacementCharacter);
      i += invalid_sequence_length(text, i);
    } else {
      out.push_back(decode_code_point(text, i, n));
      i += n;
    }
  }
  return out;
}

// Full canonical decomposition followed by the canonical ordering of combining marks.
std::vector<char32_t> canonical_decompose(std::string_view text) {
  const auto& decompositions = decomposition_map();
  std::vector<char32_t> out;
  out.reserve(text.size());
  for (char32_t c : decode_all(text)) {
    if (c >= kHangulBase && c < kHangulBase + kSyllableCount) {
      int s = static_cast<int>(c - kHangulBase);
      out.push_back(kLeadBase + s / (kVowelCount * kTrailCount));
      out.push_back(kVowelBase + (s % (kVowelCount * kTrailCount)) / kTrailCount);
      if (s % kTrailCount) out.push_back(kTrailBase + s % kTrailCount);
      continue;
    }
    auto it = c < 0xC0 ? decompositions.end() : decompositions.find(c);
    if (it == decompositions.end()) {
      out.push_back(c);
    } else {
      const DecompositionEntry* e = it->second;
      out.insert(out.end(), kDecompositionData + e->offset,
                 kDecompositionData + e->offset + e->length);
    }
  }
  // Stable sort of each run of non-starters by combining class.
  for (size_t i = 0; i < out.size();) {
    if (combining_class(out[i]) == 0) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < out.size() && combining_class(out[j]) != 0) ++j;
    std::stable_sort(out.begin() + i, out.begin() + j, [](char32_t a, char32_t b) {
      return combining_class(a) < combining_class(b);
    });
    i = j;
  }
  return out;
}

char32_t compose_pair(char32_t a, char32_t b) {
  if (a >= kLeadBase && a < kLeadBase + kLeadCount && b >= kVowelBase &&
      b < kVowelBase + kVowelCount)
    return kHangulBase + ((a - kLeadBase) * kVowelCount + (b - kVowelBase)) * kTrailCount;
  if (a >= kHangulBase && a < kHangulBase + kSyllableCount &&
      (a - kHangulBase) % kTrailCount == 0 && b > kTrailBase && b < kTrailBase + kTrailCount)
    return a + (b - kTrailBase);
  const auto& m = composition_map();
  auto it = m.find(pair_key(a, b));
  return it == m.end() ? 0 : it->second;
}

std::string encode_all(const std::vector<char32_t>& cps) {
  std::string out;
  out.reserve(cps.size() * 2);
  for (char32_t c : cps) append_utf8(out, c);
  return out;
}

}  // namespace

size_t valid_sequence_length(std::string_view text, size_t i) {
  size_t needed;
  size_t n = valid_prefix_length(text, i, needed);
  return n == needed ? n : 0;
}

size_t invalid_sequence_length(std::string_view text, size_t i) {
  size_t needed;
  return std::max<size_t>(1, valid_prefix_length(text, i, needed));
}

bool is_valid_utf8(std::string_view text) {
  for (size_t i = 0; i < text.size();) {
    if (static_cast<unsigned char>(text[i]) < 0x80) {
      ++i;
      continue;
    }
    size_t n = valid_sequence_length(text, i);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

std::string to_valid_utf8(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    size_t n = valid_sequence_length(text, i);
    if (n) {
      out.append(text.substr(i, n));
      i += n;
    } else {
      append_utf8(out, kReplacementCharacter);
      i += invalid_sequence_length(text, i);
    }
  }
  return out;
}

char32_t decode_code_point(std::string_view text, size_t i, size_t length) {
  auto b = [&](size_t k) { return static_cast<char32_t>(static_cast<unsigned char>(text[i + k])); };
  switch (length) {
    case 1:
      return b(0);
    case 2:
      return ((b(0) & 0x1F) << 6) | (b(1) & 0x3F);
    case 3:
      return ((b(0) & 0x0F) << 12) | ((b(1) & 0x3F) << 6) | (b(2) & 0x3F);
    default:
      return ((b(0) & 0x07) << 18) | ((b(1) & 0x3F) << 12) | ((b(2) & 0x3F) << 6) | (b(3) & 0x3F);
  }
}

void append_utf8(std::string& out, char32_t c) {
  if (c < 0x80) {
    out.push_back(static_cast<char>(c));
  } else if (c < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (c >> 6)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else if (c < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (c >> 12)));
    out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (c >> 18)));
    out.push_back(static_cast<char>(0x80 | ((c >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  }
}

const std::array<char32_t, 256>& byte_to_unicode() {
  // Printable Latin-1 bytes stand for themselves; the others (controls, space, ...) are
  // shifted to U+0100 and up, in byte order.
  static const std::array<char32_t, 256> table = [] {
    std::array<char32_t, 256> t{};
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      t[b] = printable ? static_cast<char32_t>(b) : next++;
    }
    return t;
  }();
  return table;
}

int unicode_to_byte(char32_t c) {
  static const std::unordered_map<char32_t, int> inverse = [] {
    std::unordered_map<char32_t, int> m;
    for (int b = 0; b < 256; ++b) m[byte_to_unicode()[b]] = b;
    return m;
  }();
  auto it = inverse.find(c);
  return it == inverse.end() ? -1 : it->second;
}

std::string to_nfd(std::string_view text) {
  bool ascii = std::all_of(text.begin(), text.end(),
                           [](char c) { return static_cast<unsigned char>(c) < 0x80; });
  if (ascii) return std::string(text);
  return encode_all(canonical_decompose(text));
}

std::string to_nfc(std::string_view text) {
  // Quick check: a string none of whose characters can change or combine is already in NFC.
  bool stable = true;
  for (size_t i = 0; i < text.size() && stable;) {
    if (static_cast<unsigned char>(text[i]) < 0x80) {
      ++i;
      continue;
    }
    size_t n = valid_sequence_length(text, i);
    if (n == 0 || is_nfc_unstable(decode_code_point(text, i, n))) stable = false;
    i += std::max<size_t>(n, 1);
  }
  if (stable) return std::string(text);

  std::vector<char32_t> cps = canonical_decompose(text);
  // Canonical composition: each character combines with the last starter unless a character
  // of the same or higher combining class stands between them ("blocked").
  std::vector<char32_t> out;
  out.reserve(cps.size());
  long starter = -1;
  int last_class = -1;
  for (char32_t c : cps) {
    int cc = combining_class(c);
    if (starter >= 0 && (last_class < cc || (last_class == 0 && cc == 0 &&
                                             out.size() == static_cast<size_t>(starter) + 1))) {
      if (char32_t composite = compose_pair(out[starter], c)) {
        out[starter] = composite;
        continue;
      }
    }
    if (cc == 0) {
      starter = static_cast<long>(out.size());
      last_class = 0;
    } else {
      last_class = cc;
    }
    out.push_back(c);
  }
  return encode_all(out);
}

}  // namespace whale::text
