#include "train/data.h"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "base/error.h"
#include "base/file.h"
#include "base/progress.h"
#include "text/tokenizer.h"
#include "text/unicode.h"

namespace whale {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

std::vector<uint32_t> read_tokens(const std::string& path) {
  std::string bytes = read_file(path);
  check(bytes.size() % 4 == 0, path + ": size is not a multiple of 4 (uint32 tokens)");
  std::vector<uint32_t> tokens(bytes.size() / 4);
  std::memcpy(tokens.data(), bytes.data(), bytes.size());
  return tokens;
}

uint64_t mix(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ull;
  return x ^ (x >> 33);
}

}  // namespace

TokenData TokenData::load(const std::string& dir) {
  std::string meta_path = dir + "/data.json";
  check(fs::exists(meta_path),
        dir + ": no data.json (make one with `whale data prepare` or `whale data synth`)");
  json meta;
  try {
    meta = json::parse(read_file(meta_path));
  } catch (const json::exception& e) {
    throw Error(meta_path + ": not valid JSON (" + e.what() + ")");
  }
  TokenData d;
  try {
    d.vocab_size = meta.at("vocab_size").get<int>();
    d.bos_token_id = meta.value("bos_token_id", -1);
    d.eos_token_id = meta.value("eos_token_id", -1);
  } catch (const json::exception& e) {
    throw Error(meta_path + ": " + e.what());
  }
  d.train = read_tokens(dir + "/train.bin");
  d.val = read_tokens(dir + "/val.bin");
  for (auto* part : {&d.train, &d.val})
    for (uint32_t t : *part)
      check(t < static_cast<uint32_t>(d.vocab_size), dir + ": token id " + std::to_string(t) +
                                                         " is not below vocab_size " +
                                                         std::to_string(d.vocab_size));
  check(!d.train.empty(), dir + ": train.bin is empty");
  return d;
}

void prepare_data(const text::Tokenizer& tokenizer, const std::string& tokenizer_dir,
                  const std::vector<std::string>& inputs, const std::string& out_dir,
                  const PrepareOptions& options) {
  check(!inputs.empty(), "data prepare: no input files");
  check(options.val_fraction >= 0 && options.val_fraction < 1, "--val-fraction must be in [0, 1)");
  size_t total_bytes = 0;
  for (auto& f : inputs) {
    check(fs::is_regular_file(f), f + ": no such file");
    total_bytes += fs::file_size(f);
  }
  fs::create_directories(out_dir);
  const int bos = tokenizer.bos_id(), eos = tokenizer.eos_id();
  AtomicFileWriter train(out_dir + "/train.bin"), val(out_dir + "/val.bin");
  size_t n_train = 0, n_val = 0, documents = 0;
  Progress progress(options.progress ? "tokenize" : "", total_bytes, "B");
  std::vector<uint32_t> ids;
  auto add_document = [&](const std::string& text) {
    if (text.empty()) return;
    ids.clear();
    if (bos >= 0) ids.push_back(bos);
    for (int id : tokenizer.encode(text, false)) ids.push_back(static_cast<uint32_t>(id));
    if (eos >= 0) ids.push_back(eos);
    bool to_val = (mix(documents++) % 1000000) < options.val_fraction * 1000000;
    (to_val ? val : train).write(ids.data(), ids.size() * 4);
    (to_val ? n_val : n_train) += ids.size();
  };
  for (const std::string& path : inputs) {
    std::ifstream in(path, std::ios::binary);
    check(in.good(), "cannot open " + path);
    std::string line, document;
    const bool jsonl = path.ends_with(".jsonl");
    size_t line_number = 0;
    while (std::getline(in, line)) {
      ++line_number;
      progress.advance(line.size() + 1);
      if (jsonl) {
        if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
        json j;
        try {
          j = json::parse(line);
        } catch (const json::exception& e) {
          throw Error(path + ":" + std::to_string(line_number) + ": not valid JSON");
        }
        check(j.is_object() && j.contains("text") && j["text"].is_string(),
              path + ":" + std::to_string(line_number) + ": expected {\"text\": \"...\"}");
        add_document(j["text"].get<std::string>());
      } else if (line.empty()) {
        add_document(document);
        document.clear();
      } else {
        if (!document.empty()) document += '\n';
        document += line;
      }
    }
    if (!jsonl) add_document(document);
  }
  progress.finish();
  check(n_train > 0, "data prepare: no training tokens (are the inputs empty?)");
  train.commit();
  val.commit();
  json meta = {{"format", "whale-tokens-v1"}, {"vocab_size", tokenizer.vocab_size()},
               {"bos_token_id", bos},         {"eos_token_id", eos},
               {"train_tokens", n_train},     {"val_tokens", n_val},
               {"documents", documents},      {"tokenizer", fs::absolute(tokenizer_dir).string()}};
  write_file_atomic(out_dir + "/data.json", meta.dump(2) + "\n");
}

std::string synthetic_corpus(size_t bytes, uint64_t seed) {
  static const char* kNames[] = {"Ada", "Ben", "Cleo", "Dev",  "Ema",  "Finn", "Gus",  "Hana",
                                 "Ivo", "Jun", "Kai",  "Lena", "Milo", "Nia",  "Omar", "Pia"};
  static const char* kItems[] = {"apples", "books",   "coins",   "shells",
                                 "stamps", "marbles", "pencils", "cards"};
  static const char* kPlaces[] = {"small village",    "big city",   "quiet forest",
                                  "house by the sea", "tall tower", "green valley"};
  static const char* kActs[] = {"read a book",       "walked to the market", "fed the birds",
                                "painted the fence", "sang a song",          "baked bread"};
  static const char* kFinds[] = {"a red box",    "an old map",  "a lost cat",
                                 "a silver key", "a tiny boat", "a strange stone"};
  std::mt19937_64 rng(seed);
  auto pick = [&](auto& list) { return list[rng() % (sizeof(list) / sizeof(list[0]))]; };
  auto num = [&](int lo, int hi) { return lo + static_cast<int>(rng() % (hi - lo + 1)); };
  std::ostringstream out;
  while (static_cast<size_t>(out.tellp()) < bytes) {
    switch (rng() % 3) {
      case 0: {  // arithmetic facts
        int lines = num(3, 6);
        for (int i = 0; i < lines; ++i) {
          int a = num(0, 99), b = num(0, 99);
          switch (rng() % 3) {
            case 0:
              out << a << " + " << b << " = " << a + b << "\n";
              break;
            case 1:
              out << std::max(a, b) << " - " << std::min(a, b) << " = "
                  << std::max(a, b) - std::min(a, b) << "\n";
              break;
            default:
              a %= 13;
              b %= 13;
              out << a << " * " << b << " = " << a * b << "\n";
              break;
          }
        }
        break;
      }
      case 1: {  // a word problem and its answer
        const char* who = pick(kNames);
        const char* other = pick(kNames);
        const char* item = pick(kItems);
        int a = num(1, 20), b = num(1, 20);
        if (rng() % 2) {
          out << who << " has " << a << " " << item << ". " << other << " gives " << who << " " << b
              << " more. How many " << item << " does " << who << " have now? " << who << " has "
              << a + b << " " << item << ".\n";
        } else {
          int c = a + b;
          out << who << " has " << c << " " << item << ". " << who << " gives " << b << " to "
              << other << ". How many " << item << " does " << who << " have now? " << who
              << " has " << a << " " << item << ".\n";
        }
        break;
      }
      default: {  // a small story
        const char* who = pick(kNames);
        out << "Once upon a time, " << who << " lived in a " << pick(kPlaces) << ". Every day "
            << who << " " << pick(kActs) << ". One day " << who << " found " << pick(kFinds) << ". "
            << who << " was very happy and " << pick(kActs) << " again.\n";
        break;
      }
    }
    out << "\n";
  }
  return out.str();
}

namespace {
// The printable character that ByteLevel pre-tokenizers use for byte b (GPT-2's map).
std::string byte_char(int b) {
  std::string s;
  text::append_utf8(s, text::byte_to_unicode()[b]);
  return s;
}
const char* kBos =
    "<\xef\xbd\x9c"
    "begin\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>";
const char* kEos =
    "<\xef\xbd\x9c"
    "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>";
}  // namespace

std::string byte_level_tokenizer_json() {
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[byte_char(b)] = b;
  auto added = [](int id, const char* content) {
    return json{{"id", id},        {"content", content},  {"single_word", false}, {"lstrip", false},
                {"rstrip", false}, {"normalized", false}, {"special", true}};
  };
  json tokenizer = {{"version", "1.0"},
                    {"truncation", nullptr},
                    {"padding", nullptr},
                    {"added_tokens", {added(256, kBos), added(257, kEos)}},
                    {"normalizer", nullptr},
                    {"pre_tokenizer",
                     {{"type", "ByteLevel"},
                      {"add_prefix_space", false},
                      {"trim_offsets", true},
                      {"use_regex", false}}},
                    {"post_processor", nullptr},
                    {"decoder",
                     {{"type", "ByteLevel"},
                      {"add_prefix_space", true},
                      {"trim_offsets", true},
                      {"use_regex", true}}},
                    {"model",
                     {{"type", "BPE"},
                      {"dropout", nullptr},
                      {"unk_token", nullptr},
                      {"continuing_subword_prefix", nullptr},
                      {"end_of_word_suffix", nullptr},
                      {"fuse_unk", false},
                      {"byte_fallback", false},
                      {"vocab", vocab},
                      {"merges", json::array()}}}};
  return tokenizer.dump(2) + "\n";
}

std::string byte_level_tokenizer_config_json() {
  json config = {{"add_bos_token", true},     {"add_eos_token", false},
                 {"bos_token", kBos},         {"eos_token", kEos},
                 {"model_max_length", 16384}, {"tokenizer_class", "LlamaTokenizerFast"}};
  return config.dump(2) + "\n";
}

void sample_batch(const std::vector<uint32_t>& tokens, int B, int T, uint64_t seed, uint64_t step,
                  int* out) {
  check(tokens.size() >= static_cast<size_t>(T),
        "data has fewer tokens (" + std::to_string(tokens.size()) + ") than the sequence length " +
            std::to_string(T));
  const uint64_t span = tokens.size() - T + 1;
  for (int b = 0; b < B; ++b) {
    uint64_t start = mix(seed * 0x9e3779b97f4a7c15ull + step * 1000003ull + b) % span;
    for (int t = 0; t < T; ++t) out[b * T + t] = static_cast<int>(tokens[start + t]);
  }
}

double unigram_entropy(const std::vector<uint32_t>& tokens) {
  std::map<uint32_t, size_t> counts;
  for (uint32_t t : tokens) counts[t]++;
  double h = 0, n = static_cast<double>(tokens.size());
  for (auto& [t, c] : counts) h -= c / n * std::log(c / n);
  return h;
}

}  // namespace whale
