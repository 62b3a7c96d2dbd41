// Filters over streamed model output, shared by `whale serve` and `whale chat`: stop strings
// (text that may still become one is held back) and the split of a reasoning model's output into
// reasoning and answer.
#pragma once
#include <string>
#include <string_view>
#include <vector>

namespace whale {

// The longest suffix of `text` that is a proper prefix of `tag`.
size_t partial_match_length(std::string_view text, std::string_view tag);

class StopFilter {
 public:
  explicit StopFilter(std::vector<std::string> stops) : stops_(std::move(stops)) {}
  // The text that can be shown now; sets `stopped` once a stop string appeared (the stop string
  // and anything after it are dropped).
  std::string push(std::string_view text, bool& stopped);
  // What is still held back, at the end of the generation.
  std::string finish();

 private:
  std::vector<std::string> stops_;
  std::string pending_;
};

// DeepSeek-R1 style output: "reasoning</think>answer" when the prompt ended in "<think>", or
// "<think>reasoning</think>answer". Newlines right after either tag are dropped, as are the
// tags themselves.
class ReasoningSplitter {
 public:
  explicit ReasoningSplitter(bool starts_thinking) : thinking_(starts_thinking) {}
  struct Delta {
    std::string reasoning, content;
  };
  Delta push(std::string_view text);
  Delta finish();

 private:
  void emit(std::string text, Delta& out);
  bool thinking_, seen_text_ = false, strip_newlines_ = false;
  std::string pending_;
};

// True when `text` is well-formed UTF-8.
bool valid_utf8(std::string_view text);

}  // namespace whale
