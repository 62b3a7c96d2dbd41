#include "serve/openai_request.h"

#include <cmath>
#include <random>

#include "base/error.h"
#include "text/stream_filters.h"

namespace whale::serve {

using nlohmann::json;

json error_body(const ApiError& e) {
  json error = {{"message", e.what()},
                {"type", e.type},
                {"param", e.param.empty() ? json(nullptr) : json(e.param)},
                {"code", e.code.empty() ? json(nullptr) : json(e.code)}};
  return {{"error", error}};
}

json parse_json_body(const std::string& body) {
  if (body.empty()) throw ApiError(400, "the request body is empty; send a JSON object");
  if (!valid_utf8(body)) throw ApiError(400, "the request body is not valid UTF-8");
  // The parser recurses per level: refuse deep nesting before it sees it.
  int depth = 0;
  bool in_string = false, escaped = false;
  for (char ch : body) {
    if (in_string) {
      if (escaped)
        escaped = false;
      else if (ch == '\\')
        escaped = true;
      else if (ch == '"')
        in_string = false;
    } else if (ch == '"') {
      in_string = true;
    } else if (ch == '{' || ch == '[') {
      if (++depth > 64) throw ApiError(400, "the request body nests deeper than 64 levels");
    } else if (ch == '}' || ch == ']') {
      --depth;
    }
  }
  try {
    return json::parse(body);
  } catch (const json::exception& e) {
    throw ApiError(400, std::string("malformed JSON in the request body: ") + e.what());
  }
}

namespace {

const char* type_name(const json& v) {
  return v.type_name();
}

// Field readers: absent or null gives the default; a present value of the wrong type or out of
// range is a 400 naming the field.
bool get_bool(const json& body, const char* key, bool fallback) {
  if (!body.contains(key) || body[key].is_null()) return fallback;
  if (!body[key].is_boolean())
    throw ApiError(400, std::string("'") + key + "' must be a boolean, not " + type_name(body[key]),
                   key);
  return body[key].get<bool>();
}

double get_number(const json& body, const char* key, double fallback, double lo, double hi) {
  if (!body.contains(key) || body[key].is_null()) return fallback;
  const json& v = body[key];
  if (!v.is_number())
    throw ApiError(400, std::string("'") + key + "' must be a number, not " + type_name(v), key);
  double x = v.get<double>();
  if (!std::isfinite(x) || x < lo || x > hi)
    throw ApiError(400,
                   std::string("'") + key + "' must be between " + std::to_string(lo) + " and " +
                       std::to_string(hi) + ", got " + v.dump(),
                   key);
  return x;
}

// An integer in [lo, hi]; `absent` when missing or null.
int64_t get_int(const json& body, const char* key, int64_t absent, int64_t lo, int64_t hi) {
  if (!body.contains(key) || body[key].is_null()) return absent;
  const json& v = body[key];
  if (!v.is_number_integer())
    throw ApiError(400, std::string("'") + key + "' must be an integer, not " + v.dump(), key);
  // Non-negative numbers parse as unsigned, and may not fit int64.
  const bool out_of_range = v.is_number_unsigned()
                                ? v.get<uint64_t>() > static_cast<uint64_t>(hi) ||
                                      (lo > 0 && v.get<uint64_t>() < static_cast<uint64_t>(lo))
                                : v.get<int64_t>() < lo || v.get<int64_t>() > hi;
  if (out_of_range)
    throw ApiError(400,
                   std::string("'") + key + "' must be between " + std::to_string(lo) + " and " +
                       std::to_string(hi) + ", got " + v.dump(),
                   key);
  return v.get<int64_t>();
}

std::string get_string(const json& v, const std::string& param) {
  if (!v.is_string())
    throw ApiError(400, "'" + param + "' must be a string, not " + type_name(v), param);
  return v.get<std::string>();
}

// Message content: a string, or an array of {"type": "text", "text": ...} parts.
std::string message_content(const json& m, const std::string& param) {
  if (!m.contains("content") || m["content"].is_null()) return "";
  const json& c = m["content"];
  if (c.is_string()) return c.get<std::string>();
  if (!c.is_array())
    throw ApiError(400, "'" + param + ".content' must be a string or an array of text parts",
                   param + ".content");
  std::string out;
  for (size_t i = 0; i < c.size(); ++i) {
    const std::string where = param + ".content[" + std::to_string(i) + "]";
    const json& part = c[i];
    if (!part.is_object() || !part.contains("type") || part["type"] != "text" ||
        !part.contains("text") || !part["text"].is_string())
      throw ApiError(400, "'" + where + "' must be {\"type\": \"text\", \"text\": string}", where);
    out += part["text"].get<std::string>();
  }
  return out;
}

std::vector<std::string> get_stop(const json& body) {
  if (!body.contains("stop") || body["stop"].is_null()) return {};
  const json& v = body["stop"];
  std::vector<std::string> out;
  if (v.is_string()) {
    out.push_back(v.get<std::string>());
  } else if (v.is_array()) {
    if (v.size() > 4) throw ApiError(400, "'stop' holds at most 4 strings", "stop");
    for (const json& s : v) out.push_back(get_string(s, "stop"));
  } else {
    throw ApiError(400, "'stop' must be a string or an array of strings", "stop");
  }
  for (const std::string& s : out)
    if (s.empty()) throw ApiError(400, "'stop' strings must not be empty", "stop");
  return out;
}

std::vector<int> encode_prompt(const text::Tokenizer& tokenizer, const std::string& text) {
  std::vector<int> ids = tokenizer.encode(text, true);
  const int bos = tokenizer.bos_id();
  if (tokenizer.add_bos_token() && bos >= 0 && (ids.empty() || ids[0] != bos))
    ids.insert(ids.begin(), bos);
  return ids;
}

// /v1/completions "prompt": a string, an array of strings, an array of token ids, or an
// array of arrays of token ids.
std::vector<std::vector<int>> completion_prompts(const json& body, const ApiLimits& limits,
                                                 const text::Tokenizer& tokenizer) {
  if (!body.contains("prompt") || body["prompt"].is_null())
    throw ApiError(400, "'prompt' is required", "prompt");
  const json& p = body["prompt"];
  const int vocab = tokenizer.vocab_size();
  auto ids_of = [&](const json& a, const std::string& param) {
    std::vector<int> ids;
    for (const json& t : a) {
      if (!t.is_number_integer() || t.get<int64_t>() < 0 || t.get<int64_t>() >= vocab)
        throw ApiError(
            400, "'" + param + "' token ids must be integers in [0, " + std::to_string(vocab) + ")",
            "prompt");
      ids.push_back(t.get<int>());
    }
    return ids;
  };
  std::vector<std::vector<int>> out;
  if (p.is_string()) {
    out.push_back(encode_prompt(tokenizer, p.get<std::string>()));
  } else if (p.is_array() && !p.empty() && p[0].is_number()) {
    out.push_back(ids_of(p, "prompt"));
  } else if (p.is_array() && !p.empty()) {
    if (static_cast<int>(p.size()) > limits.max_prompts)
      throw ApiError(400, "at most " + std::to_string(limits.max_prompts) + " prompts per request",
                     "prompt");
    for (size_t i = 0; i < p.size(); ++i) {
      const std::string where = "prompt[" + std::to_string(i) + "]";
      if (p[i].is_string())
        out.push_back(encode_prompt(tokenizer, p[i].get<std::string>()));
      else if (p[i].is_array())
        out.push_back(ids_of(p[i], where));
      else
        throw ApiError(400, "'" + where + "' must be a string or an array of token ids", "prompt");
    }
  } else {
    throw ApiError(400,
                   "'prompt' must be a non-empty string, array of strings, or array of token ids",
                   "prompt");
  }
  for (const auto& ids : out)
    if (ids.empty()) throw ApiError(400, "'prompt' is empty", "prompt");
  return out;
}

}  // namespace

ParsedRequest parse_request(const std::string& body_text, bool chat, const ApiLimits& limits,
                            const text::Tokenizer& tokenizer,
                            const text::ChatTemplate* chat_template) {
  const json body = parse_json_body(body_text);
  if (!body.is_object())
    throw ApiError(400,
                   std::string("the request body must be a JSON object, not ") + type_name(body));
  ParsedRequest r;
  r.chat = chat;

  if (!body.contains("model")) throw ApiError(400, "'model' is required", "model");
  const std::string model = get_string(body["model"], "model");
  if (model != limits.model_name)
    throw ApiError(
        404,
        "the model '" + model + "' does not exist; this server has '" + limits.model_name + "'",
        "model", "model_not_found");

  r.stream = get_bool(body, "stream", false);
  if (body.contains("stream_options") && !body["stream_options"].is_null()) {
    const json& so = body["stream_options"];
    if (!so.is_object())
      throw ApiError(400, "'stream_options' must be an object", "stream_options");
    if (!r.stream)
      throw ApiError(400, "'stream_options' is only allowed when 'stream' is true",
                     "stream_options");
    r.include_usage = get_bool(so, "include_usage", false);
  }
  if (get_bool(body, "logprobs", false) ||
      (body.contains("logprobs") && body["logprobs"].is_number_integer()))
    throw ApiError(400, "'logprobs' is not supported", "logprobs");
  if (body.contains("tools") && !body["tools"].is_null() &&
      !(body["tools"].is_array() && body["tools"].empty()))
    throw ApiError(400, "'tools' are not supported", "tools");
  if (get_bool(body, "echo", false)) throw ApiError(400, "'echo' is not supported", "echo");
  // Accepted for compatibility; they do not change sampling here.
  get_number(body, "presence_penalty", 0, -2, 2);
  get_number(body, "frequency_penalty", 0, -2, 2);

  SamplingParams sampling;
  sampling.temperature = static_cast<float>(get_number(body, "temperature", 1.0, 0, 2));
  sampling.top_p = static_cast<float>(get_number(body, "top_p", 1.0, 0, 1));
  if (sampling.top_p <= 0) throw ApiError(400, "'top_p' must be greater than 0", "top_p");
  sampling.top_k = static_cast<int>(get_int(body, "top_k", 0, 0, 1 << 30));
  r.n = static_cast<int>(get_int(body, "n", 1, 1, limits.max_n));
  const int64_t kNoSeed = INT64_MIN;
  int64_t seed = get_int(body, "seed", kNoSeed, INT64_MIN + 1, INT64_MAX);
  std::vector<std::string> stop = get_stop(body);

  std::vector<std::vector<int>> prompts;
  if (chat) {
    if (!body.contains("messages")) throw ApiError(400, "'messages' is required", "messages");
    const json& messages = body["messages"];
    if (!messages.is_array()) throw ApiError(400, "'messages' must be an array", "messages");
    if (messages.empty()) throw ApiError(400, "'messages' must not be empty", "messages");
    json clean = json::array();
    for (size_t i = 0; i < messages.size(); ++i) {
      const std::string where = "messages[" + std::to_string(i) + "]";
      const json& m = messages[i];
      if (!m.is_object()) throw ApiError(400, "'" + where + "' must be an object", where);
      if (!m.contains("role")) throw ApiError(400, "'" + where + ".role' is required", where);
      std::string role = get_string(m["role"], where + ".role");
      if (role == "developer") role = "system";
      if (role != "system" && role != "user" && role != "assistant" && role != "tool")
        throw ApiError(
            400, "'" + where + ".role' must be system, user, assistant or tool, not '" + role + "'",
            where + ".role");
      json cm = {{"role", role}, {"content", message_content(m, where)}};
      if (m.contains("tool_calls") && !m["tool_calls"].is_null())
        cm["tool_calls"] = m["tool_calls"];
      clean.push_back(std::move(cm));
    }
    std::string rendered;
    std::vector<int> ids;
    try {
      if (chat_template) {
        rendered = chat_template->render(clean, true);
        ids = tokenizer.encode(rendered, false);
        r.thinking = rendered.ends_with("<think>\n") || rendered.ends_with("<think>");
      } else {
        // No chat template: a plain transcript, the model continuing after "Assistant:".
        for (const json& m : clean) {
          const std::string& role = m["role"].get_ref<const std::string&>();
          const std::string& content = m["content"].get_ref<const std::string&>();
          if (role == "system")
            rendered += content + "\n\n";
          else if (role == "user" || role == "tool")
            rendered += "User: " + content + "\n";
          else
            rendered += "Assistant: " + content + "\n";
        }
        rendered += "Assistant:";
        ids = encode_prompt(tokenizer, rendered);
        stop.push_back("\nUser:");
      }
    } catch (const Error& e) {
      throw ApiError(400, std::string("'messages': ") + e.what(), "messages");
    }
    prompts.push_back(std::move(ids));
  } else {
    prompts = completion_prompts(body, limits, tokenizer);
  }
  r.prompts = static_cast<int>(prompts.size());

  size_t longest = 0;
  for (const auto& p : prompts) longest = std::max(longest, p.size());
  const int64_t plen = static_cast<int64_t>(longest);
  if (plen >= limits.context)
    throw ApiError(400,
                   "the prompt is " + std::to_string(plen) + " tokens; this model's context is " +
                       std::to_string(limits.context) + " tokens",
                   chat ? "messages" : "prompt", "context_length_exceeded");
  int64_t max_tokens = get_int(body, "max_completion_tokens", -1, 1, INT32_MAX);
  if (max_tokens < 0) max_tokens = get_int(body, "max_tokens", -1, 1, INT32_MAX);
  if (max_tokens < 0) {
    max_tokens = limits.context - plen;
  } else if (plen + max_tokens > limits.context) {
    throw ApiError(400,
                   "this model's context is " + std::to_string(limits.context) +
                       " tokens; the prompt (" + std::to_string(plen) + ") plus max_tokens (" +
                       std::to_string(max_tokens) + ") exceed it",
                   "max_tokens", "context_length_exceeded");
  }
  // A sequence must fit the block pool on its own, or it could never finish.
  if (plen + max_tokens > limits.capacity_tokens) {
    if (plen + 1 > limits.capacity_tokens || body.contains("max_tokens") ||
        body.contains("max_completion_tokens"))
      throw ApiError(400,
                     "the prompt (" + std::to_string(plen) + ") plus max_tokens (" +
                         std::to_string(max_tokens) + ") exceed this server's KV cache of " +
                         std::to_string(limits.capacity_tokens) + " tokens (--cache-mib)",
                     "max_tokens", "context_length_exceeded");
    max_tokens = limits.capacity_tokens - plen;
  }

  auto job = std::make_shared<Job>();
  job->max_tokens = static_cast<int>(max_tokens);
  job->stop = std::move(stop);
  const uint64_t base_seed = seed == kNoSeed ? std::random_device{}() : static_cast<uint64_t>(seed);
  for (int p = 0; p < r.prompts; ++p)
    for (int i = 0; i < r.n; ++i) {
      Job::Choice c;
      c.prompt = prompts[p];
      c.sampling = sampling;
      c.sampling.seed = base_seed + static_cast<uint64_t>(p * r.n + i);
      job->choices.push_back(std::move(c));
    }
  r.job = std::move(job);
  return r;
}

}  // namespace whale::serve
