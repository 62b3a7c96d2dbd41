#include "text/stream_filters.h"

#include <algorithm>
#include <utility>

namespace whale {

size_t partial_match_length(std::string_view text, std::string_view tag) {
  if (tag.empty()) return 0;
  for (size_t n = std::min(text.size(), tag.size() - 1); n > 0; --n)
    if (text.substr(text.size() - n) == tag.substr(0, n)) return n;
  return 0;
}

std::string StopFilter::push(std::string_view text, bool& stopped) {
  pending_ += text;
  if (stops_.empty()) return std::exchange(pending_, "");
  size_t first = std::string::npos;
  for (const std::string& s : stops_) first = std::min(first, pending_.find(s));
  if (first != std::string::npos) {
    stopped = true;
    std::string out = pending_.substr(0, first);
    pending_.clear();
    return out;
  }
  size_t keep = 0;
  for (const std::string& s : stops_) keep = std::max(keep, partial_match_length(pending_, s));
  std::string out = pending_.substr(0, pending_.size() - keep);
  pending_.erase(0, pending_.size() - keep);
  return out;
}

std::string StopFilter::finish() {
  return std::exchange(pending_, "");
}

void ReasoningSplitter::emit(std::string text, Delta& out) {
  if (strip_newlines_) {
    size_t first = text.find_first_not_of("\r\n");
    if (first == std::string::npos) return;
    text.erase(0, first);
    strip_newlines_ = false;
  }
  if (text.empty()) return;
  seen_text_ = true;
  (thinking_ ? out.reasoning : out.content) += text;
}

ReasoningSplitter::Delta ReasoningSplitter::push(std::string_view text) {
  Delta out;
  pending_ += text;
  for (;;) {
    // Only a "<think>" before any answer text opens reasoning; "</think>" closes it.
    if (!thinking_) {
      if (seen_text_) {
        emit(std::exchange(pending_, ""), out);
        return out;
      }
      size_t lead = pending_.find_first_not_of(" \r\n");
      if (lead == std::string::npos) return out;  // only whitespace so far: wait
      std::string_view rest = std::string_view(pending_).substr(lead);
      if (rest.starts_with("<think>")) {
        pending_.erase(0, lead + 7);
        thinking_ = true;
        strip_newlines_ = true;
        continue;
      }
      if (std::string_view("<think>").starts_with(rest)) return out;  // may become the tag
      emit(std::exchange(pending_, ""), out);
      return out;
    }
    size_t at = pending_.find("</think>");
    if (at == std::string::npos) break;
    emit(pending_.substr(0, at), out);
    pending_.erase(0, at + 8);
    thinking_ = false;
    seen_text_ = true;  // an answer follows: a later "<think>" is answer text
    strip_newlines_ = true;
  }
  size_t keep = partial_match_length(pending_, "</think>");
  emit(pending_.substr(0, pending_.size() - keep), out);
  pending_.erase(0, pending_.size() - keep);
  return out;
}

ReasoningSplitter::Delta ReasoningSplitter::finish() {
  Delta out;
  emit(std::exchange(pending_, ""), out);
  return out;
}

bool valid_utf8(std::string_view s) {
  size_t i = 0;
  const size_t n = s.size();
  while (i < n) {
    const unsigned char c = s[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    int len;
    unsigned lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;  // no surrogates
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    } else {
      return false;
    }
    if (i + len > n) return false;
    for (int k = 1; k < len; ++k) {
      const unsigned char d = s[i + k];
      if (k == 1 ? (d < lo || d > hi) : (d < 0x80 || d > 0xBF)) return false;
    }
    i += len;
  }
  return true;
}

}  // namespace whale
