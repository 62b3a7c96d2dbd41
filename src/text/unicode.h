// UTF-8 and Unicode helpers for the tokenizer: code point decoding, the replacement policy for
// invalid UTF-8, GPT-2's byte-to-character alphabet, and NFC normalization.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace whale::text {

inline constexpr char32_t kReplacementCharacter = 0xFFFD;

// Length of the valid UTF-8 sequence starting at text[i], or 0 if the bytes there are not one
// (bad lead byte, bad continuation, overlong form, surrogate, beyond U+10FFFF, or cut short).
size_t valid_sequence_length(std::string_view text, size_t i);

// The number of bytes at text[i] that the "maximal subpart" rule (Unicode ch. 3, and Rust's
// String::from_utf8_lossy) replaces by one U+FFFD: the longest prefix of a valid sequence, or 1.
size_t invalid_sequence_length(std::string_view text, size_t i);

bool is_valid_utf8(std::string_view text);

// Replaces every ill-formed subsequence with U+FFFD, one per maximal subpart, exactly like
// Rust's String::from_utf8_lossy (what Hugging Face's decode does with its bytes).
std::string to_valid_utf8(std::string_view text);

// Decodes the code point of a valid sequence at text[i] whose length is `length`.
char32_t decode_code_point(std::string_view text, size_t i, size_t length);
void append_utf8(std::string& out, char32_t code_point);

// GPT-2's reversible map from bytes to printable characters ("Ġ" for a space, ...), which
// byte-level BPE vocabularies are written in.
const std::array<char32_t, 256>& byte_to_unicode();
// The inverse: the byte for a character of that alphabet, or -1.
int unicode_to_byte(char32_t c);

// Unicode Normalization Form C (canonical decomposition, then canonical composition), with
// the character data Hugging Face's tokenizers uses (Unicode 9: a mark added later counts as a
// starter), so that normalizing tokenizers agree with HF (see tests/text/gen_unicode_tables.py).
std::string to_nfc(std::string_view text);
// Form D (canonical decomposition only), with the same data.
std::string to_nfd(std::string_view text);

}  // namespace whale::text
