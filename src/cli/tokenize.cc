// whale tokenize: text ↔ ids with a Hugging Face tokenizer folder, for scripts and checks.
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "base/error.h"
#include "cli/commands.h"
#include "text/chat_template.h"
#include "text/tokenizer.h"

namespace whale {

namespace {

struct TokenizeOptions {
  std::string dir;
  bool decode = false, jsonl = false, chat = false, no_special = false, skip_special = false;
  std::string bench_file;
  int bench_passes = 3;
};

std::string read_stdin() {
  std::ostringstream buffer;
  buffer << std::cin.rdbuf();
  return buffer.str();
}

void print_ids(const std::vector<int>& ids) {
  std::string line;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i) line += ' ';
    line += std::to_string(ids[i]);
  }
  line += '\n';
  std::fwrite(line.data(), 1, line.size(), stdout);
}

// Parses one JSONL line, naming the line on failure.
nlohmann::json parse_line(const std::string& line, size_t number) {
  try {
    return nlohmann::json::parse(line);
  } catch (const nlohmann::json::exception& e) {
    throw Error("stdin line " + std::to_string(number) + " is not JSON: " + e.what());
  }
}

// Encodes every {"text": ...} document of a JSONL file `passes` times; prints the rate of each
// pass (the first one starts with an empty cache) as one JSON line. Used by bench/tokenizer.
void run_bench(const text::Tokenizer& tokenizer, const std::string& path, int passes) {
  std::ifstream in(path);
  check(in.good(), "cannot read " + path);
  std::vector<std::string> texts;
  size_t bytes = 0, number = 0;
  for (std::string line; std::getline(in, line);) {
    ++number;
    if (line.empty()) continue;
    nlohmann::json record = parse_line(line, number);
    check(record.is_object() && record.contains("text") && record["text"].is_string(),
          path + " line " + std::to_string(number) + " has no \"text\" string");
    texts.push_back(record["text"].get<std::string>());
    bytes += texts.back().size();
  }
  nlohmann::json rates = nlohmann::json::array();
  size_t tokens = 0;
  for (int pass = 0; pass < passes; ++pass) {
    tokens = 0;
    auto start = std::chrono::steady_clock::now();
    for (const std::string& t : texts) tokens += tokenizer.encode(t).size();
    double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    rates.push_back(bytes / 1e6 / seconds);
  }
  nlohmann::json report = {{"bytes", bytes}, {"tokens", tokens}, {"mb_per_s", rates}};
  std::printf("%s\n", report.dump().c_str());
}

// One --jsonl / --chat request line → its reply object.
nlohmann::json answer(const nlohmann::json& request, const std::string& where,
                      const text::Tokenizer& tokenizer, const text::ChatTemplate* chat_template,
                      const TokenizeOptions& options) {
  nlohmann::json reply;
  if (chat_template) {
    check(request.contains("messages"), where + " has no \"messages\"");
    check(
        !request.contains("add_generation_prompt") || request["add_generation_prompt"].is_boolean(),
        where + ": \"add_generation_prompt\" must be true or false");
    bool add_generation_prompt = request.value("add_generation_prompt", false);
    std::string rendered = chat_template->render(request["messages"], add_generation_prompt);
    // The rendered text already holds the BOS, as transformers' apply_chat_template.
    reply = {{"text", rendered}, {"ids", tokenizer.encode(rendered, false)}};
  } else if (options.decode) {
    check(request.contains("ids") && request["ids"].is_array(), where + " has no \"ids\" array");
    std::vector<int> ids;
    for (const auto& id : request["ids"]) {
      check(id.is_number_integer(), where + ": ids must be integers");
      ids.push_back(id.get<int>());
    }
    reply = {{"text", tokenizer.decode(ids, options.skip_special)}};
  } else {
    check(request.contains("text") && request["text"].is_string(),
          where + " has no \"text\" string");
    reply = {{"ids", tokenizer.encode(request["text"].get<std::string>(), !options.no_special)}};
  }
  return reply;
}

}  // namespace

void add_tokenize_command(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "tokenize",
      "Text on stdin (all of it, byte for byte: a final newline is part of the text) → token "
      "ids on one line, space-separated; or ids → text with --decode. Invalid UTF-8 is read "
      "as U+FFFD, one per ill-formed sequence");
  static TokenizeOptions options;
  cmd->add_option("--tokenizer", options.dir,
                  "Folder with tokenizer.json (+ tokenizer_config.json)")
      ->required();
  cmd->add_flag("--decode", options.decode, "Ids on stdin (spaces, commas or newlines) → text");
  cmd->add_flag("--jsonl", options.jsonl,
                "Each input line {\"text\": ...} → {\"ids\": [...]} (with --decode: "
                "{\"ids\": [...]} → {\"text\": ...})");
  cmd->add_flag("--chat", options.chat,
                "Each input line {\"messages\": [...], \"add_generation_prompt\": bool} → "
                "{\"text\": rendered, \"ids\": [...]}");
  cmd->add_flag("--no-special", options.no_special,
                "Do not add the post-processor's special tokens (e.g. a leading BOS)");
  cmd->add_flag("--skip-special", options.skip_special, "With --decode: leave special tokens out");
  cmd->add_option("--bench", options.bench_file,
                  "Time encoding the {\"text\"} lines of this JSONL file (no stdin); prints MB/s");
  cmd->add_option("--passes", options.bench_passes, "Passes over the --bench file (default 3)")
      ->check(CLI::PositiveNumber);
  cmd->callback([] {
    const TokenizeOptions& o = options;
    check(!(o.chat && o.decode), "--chat and --decode cannot be combined");
    auto tokenizer = text::Tokenizer::load(o.dir);
    if (!o.bench_file.empty()) return run_bench(*tokenizer, o.bench_file, o.bench_passes);

    if (!o.jsonl && !o.chat) {
      std::string input = read_stdin();
      if (o.decode) {
        // No ids at all decode to no text (parse_token_list rejects an empty list).
        if (input.find_first_not_of(" ,\t\r\n") == std::string::npos) return;
        std::vector<int> ids = parse_token_list(input);
        std::string out = tokenizer->decode(ids, o.skip_special);
        std::fwrite(out.data(), 1, out.size(), stdout);
      } else {
        print_ids(tokenizer->encode(input, !o.no_special));
      }
      return;
    }

    std::unique_ptr<text::ChatTemplate> chat_template;
    if (o.chat) chat_template = text::ChatTemplate::for_tokenizer(*tokenizer, o.dir);
    // Line by line, each reply written as soon as it is ready: works as a pipe, any size.
    std::ios::sync_with_stdio(false);
    std::string line;
    for (size_t number = 1; std::getline(std::cin, line); ++number) {
      if (line.empty()) continue;
      nlohmann::json request = parse_line(line, number);
      std::string where = "stdin line " + std::to_string(number);
      nlohmann::json reply;
      try {
        reply = answer(request, where, *tokenizer, chat_template.get(), o);
      } catch (const nlohmann::json::exception& e) {
        throw Error(where + ": " + e.what());
      }
      // Replace, not throw, if decoded text is not valid UTF-8 (it always is; belt and braces).
      std::string out = reply.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
      out += '\n';
      std::fwrite(out.data(), 1, out.size(), stdout);
      std::fflush(stdout);
    }
  });
}

}  // namespace whale
