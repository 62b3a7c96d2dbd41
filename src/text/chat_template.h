// Chat formats: renders a conversation exactly as the Jinja chat_template in
// tokenizer_config.json does, natively. Templates are recognized by their text (SHA-256);
// an unrecognized template is an error rather than a guess.
#pragma once
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "text/tokenizer.h"

namespace whale::text {

enum class ChatFormat {
  kDeepSeekV3,  // DeepSeek-V3 (Dec 2024)
  kDeepSeekR1,  // DeepSeek-R1: <think> generation prompt, earlier reasoning dropped
};

class ChatTemplate {
 public:
  // Recognizes the tokenizer's chat_template; `dir` only names the folder in errors.
  static std::unique_ptr<ChatTemplate> for_tokenizer(const Tokenizer& tokenizer,
                                                     const std::string& dir);
  // Recognizes a template text; throws whale::Error if it is not one whale knows.
  static ChatFormat recognize(const std::string& template_text, const std::string& source);

  ChatTemplate(ChatFormat format, std::string bos_token)
      : format_(format), bos_token_(std::move(bos_token)) {}

  // messages: [{"role": "system"|"user"|"assistant"|"tool", "content": ...,
  //             "tool_calls": [{"type", "function": {"name", "arguments"}}]}, ...]
  std::string render(const nlohmann::json& messages, bool add_generation_prompt) const;
  ChatFormat format() const { return format_; }

 private:
  ChatFormat format_;
  std::string bos_token_;
};

}  // namespace whale::text
