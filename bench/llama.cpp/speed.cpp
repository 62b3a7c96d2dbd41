// Inference speed of a GGUF in llama.cpp, measured the way `whale bench` measures whale: prefill
// tok/s of one P-token prompt per P (a fresh, cleared cache each time, logits of the last row
// only, as a server does), then time to first token and decode tok/s of single-token
// llama_decode steps after a prompt, choosing each next token greedily (argmax of the logits).
// The prompt tokens are whale bench's: token i = (i·7919 + 17) mod vocab.
//
// llama.cpp runs with its default settings for speed: mmap (the loader populates the mapping),
// its default f16 KV cache, flash attention "auto" (llama.cpp decides), its default weight
// repacking (extra buffer types) where it has one for the type, n_threads = n_threads_batch.
// Built by speed.sh against the llama.cpp that run.sh builds (never in whale's CMake).
//
// usage: llama_speed MODEL.gguf [--threads N] [--prompt-lengths 128,512] [--decode-prompt 128]
//                               [--decode-tokens 64]
// Prints one JSON line with whale bench's keys where they apply: prefill_tok_s {"128": ..},
// ttft_s, decode_tok_s, ...; llama.cpp's own log goes to stderr.
#include <llama.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include "llama_batch.h"

namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// What llama.cpp decided for the settings left to it, picked from its log.
std::string g_flash_attn = "?", g_load_mode = "?", g_repack = "none";

void log_callback(ggml_log_level level, const char* text, void*) {
  std::string line(text);
  auto after = [&](const char* key, std::string& into) {
    size_t at = line.find(key);
    if (at == std::string::npos) return;
    std::string v = line.substr(at + std::strlen(key));
    while (!v.empty() && (v.back() == '\n' || v.back() == ')' || v.back() == ' ')) v.pop_back();
    into = v;
  };
  if (line.find(": flash_attn ") != std::string::npos) after("= ", g_flash_attn);
  after("load_mode = ", g_load_mode);
  if (line.find("Flash Attention enabled") != std::string::npos) g_flash_attn += " -> enabled";
  if (line.find("Flash Attention not supported") != std::string::npos) g_flash_attn += " -> disabled";
  if (line.find("REPACK") != std::string::npos && line.find("buffer size") != std::string::npos) {
    std::string v = line.substr(line.find("REPACK"));
    while (!v.empty() && v.back() == '\n') v.pop_back();
    g_repack = v;
  }
  if (level >= GGML_LOG_LEVEL_WARN || std::getenv("VERBOSE")) std::fputs(text, stderr);
}

std::vector<int> parse_list(const char* s) {
  std::vector<int> out;
  std::stringstream in(s);
  for (std::string x; std::getline(in, x, ',');) out.push_back(std::stoi(x));
  return out;
}

std::string json_escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '"' || c == '\\') o += '\\';
    if (static_cast<unsigned char>(c) >= 0x20) o += c;
  }
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || argv[1][0] == '-') {
    std::fprintf(stderr,
                 "usage: %s MODEL.gguf [--threads N] [--prompt-lengths 128,512] "
                 "[--decode-prompt 128] [--decode-tokens 64]\n",
                 argv[0]);
    return 2;
  }
  const char* path = argv[1];
  int threads = 2, decode_prompt = 128, decode_tokens = 64;
  std::vector<int> prompt_lengths = {128, 512};
  for (int i = 2; i + 1 < argc; i += 2) {
    const std::string k = argv[i];
    if (k == "--threads") threads = std::atoi(argv[i + 1]);
    else if (k == "--prompt-lengths") prompt_lengths = parse_list(argv[i + 1]);
    else if (k == "--decode-prompt") decode_prompt = std::atoi(argv[i + 1]);
    else if (k == "--decode-tokens") decode_tokens = std::atoi(argv[i + 1]);
    else {
      std::fprintf(stderr, "unknown option %s\n", argv[i]);
      return 2;
    }
  }
  if (threads <= 0 || decode_prompt <= 0 || decode_tokens <= 0 || prompt_lengths.empty()) {
    std::fprintf(stderr, "threads, prompt lengths and token counts must be positive\n");
    return 2;
  }
  for (int p : prompt_lengths)
    if (p <= 0) {
      std::fprintf(stderr, "prompt lengths must be positive\n");
      return 2;
    }

  llama_log_set(log_callback, nullptr);
  llama_backend_init();
  auto t0 = std::chrono::steady_clock::now();
  llama_model_params mp = llama_model_default_params();  // mmap (auto), no MTP block
  llama_model* model = llama_model_load_from_file(path, mp);
  if (!model) {
    std::fprintf(stderr, "%s: llama.cpp could not load the model\n", path);
    return 1;
  }
  const int max_prompt = *std::max_element(prompt_lengths.begin(), prompt_lengths.end());
  const int longest = std::max(max_prompt, decode_prompt + decode_tokens);
  llama_context_params cp = llama_context_default_params();  // f16 KV cache, flash attn auto
  cp.n_ctx = static_cast<uint32_t>(longest + 16);
  cp.n_batch = cp.n_ubatch = static_cast<uint32_t>(std::max(max_prompt, decode_prompt));
  cp.n_threads = cp.n_threads_batch = threads;
  llama_context* ctx = llama_init_from_model(model, cp);
  if (!ctx) {
    std::fprintf(stderr, "llama_init_from_model failed\n");
    return 1;
  }
  const double load_s = seconds_since(t0);
  const int V = llama_vocab_n_tokens(llama_model_get_vocab(model));
  llama_memory_t memory = llama_get_memory(ctx);

  auto prompt = [&](int n) {
    std::vector<llama_token> t(n);
    for (int i = 0; i < n; ++i) t[i] = static_cast<llama_token>((i * 7919ull + 17) % V);
    return t;
  };
  llama_batch batch = llama_batch_init(std::max(max_prompt, decode_prompt), 0, 1);
  // Tokens at positions from `pos`; logits of the last one only.
  auto run = [&](const llama_token* tokens, int n, int pos) {
    decode_batch(ctx, batch, tokens, n, pos);
  };
  auto argmax = [&] {
    const float* logits = llama_get_logits_ith(ctx, -1);  // waits for the computation
    return static_cast<llama_token>(std::max_element(logits, logits + V) - logits);
  };

  // Warm-up: a short prefill and a few decode steps (graphs and buffers allocated, the mapped
  // weights resident), as whale bench warms up before timing.
  {
    std::vector<llama_token> p = prompt(std::min(8, decode_prompt));
    run(p.data(), static_cast<int>(p.size()), 0);
    llama_token next = argmax();
    for (int i = 0; i < 2; ++i) {
      run(&next, 1, static_cast<int>(p.size()) + i);
      next = argmax();
    }
    llama_memory_clear(memory, true);
  }

  std::string prefill_json;
  for (int len : prompt_lengths) {
    std::vector<llama_token> p = prompt(len);
    llama_memory_clear(memory, true);
    auto start = std::chrono::steady_clock::now();
    run(p.data(), len, 0);
    argmax();
    const double rate = len / seconds_since(start);
    prefill_json += (prefill_json.empty() ? "" : ",") + ("\"" + std::to_string(len) + "\":") +
                    std::to_string(rate);
  }

  // Time to first token, then decode: one token per llama_decode, greedy.
  std::vector<llama_token> p = prompt(decode_prompt);
  llama_memory_clear(memory, true);
  auto start = std::chrono::steady_clock::now();
  run(p.data(), decode_prompt, 0);
  llama_token next = argmax();
  const double ttft = seconds_since(start);
  start = std::chrono::steady_clock::now();
  for (int i = 0; i < decode_tokens; ++i) {
    run(&next, 1, decode_prompt + i);
    next = argmax();
  }
  const double decode_rate = decode_tokens / seconds_since(start);

  char desc[256];
  llama_model_desc(model, desc, sizeof desc);
  std::printf(
      "{\"engine\":\"llama.cpp\",\"model\":\"%s\",\"desc\":\"%s\",\"threads\":%d,"
      "\"load_s\":%.3f,\"weight_bytes\":%llu,\"prefill_tok_s\":{%s},\"ttft_s\":%.4f,"
      "\"ttft_prompt_tokens\":%d,\"decode_tok_s\":%.4f,\"decode_tokens\":%d,"
      "\"kv_cache_type\":\"f16\",\"flash_attn\":\"%s\",\"load_mode\":\"%s\",\"repack\":\"%s\"}\n",
      json_escape(path).c_str(), json_escape(desc).c_str(), threads, load_s,
      static_cast<unsigned long long>(llama_model_size(model)), prefill_json.c_str(), ttft,
      decode_prompt, decode_rate, decode_tokens, json_escape(g_flash_attn).c_str(),
      json_escape(g_load_mode).c_str(), json_escape(g_repack).c_str());
  llama_batch_free(batch);
  llama_free(ctx);
  llama_model_free(model);
  llama_backend_free();
  return 0;
}
