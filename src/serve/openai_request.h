// Parsing and checking the body of an OpenAI-style request (/v1/chat/completions,
// /v1/completions) into a scheduler Job. The body is untrusted: its size, nesting, encoding,
// every field's type and range are checked, and anything wrong is an ApiError carrying the
// HTTP status and the fields of OpenAI's error object.
#pragma once
#include <memory>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>

#include "model/config.h"
#include "serve/scheduler.h"
#include "text/chat_template.h"
#include "text/tokenizer.h"

namespace whale::serve {

struct ApiError : std::runtime_error {
  ApiError(int status, const std::string& message, std::string param = "", std::string code = "",
           std::string type = "invalid_request_error")
      : std::runtime_error(message),
        status(status),
        param(std::move(param)),
        code(std::move(code)),
        type(std::move(type)) {}
  int status;
  std::string param, code, type;
};

// {"error": {"message", "type", "param", "code"}} as OpenAI sends it.
nlohmann::json error_body(const ApiError& e);

// What requests are checked against.
struct ApiLimits {
  std::string model_name;
  int context = 0;          // the model's max_position_embeddings
  int capacity_tokens = 0;  // the KV block pool's size in tokens
  int max_n = 16;           // most choices per request
  int max_prompts = 16;     // most prompts in one /v1/completions request
};

struct ParsedRequest {
  bool chat = false, stream = false, include_usage = false;
  int n = 1, prompts = 1;  // choices = prompts × n; choice i is prompt i / n
  bool thinking = false;   // chat: the prompt opened a <think> block
  std::shared_ptr<Job> job;
};

// Parses JSON text with a cap on nesting (deep nesting would exhaust the parser's stack).
nlohmann::json parse_json_body(const std::string& body);

ParsedRequest parse_request(const std::string& body, bool chat, const ApiLimits& limits,
                            const text::Tokenizer& tokenizer,
                            const text::ChatTemplate* chat_template);

}  // namespace whale::serve
