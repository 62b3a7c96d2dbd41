// whale chat: an interactive conversation with a model, streamed token by token. The reasoning
// (text between <think> and </think>) is shown apart from the answer: dimmed on a terminal,
// each line prefixed "[thinking] " otherwise. The whole conversation is re-rendered with the
// model's chat template every turn; the KV cache is kept and only the tokens after the part
// it already holds are computed.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>
#include <random>
#include <utility>

#include "base/error.h"
#include "cli/commands.h"
#include "infer/sampler.h"
#include "model/kv_cache.h"
#include "model/transformer.h"
#include "text/chat_template.h"
#include "text/stream_filters.h"
#include "text/tokenizer.h"

namespace whale {

namespace {

volatile sig_atomic_t g_interrupted = 0;
void on_sigint(int) {
  g_interrupted = 1;
}

struct ChatOptions {
  std::string model_dir, system;
  float temperature = 0.6f, top_p = 0.95f;
  int top_k = 0, max_tokens = 4096;
  uint64_t seed = 0;
  bool seed_given = false, stats = false, no_cache_reuse = false;
};

// Writes the reply as it streams: the reasoning (ReasoningSplitter) apart from the answer.
class ReplyPrinter {
 public:
  ReplyPrinter(bool tty, bool thinking) : tty_(tty), splitter_(thinking) {}

  void push(std::string_view text) {
    show(splitter_.push(text));
    std::fflush(stdout);
  }

  void finish() {
    show(splitter_.finish());
    if (!at_line_start_) std::fputs("\n", stdout);
    at_line_start_ = true;
    std::fflush(stdout);
  }

 private:
  void show(const ReasoningSplitter::Delta& delta) {
    if (!delta.reasoning.empty()) write(delta.reasoning, true);
    if (!delta.content.empty()) {
      if (in_reasoning_ && !at_line_start_) std::fputs("\n", stdout);  // the answer on its own line
      if (in_reasoning_) at_line_start_ = true;
      in_reasoning_ = false;
      write(delta.content, false);
    }
  }
  void write(const std::string& text, bool reasoning) {
    in_reasoning_ = reasoning;
    std::string out;
    if (reasoning && !tty_) {  // "[thinking] " before every line
      for (char c : text) {
        if (at_line_start_) out += "[thinking] ";
        out += c;
        at_line_start_ = c == '\n';
      }
    } else {
      out = reasoning ? "\x1b[2m" + text + "\x1b[0m" : text;
      at_line_start_ = text.back() == '\n';
    }
    std::fwrite(out.data(), 1, out.size(), stdout);
  }

  bool tty_, at_line_start_ = true, in_reasoning_ = false;
  ReasoningSplitter splitter_;
};

std::string trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  size_t e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
}

// Drops every cached position from `length` on.
void truncate_cache(KVCache& cache, const ModelConfig& c, int length) {
  if (length >= cache.length) return;
  const size_t n = static_cast<size_t>(length);
  for (LayerCache& layer : cache.layers) {
    layer.kv.resize(std::min(layer.kv.size(), n * cache_width(c)));
    if (c.has_indexer()) {
      layer.index_keys.resize(std::min(layer.index_keys.size(), n * c.index_head_dim));
      layer.index_key_scales.resize(std::min(layer.index_key_scales.size(), n * index_blocks(c)));
    }
  }
  cache.length = length;
}

class ChatSession {
 public:
  explicit ChatSession(const ChatOptions& o) : options_(o) {
    const std::string& dir = o.model_dir;
    check(std::filesystem::is_directory(dir), dir + ": no such model folder");
    check(std::filesystem::exists(dir + "/tokenizer.json"),
          dir + ": no tokenizer.json (whale chat needs the model's tokenizer files)");
    tokenizer_ = text::Tokenizer::load(dir);
    if (tokenizer_->chat_template().empty()) {
      std::fprintf(stderr,
                   "whale chat: %s has no chat template; using a plain \"User: ...\\nAssistant:\" "
                   "format\n",
                   dir.c_str());
    } else {
      chat_template_ = text::ChatTemplate::for_tokenizer(*tokenizer_, dir);
    }
    model_ = Model::load(dir);
    const ModelConfig& c = model_->config();
    check(tokenizer_->vocab_size() <= c.vocab_size,
          dir + ": the tokenizer has " + std::to_string(tokenizer_->vocab_size()) +
              " ids but the model's vocabulary is " + std::to_string(c.vocab_size));
    cache_ = model_->new_cache();
    eos_ = c.eos_token_ids;
    if (tokenizer_->eos_id() >= 0) eos_.push_back(tokenizer_->eos_id());
    SamplingParams sampling;
    sampling.temperature = o.temperature;
    sampling.top_p = o.top_p;
    sampling.top_k = o.top_k;
    sampling.seed = o.seed_given ? o.seed : std::random_device{}();
    sampler_ = std::make_unique<Sampler>(sampling);
    if (!o.system.empty()) messages_.push_back({{"role", "system"}, {"content", o.system}});
  }

  void reset() {
    messages_.clear();
    if (!options_.system.empty())
      messages_.push_back({{"role", "system"}, {"content", options_.system}});
  }

  // One turn: the user's message in, the reply streamed to stdout.
  void turn(const std::string& user) {
    using clock = std::chrono::steady_clock;
    messages_.push_back({{"role", "user"}, {"content", user}});
    std::string rendered;
    std::vector<int> prompt;
    std::string stop;
    bool thinking = false;
    if (chat_template_) {
      rendered = chat_template_->render(messages_, true);
      prompt = tokenizer_->encode(rendered, false);
      thinking = rendered.ends_with("<think>\n") || rendered.ends_with("<think>");
    } else {
      for (const auto& m : messages_) {
        const std::string& role = m["role"].get_ref<const std::string&>();
        const std::string& content = m["content"].get_ref<const std::string&>();
        if (role == "system")
          rendered += content + "\n\n";
        else if (role == "user")
          rendered += "User: " + content + "\n";
        else
          rendered += "Assistant: " + content + "\n";
      }
      rendered += "Assistant:";
      if (tokenizer_->add_bos_token() && tokenizer_->bos_id() >= 0)
        prompt.push_back(tokenizer_->bos_id());
      std::vector<int> ids = tokenizer_->encode(rendered, false);
      prompt.insert(prompt.end(), ids.begin(), ids.end());
      stop = "\nUser:";
    }
    const ModelConfig& c = model_->config();
    if (static_cast<int>(prompt.size()) >= c.max_position_embeddings) {
      messages_.erase(messages_.end() - 1);
      throw Error("the conversation (" + std::to_string(prompt.size()) +
                  " tokens) fills the model's context of " +
                  std::to_string(c.max_position_embeddings) + "; /reset to start over");
    }

    // Reuse the cached positions the new prompt shares (at least its last token is run).
    size_t common = 0;
    if (!options_.no_cache_reuse)
      while (common < cached_.size() && common + 1 < prompt.size() &&
             cached_[common] == prompt[common])
        ++common;
    truncate_cache(cache_, c, static_cast<int>(common));
    cached_.resize(common);
    const size_t V = static_cast<size_t>(c.vocab_size);
    const int fresh = static_cast<int>(prompt.size() - common);
    std::vector<float> logits(static_cast<size_t>(fresh) * V);
    auto t0 = clock::now();
    model_->forward(prompt.data() + common, fresh, cache_, logits.data());
    cached_.insert(cached_.end(), prompt.begin() + common, prompt.end());
    std::vector<float> last(logits.end() - V, logits.end());
    auto t1 = clock::now();

    text::StreamDecoder decoder(*tokenizer_, true);
    StopFilter filter(stop.empty() ? std::vector<std::string>{} : std::vector<std::string>{stop});
    ReplyPrinter printer(isatty(1), thinking);
    std::string reply = thinking ? "<think>\n" : "";
    int generated = 0;
    bool stopped = false, interrupted = false, full = false;
    g_interrupted = 0;
    while (!stopped) {
      if (g_interrupted) {
        interrupted = true;
        break;
      }
      if (generated >= options_.max_tokens) break;
      if (cache_.length >= c.max_position_embeddings) {
        full = true;
        break;
      }
      int token = sampler_->sample(last.data(), c.vocab_size);
      if (std::find(eos_.begin(), eos_.end(), token) != eos_.end()) break;
      ++generated;
      std::string piece = decoder.push(token);
      std::string shown = filter.push(piece, stopped);
      reply += shown;
      printer.push(shown);
      if (stopped) break;
      model_->forward(&token, 1, cache_, last.data());
      cached_.push_back(token);
    }
    if (!stopped) {
      std::string rest = filter.push(decoder.finish(), stopped);
      if (!stopped) rest += filter.finish();
      reply += rest;
      printer.push(rest);
    }
    printer.finish();
    auto t2 = clock::now();
    if (interrupted) std::fprintf(stderr, "[stopped]\n");
    if (full) std::fprintf(stderr, "[the model's context is full; /reset to start over]\n");
    messages_.push_back({{"role", "assistant"}, {"content", chat_template_ ? reply : trim(reply)}});
    if (options_.stats) {
      double prefill = std::chrono::duration<double>(t1 - t0).count();
      double decode = std::chrono::duration<double>(t2 - t1).count();
      std::fprintf(stderr,
                   "[prompt %zu tokens (%zu reused, %d computed in %.2f s); reply %d tokens in "
                   "%.2f s (%.1f tok/s)]\n",
                   prompt.size(), common, fresh, prefill, generated, decode,
                   decode > 0 ? generated / decode : 0.0);
    }
  }

 private:
  ChatOptions options_;
  std::unique_ptr<text::Tokenizer> tokenizer_;
  std::unique_ptr<text::ChatTemplate> chat_template_;
  std::unique_ptr<Model> model_;
  std::unique_ptr<Sampler> sampler_;
  KVCache cache_;
  std::vector<int> cached_;  // the tokens whose positions cache_ holds
  std::vector<int> eos_;
  nlohmann::json messages_ = nlohmann::json::array();
};

}  // namespace

void add_chat_command(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "chat",
      "Talk with a model: streamed replies, reasoning shown apart; /reset clears the "
      "conversation, /exit or end of input quits, Ctrl-C stops the current reply");
  static ChatOptions o;
  cmd->add_option("--model", o.model_dir, "Model folder (with tokenizer.json)")->required();
  cmd->add_option("--temperature", o.temperature, "Sampling temperature (default 0.6; 0: greedy)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--top-p", o.top_p, "Nucleus sampling mass (default 0.95)")
      ->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--top-k", o.top_k, "Keep the k most likely tokens (default 0: all)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("-n,--max-tokens", o.max_tokens, "Most tokens per reply (default 4096)")
      ->check(CLI::PositiveNumber);
  auto* seed = cmd->add_option("--seed", o.seed, "Sampling seed (default: random)");
  cmd->add_option("--system", o.system, "System prompt");
  cmd->add_flag("--stats", o.stats, "After each reply, print token counts and speed on stderr");
  cmd->add_flag("--no-cache-reuse", o.no_cache_reuse,
                "Recompute the whole conversation every turn (for checking)")
      ->group("");
  cmd->callback([seed] {
    o.seed_given = seed->count() > 0;
    ChatSession session(o);
    struct sigaction action = {};
    action.sa_handler = on_sigint;
    sigemptyset(&action.sa_mask);
    action.sa_flags = SA_RESTART;
    sigaction(SIGINT, &action, nullptr);
    const bool interactive = isatty(0);
    if (interactive)
      std::fprintf(stderr,
                   "whale chat: %s. /reset clears the conversation, /exit or Ctrl-D quits, "
                   "Ctrl-C stops a reply.\n",
                   o.model_dir.c_str());
    std::string line;
    for (;;) {
      if (interactive) {
        std::fputs(">>> ", stdout);
        std::fflush(stdout);
      }
      if (!std::getline(std::cin, line)) break;
      std::string input = trim(line);
      if (input.empty()) continue;
      if (input == "/exit" || input == "/quit") break;
      if (input == "/reset") {
        session.reset();
        std::puts("[conversation cleared]");
        std::fflush(stdout);
        continue;
      }
      try {
        session.turn(input);
      } catch (const Error& e) {
        std::fprintf(stderr, "whale: error: %s\n", e.what());
      }
    }
    if (interactive) std::fputs("\n", stdout);
  });
}

}  // namespace whale
