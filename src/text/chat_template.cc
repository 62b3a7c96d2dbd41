#include "text/chat_template.h"

#include <array>
#include <cstdint>
#include <cstdio>

#include "base/error.h"

namespace whale::text {

namespace {

using nlohmann::json;

// SHA-256 (FIPS 180-4) of the template text, to recognize templates exactly.
std::string sha256_hex(std::string_view data) {
  static constexpr std::array<uint32_t, 64> k = {
      0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
      0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
      0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
      0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
      0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
      0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
      0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
      0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
      0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
      0xc67178f2};
  std::array<uint32_t, 8> h = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                               0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  std::string message(data);
  uint64_t bit_length = static_cast<uint64_t>(data.size()) * 8;
  message.push_back(static_cast<char>(0x80));
  while (message.size() % 64 != 56) message.push_back('\0');
  for (int i = 7; i >= 0; --i) message.push_back(static_cast<char>(bit_length >> (8 * i)));
  auto rotr = [](uint32_t x, int n) { return (x >> n) | (x << (32 - n)); };
  for (size_t block = 0; block < message.size(); block += 64) {
    std::array<uint32_t, 64> w{};
    for (int i = 0; i < 16; ++i)
      for (int b = 0; b < 4; ++b)
        w[i] = (w[i] << 8) | static_cast<unsigned char>(message[block + 4 * i + b]);
    for (int i = 16; i < 64; ++i) {
      uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
      uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
      w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    auto [a, b, c, d, e, f, g, hh] = h;
    for (int i = 0; i < 64; ++i) {
      uint32_t t1 =
          hh + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + k[i] + w[i];
      uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
      hh = g;
      g = f;
      f = e;
      e = d + t1;
      d = c;
      c = b;
      b = a;
      a = t1 + t2;
    }
    h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e, h[5] += f, h[6] += g, h[7] += hh;
  }
  std::string hex;
  char buffer[9];
  for (uint32_t v : h) {
    std::snprintf(buffer, sizeof buffer, "%08x", v);
    hex += buffer;
  }
  return hex;
}

// The chat_template strings of the published tokenizer_config.json files.
constexpr const char* kDeepSeekV3Sha256 =
    "3b8267e54b67df6500f231ffa969955cc9d26b3444a291ced4eb96ca7d3ca1ea";
constexpr const char* kDeepSeekR1Sha256 =
    "563b1ce7d61d50a9b4c7439a912a1116f095b712df5b5e4d3e1116049874eb64";

// The templates write these literally (not through eos_token).
constexpr const char* kUser = "<｜User｜>";
constexpr const char* kAssistant = "<｜Assistant｜>";
constexpr const char* kEndOfSentence = "<｜end▁of▁sentence｜>";
constexpr const char* kToolCallsBegin = "<｜tool▁calls▁begin｜>";
constexpr const char* kToolCallsEnd = "<｜tool▁calls▁end｜>";
constexpr const char* kToolOutputsBegin = "<｜tool▁outputs▁begin｜>";
constexpr const char* kToolOutputsEnd = "<｜tool▁outputs▁end｜>";
constexpr const char* kToolOutputBegin = "<｜tool▁output▁begin｜>";
constexpr const char* kToolOutputEnd = "<｜tool▁output▁end｜>";

// A string field the template concatenates; anything else would be a Jinja error there too.
const std::string& string_field(const json& object, const char* key, const std::string& where) {
  check(object.is_object() && object.contains(key) && object[key].is_string(),
        where + ": \"" + key + "\" must be a string");
  return object[key].get_ref<const std::string&>();
}

// <｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME\n```json\nARGUMENTS\n```<｜tool▁call▁end｜>
std::string tool_call(const json& tool, const std::string& where) {
  check(tool.is_object() && tool.contains("function") && tool["function"].is_object(),
        where + ": a tool call needs a \"function\" object");
  const json& function = tool["function"];
  return "<｜tool▁call▁begin｜>" + string_field(tool, "type", where) + "<｜tool▁sep｜>" +
         string_field(function, "name", where + ".function") + "\n```json\n" +
         string_field(function, "arguments", where + ".function") + "\n```<｜tool▁call▁end｜>";
}

}  // namespace

ChatFormat ChatTemplate::recognize(const std::string& template_text, const std::string& source) {
  std::string hash = sha256_hex(template_text);
  if (hash == kDeepSeekV3Sha256) return ChatFormat::kDeepSeekV3;
  if (hash == kDeepSeekR1Sha256) return ChatFormat::kDeepSeekR1;
  throw Error(source + ": unrecognized chat_template (sha256 " + hash +
              "); whale renders the DeepSeek-V3 and DeepSeek-R1 templates");
}

std::unique_ptr<ChatTemplate> ChatTemplate::for_tokenizer(const Tokenizer& tokenizer,
                                                          const std::string& dir) {
  std::string source = dir + "/tokenizer_config.json";
  check(!tokenizer.chat_template().empty(),
        source + " has no chat_template (is the file missing?)");
  ChatFormat format = recognize(tokenizer.chat_template(), source);
  return std::make_unique<ChatTemplate>(format, tokenizer.bos_token());
}

// Mirrors the Jinja templates statement by statement, quirks included: V3 closes a tool-call
// block only after its second call; both never reset is_first / is_output_first, so later
// tool rounds render differently from the first; R1 keeps only what follows the last </think>
// of earlier assistant turns.
std::string ChatTemplate::render(const json& messages, bool add_generation_prompt) const {
  check(messages.is_array(), "\"messages\" must be an array");
  const bool r1 = format_ == ChatFormat::kDeepSeekR1;
  auto where = [](size_t i) { return "messages[" + std::to_string(i) + "]"; };
  auto role_of = [](const json& m) -> std::string {
    return m.is_object() && m.contains("role") && m["role"].is_string() ? m["role"] : "";
  };

  std::string system_prompt;
  bool first_system_prompt = true;
  for (size_t i = 0; i < messages.size(); ++i) {
    if (role_of(messages[i]) != "system") continue;
    if (!first_system_prompt) system_prompt += "\n\n";
    system_prompt += string_field(messages[i], "content", where(i));
    first_system_prompt = false;
  }

  std::string out = bos_token_ + system_prompt;
  bool is_first = false, is_tool = false, is_output_first = true;
  for (size_t i = 0; i < messages.size(); ++i) {
    const json& m = messages[i];
    std::string role = role_of(m);
    if (role == "user") {
      is_tool = false;
      out += kUser + string_field(m, "content", where(i));
    } else if (role == "assistant") {
      bool content_is_none = m.contains("content") && m["content"].is_null();
      bool tool_branch = r1 ? m.contains("tool_calls") : content_is_none;
      if (tool_branch) {
        is_tool = false;
        const json& calls = m.contains("tool_calls") ? m["tool_calls"] : json::array();
        check(calls.is_array() || (!r1 && calls.is_null()),
              where(i) + ": \"tool_calls\" must be an array");
        for (size_t c = 0; calls.is_array() && c < calls.size(); ++c) {
          std::string call =
              tool_call(calls[c], where(i) + ".tool_calls[" + std::to_string(c) + "]");
          if (!is_first) {
            out += kAssistant;
            if (r1 && !content_is_none) out += string_field(m, "content", where(i));
            out += kToolCallsBegin + call;
            is_first = true;
          } else {
            out += "\n" + call;
            if (!r1) out += std::string(kToolCallsEnd) + kEndOfSentence;
          }
        }
        if (r1) out += std::string(kToolCallsEnd) + kEndOfSentence;
      } else {
        std::string content = string_field(m, "content", where(i));
        if (is_tool) {
          out += kToolOutputsEnd + content + kEndOfSentence;
          is_tool = false;
        } else {
          size_t think_end = content.rfind("</think>");
          if (r1 && think_end != std::string::npos)
            content = content.substr(think_end + std::string_view("</think>").size());
          out += kAssistant + content + kEndOfSentence;
        }
      }
    } else if (role == "tool") {
      is_tool = true;
      const std::string& content = string_field(m, "content", where(i));
      if (is_output_first) {
        out += std::string(kToolOutputsBegin) + kToolOutputBegin + content + kToolOutputEnd;
        is_output_first = false;
      } else {
        out += (r1 ? "" : "\n") + std::string(kToolOutputBegin) + content + kToolOutputEnd;
      }
    }
    // Other roles (and system, handled above) add nothing here, as in the templates.
  }
  if (is_tool) out += kToolOutputsEnd;
  if (add_generation_prompt && !is_tool) out += r1 ? "<｜Assistant｜><think>\n" : kAssistant;
  return out;
}

}  // namespace whale::text
