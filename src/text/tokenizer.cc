#include "text/tokenizer.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <deque>
#include <filesystem>
#include <limits>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <unordered_map>

#include "base/error.h"
#include "base/file.h"
#include "text/bpe_tables.h"
#include "text/regex.h"
#include "text/unicode.h"

namespace whale::text {

namespace {

using json = nlohmann::json;

// GPT-2's pre-tokenizer regex, used by a ByteLevel pre-tokenizer with use_regex=true.
constexpr const char* kGpt2Pattern =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

// Pre-tokens up to this many bytes have their ids cached; longer ones are rare and costly to
// store.
constexpr size_t kMaxCachedLength = 64;
constexpr int64_t kMaxTokenId = 1 << 24;
// Words with more symbols than this merge with a heap instead of repeated linear scans.
constexpr size_t kLinearMergeLimit = 48;

// Unicode White_Space (Rust's char::is_whitespace), for added tokens' lstrip/rstrip.
bool is_white_space(char32_t c) {
  return (c >= 0x9 && c <= 0xD) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
         c == 0x3000;
}

// The raw bytes a token string spells in the byte-level alphabet, if it is written in it.
std::optional<std::string> byte_level_bytes(std::string_view token) {
  std::string out;
  for (size_t i = 0; i < token.size();) {
    size_t n = valid_sequence_length(token, i);
    int b = n ? unicode_to_byte(decode_code_point(token, i, n)) : -1;
    if (b < 0) return std::nullopt;
    out.push_back(static_cast<char>(b));
    i += n;
  }
  return out;
}

// What a ByteLevel decoder turns a token string into: the bytes its characters stand for, or,
// if any character is outside the byte-level alphabet, the token's own UTF-8 (as HF does).
std::string from_byte_level(std::string_view token) {
  return byte_level_bytes(token).value_or(std::string(token));
}

enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

struct PreTokenizerStep {
  std::unique_ptr<Regex> regex;  // null: no split (a ByteLevel step without use_regex)
  SplitBehavior behavior = SplitBehavior::kIsolated;
  bool invert = false;
  bool add_prefix_space = false;  // ByteLevel: prepend " " to each piece not starting with one
  bool byte_level = false;        // after this step pieces are bytes to merge: it comes last
};

struct NormalizerStep {
  enum class Kind { kNfc, kNfd, kPrepend, kReplace } kind;
  std::string argument, replacement;
};

// A possible merge in a long word: min-heap order is (rank, position).
struct MergeCandidate {
  uint32_t rank;
  uint32_t position;
  int32_t result;
  bool operator>(const MergeCandidate& o) const {
    return rank != o.rank ? rank > o.rank : position > o.position;
  }
};

// A stretch of text: an added token (token >= 0) or text still to be tokenized.
struct Segment {
  size_t begin, end;
  int token;
};

// One element of a TemplateProcessing "single" template: the ids of a special token, or the
// text's own ids when `ids` is empty.
struct TemplateItem {
  std::vector<int> ids;
  bool is_sequence = false;
};

std::string where(const std::string& source, const std::string& field) {
  return source + ": " + field;
}

const json& require(const json& object, const char* key, const std::string& source,
                    const std::string& path) {
  check(object.is_object() && object.contains(key),
        where(source, path) + " has no \"" + key + "\" field");
  return object.at(key);
}

// bos_token / eos_token in tokenizer_config.json: a string or an AddedToken object.
std::string token_text(const json& value) {
  if (value.is_string()) return value.get<std::string>();
  if (value.is_object() && value.contains("content") && value["content"].is_string())
    return value["content"].get<std::string>();
  return "";
}

// model.vocab and model.merges, taken out of the JSON while it is parsed: building them as
// nlohmann DOM nodes (a std::map of ~150k entries) would cost most of the load time.
struct StreamedModel {
  std::vector<std::pair<std::string, json>> vocab;  // token → id (checked later)
  struct Merge {
    std::string first, second;  // "a b" in `first` alone, or the pair ["a", "b"]
    bool is_pair = false;
    bool malformed = false;
  };
  std::vector<Merge> merges;
  bool in_pair = false;
  int pair_items = 0;
};

// A parser callback that moves model.vocab entries and model.merges items into `model`
// (and leaves the DOM's vocab and merges empty), tracking where it is by the keys of the
// enclosing containers.
json parse_tokenizer_json(const std::string& text, StreamedModel& model) {
  std::vector<std::string> path;
  std::string key;
  auto at = [&](std::initializer_list<const char*> expected) {
    if (path.size() != expected.size()) return false;
    size_t i = 0;
    for (const char* e : expected)
      if (path[i++] != e) return false;
    return true;
  };
  return json::parse(text, [&](int, json::parse_event_t event, json& parsed) {
    switch (event) {
      case json::parse_event_t::key:
        key = parsed.get<std::string>();
        return !at({"", "model", "vocab"});  // not even a placeholder entry in the DOM
      case json::parse_event_t::object_start:
      case json::parse_event_t::array_start:
        if (at({"", "model", "merges"})) {  // a merge written as ["a", "b"]
          model.merges.push_back({"", "", true, false});
          model.in_pair = true;
          model.pair_items = 0;
        }
        path.push_back(key);
        key.clear();
        return true;
      case json::parse_event_t::object_end:
      case json::parse_event_t::array_end:
        path.pop_back();
        if (model.in_pair && at({"", "model", "merges"})) {
          if (model.pair_items != 2) model.merges.back().malformed = true;
          model.in_pair = false;
          return false;  // the pair is recorded; drop its (empty) array
        }
        return true;
      case json::parse_event_t::value:
        if (at({"", "model", "vocab"})) {
          model.vocab.emplace_back(std::move(key), std::move(parsed));
          return false;
        }
        if (at({"", "model", "merges"})) {
          if (parsed.is_string())
            model.merges.push_back({parsed.get<std::string>(), "", false, false});
          else
            model.merges.push_back({"", "", false, true});
          return false;
        }
        if (model.in_pair && at({"", "model", "merges", ""})) {
          StreamedModel::Merge& m = model.merges.back();
          int item = model.pair_items++;
          if (!parsed.is_string() || item > 1)
            m.malformed = true;
          else
            (item == 0 ? m.first : m.second) = parsed.get<std::string>();
          return false;
        }
        return true;
    }
    return true;
  });
}

}  // namespace

struct Tokenizer::Impl {
  std::string source;  // file name for error messages

  // Model: vocabulary in both directions, merges, the id of each single byte.
  StringIdMap vocab;                  // byte-level spelling → id
  StringIdMap vocab_by_bytes;         // raw bytes → id
  std::vector<std::string> bytes_of;  // id → raw bytes
  std::vector<bool> id_exists;
  std::array<int, 256> byte_id{};
  MergeTable merges;
  bool ignore_merges = false;
  int unk_id = -1;

  std::vector<AddedToken> added;
  std::unordered_map<std::string, int> added_by_content;
  std::vector<bool> special;
  AddedTokenTrie raw_trie, normalized_trie;

  std::vector<NormalizerStep> normalizer;
  std::vector<PreTokenizerStep> pre_tokenizer;
  std::vector<TemplateItem> single_template;  // empty: nothing added

  std::string bos_token, eos_token, chat_template;
  int bos_id = -1, eos_id = -1;
  bool add_bos_token = false;

  // Encoding state, reused between calls under the mutex.
  mutable std::mutex mutex;
  mutable WordCache cache;
  mutable std::vector<Segment> raw_segments, normalized_segments;
  mutable std::vector<std::string_view> pieces, next_pieces;
  mutable std::deque<std::string> owned_pieces;
  mutable std::vector<Regex::Match> matches;
  mutable std::vector<int> word_ids;
  mutable std::vector<int32_t> merge_prev, merge_next;
  mutable std::vector<MergeCandidate> merge_heap;

  void load_model(const json& model, StreamedModel& streamed);
  void load_added_tokens(const json& list);
  void load_normalizer(const json& node, const std::string& path);
  void load_pre_tokenizer(const json& node, const std::string& path);
  void load_post_processor(const json& node, const std::string& path);
  void check_decoder(const json& node, const std::string& path) const;
  void load_config(const json& config, const std::string& config_source);

  std::string normalize(std::string_view text) const;
  void find_added_tokens(std::string_view text, const AddedTokenTrie& trie,
                         std::vector<Segment>& out) const;
  void encode_text(std::string_view text, std::vector<int>& ids) const;
  void split(const PreTokenizerStep& step) const;
  void encode_word(std::string_view word, std::vector<int>& ids) const;
  void merge_word(std::string_view word, std::vector<int>& ids) const;
};

void Tokenizer::Impl::load_model(const json& model, StreamedModel& streamed) {
  std::string type = model.value("type", "BPE");
  check(type == "BPE", where(source, "model.type") + " is \"" + type +
                           "\"; only byte-level BPE tokenizers are supported");
  for (const char* affix : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    const json& v = model.contains(affix) ? model[affix] : json();
    check(v.is_null() || v == "",
          where(source, std::string("model.") + affix) + " is set; byte-level BPE does not use it");
  }
  check(!model.value("byte_fallback", false),
        where(source, "model.byte_fallback") + " is true; it is not supported");
  const json& dropout = model.contains("dropout") ? model["dropout"] : json();
  check(dropout.is_null() || dropout.get<double>() == 0.0,
        where(source, "model.dropout") + " is set; BPE dropout is not supported");
  ignore_merges = model.value("ignore_merges", false);

  check(require(model, "vocab", source, "model").is_object(),
        where(source, "model.vocab") + " is not an object");
  vocab.reserve(streamed.vocab.size());
  vocab_by_bytes.reserve(streamed.vocab.size());
  int max_id = -1;
  for (const auto& [token, id_json] : streamed.vocab) {
    // Ids index flat tables: bound them well above any real vocabulary (~150k).
    check(id_json.is_number_integer() && id_json.get<int64_t>() >= 0 &&
              id_json.get<int64_t>() < kMaxTokenId,
          where(source, "model.vocab[\"" + token + "\"]") + " is not an id in [0, 2^24)");
    int id = id_json.get<int>();
    vocab.insert_or_assign(token, id);
    max_id = std::max(max_id, id);
  }
  streamed.vocab.clear();
  bytes_of.resize(max_id + 1);
  id_exists.assign(max_id + 1, false);
  vocab.for_each([&](std::string_view token, int id) {
    std::optional<std::string> bytes = byte_level_bytes(token);
    bytes_of[id] = bytes ? *bytes : std::string(token);
    id_exists[id] = true;
    // Only true byte-level spellings can equal a pre-token (for ignore_merges).
    if (bytes) vocab_by_bytes.insert_or_assign(*bytes, id);
  });
  for (int b = 0; b < 256; ++b) {
    std::string spelling;
    append_utf8(spelling, byte_to_unicode()[b]);
    byte_id[b] = vocab.find(spelling);
  }
  const json& unk = model.contains("unk_token") ? model["unk_token"] : json();
  if (unk.is_string()) {
    unk_id = vocab.find(unk.get<std::string>());
    check(unk_id >= 0, where(source, "model.unk_token") + " is not in the vocabulary");
  }

  check(require(model, "merges", source, "model").is_array(),
        where(source, "model.merges") + " is not an array");
  merges.reserve(streamed.merges.size());
  auto id_of = [&](std::string_view token, size_t rank) {
    int id = vocab.find(token);
    check(id >= 0, where(source, "model.merges[" + std::to_string(rank) + "]") + ": \"" +
                       std::string(token) + "\" is not in the vocabulary");
    return id;
  };
  std::string joined;
  for (size_t rank = 0; rank < streamed.merges.size(); ++rank) {
    const StreamedModel::Merge& m = streamed.merges[rank];
    std::string_view left = m.first, right = m.second;
    if (!m.is_pair && !m.malformed) {  // "a b"
      size_t space = left.find(' ');
      check(space != std::string::npos && left.find(' ', space + 1) == std::string::npos,
            where(source, "model.merges[" + std::to_string(rank) + "]") +
                " is not two tokens separated by one space");
      right = left.substr(space + 1);
      left = left.substr(0, space);
    }
    check(!m.malformed, where(source, "model.merges[" + std::to_string(rank) + "]") +
                            " is neither \"a b\" nor [\"a\", \"b\"]");
    int left_id = id_of(left, rank), right_id = id_of(right, rank);
    joined.assign(left).append(right);
    merges.insert(left_id, right_id, {static_cast<uint32_t>(rank), id_of(joined, rank)});
  }
  streamed.merges.clear();
}

void Tokenizer::Impl::load_added_tokens(const json& list) {
  if (list.is_null()) return;
  check(list.is_array(), where(source, "added_tokens") + " is not an array");
  int max_added_id = -1;
  for (size_t i = 0; i < list.size(); ++i) {
    const json& t = list[i];
    std::string path = "added_tokens[" + std::to_string(i) + "]";
    AddedToken token;
    token.id = require(t, "id", source, path).get<int>();
    token.content = require(t, "content", source, path).get<std::string>();
    token.special = t.value("special", false);
    token.normalized = t.value("normalized", !token.special);
    token.lstrip = t.value("lstrip", false);
    token.rstrip = t.value("rstrip", false);
    check(!t.value("single_word", false),
          where(source, path + ".single_word") + " is true; it is not supported");
    check(token.id >= 0 && token.id < kMaxTokenId,
          where(source, path + ".id") + " is not an id in [0, 2^24)");
    // HF ignores empty tokens and a repeated content (the first one wins).
    if (token.content.empty() || added_by_content.count(token.content)) continue;
    // HF does not trust the file's id: a token already in the model vocabulary gets that id,
    // a new one the next id after the vocabulary (and the added tokens so far). For real
    // tokenizer.json files both agree.
    int in_vocab = vocab.find(token.content);
    if (in_vocab >= 0) {
      token.id = in_vocab;
    } else {
      int model_size = static_cast<int>(vocab.size());
      token.id = model_size;
      if (max_added_id >= 0 && (max_added_id >= model_size || model_size == 0))
        token.id = max_added_id + 1;
    }
    max_added_id = std::max(max_added_id, token.id);
    added_by_content[token.content] = token.id;
    added.push_back(std::move(token));
  }
  int max_id = static_cast<int>(bytes_of.size()) - 1;
  for (const AddedToken& t : added) max_id = std::max(max_id, t.id);
  bytes_of.resize(max_id + 1);
  id_exists.resize(max_id + 1, false);
  special.assign(max_id + 1, false);
  for (const AddedToken& t : added) {
    bytes_of[t.id] = from_byte_level(t.content);
    id_exists[t.id] = true;
    special[t.id] = t.special;
  }
}

void Tokenizer::Impl::load_normalizer(const json& node, const std::string& path) {
  if (node.is_null()) return;
  std::string type = require(node, "type", source, path).get<std::string>();
  if (type == "Sequence") {
    const json& list = require(node, "normalizers", source, path);
    for (size_t i = 0; i < list.size(); ++i)
      load_normalizer(list[i], path + ".normalizers[" + std::to_string(i) + "]");
  } else if (type == "NFC") {
    normalizer.push_back({NormalizerStep::Kind::kNfc, "", ""});
  } else if (type == "NFD") {
    normalizer.push_back({NormalizerStep::Kind::kNfd, "", ""});
  } else if (type == "Prepend") {
    normalizer.push_back(
        {NormalizerStep::Kind::kPrepend, require(node, "prepend", source, path), ""});
  } else if (type == "Replace") {
    const json& pattern = require(node, "pattern", source, path);
    check(pattern.contains("String"),
          where(source, path + ".pattern") + ": only String patterns are supported");
    normalizer.push_back({NormalizerStep::Kind::kReplace, pattern["String"],
                          require(node, "content", source, path)});
  } else {
    throw Error(where(source, path) + ": normalizer \"" + type + "\" is not supported");
  }
}

void Tokenizer::Impl::load_pre_tokenizer(const json& node, const std::string& path) {
  check(!node.is_null(), where(source, path) + " is missing; byte-level BPE needs ByteLevel");
  std::string type = require(node, "type", source, path).get<std::string>();
  if (type == "Sequence") {
    const json& list = require(node, "pretokenizers", source, path);
    for (size_t i = 0; i < list.size(); ++i)
      load_pre_tokenizer(list[i], path + ".pretokenizers[" + std::to_string(i) + "]");
    return;
  }
  check(pre_tokenizer.empty() || !pre_tokenizer.back().byte_level,
        where(source, path) + ": nothing may follow the ByteLevel pre-tokenizer");
  PreTokenizerStep step;
  if (type == "Split") {
    const json& pattern = require(node, "pattern", source, path);
    std::string regex;
    if (pattern.contains("Regex")) {
      regex = pattern["Regex"].get<std::string>();
    } else {
      check(pattern.contains("String"),
            where(source, path + ".pattern") + " is neither Regex nor String");
      regex = "\\Q" + pattern["String"].get<std::string>() + "\\E";
    }
    step.regex = std::make_unique<Regex>(regex);
    std::string behavior = require(node, "behavior", source, path).get<std::string>();
    if (behavior == "Removed")
      step.behavior = SplitBehavior::kRemoved;
    else if (behavior == "Isolated")
      step.behavior = SplitBehavior::kIsolated;
    else if (behavior == "MergedWithPrevious")
      step.behavior = SplitBehavior::kMergedWithPrevious;
    else if (behavior == "MergedWithNext")
      step.behavior = SplitBehavior::kMergedWithNext;
    else if (behavior == "Contiguous")
      step.behavior = SplitBehavior::kContiguous;
    else
      throw Error(where(source, path + ".behavior") + ": unknown \"" + behavior + "\"");
    step.invert = node.value("invert", false);
  } else if (type == "ByteLevel") {
    step.add_prefix_space = node.value("add_prefix_space", true);
    if (node.value("use_regex", true)) step.regex = std::make_unique<Regex>(kGpt2Pattern);
    step.byte_level = true;
  } else {
    throw Error(where(source, path) + ": pre-tokenizer \"" + type + "\" is not supported");
  }
  pre_tokenizer.push_back(std::move(step));
}

void Tokenizer::Impl::load_post_processor(const json& node, const std::string& path) {
  if (node.is_null()) return;
  std::string type = require(node, "type", source, path).get<std::string>();
  if (type == "ByteLevel") return;  // only adjusts offsets
  if (type == "Sequence") {
    const json& list = require(node, "processors", source, path);
    for (size_t i = 0; i < list.size(); ++i)
      load_post_processor(list[i], path + ".processors[" + std::to_string(i) + "]");
    return;
  }
  check(type == "TemplateProcessing",
        where(source, path) + ": post-processor \"" + type + "\" is not supported");
  check(single_template.empty(), where(source, path) + ": only one template is supported");
  const json& specials = node.contains("special_tokens") ? node["special_tokens"] : json::object();
  for (const json& item : require(node, "single", source, path)) {
    TemplateItem t;
    if (item.contains("Sequence")) {
      t.is_sequence = true;
    } else {
      std::string name = require(item, "SpecialToken", source, path)["id"].get<std::string>();
      check(specials.contains(name),
            where(source, path + ".special_tokens") + " lacks \"" + name + "\"");
      t.ids = specials[name]["ids"].get<std::vector<int>>();
    }
    single_template.push_back(std::move(t));
  }
}

void Tokenizer::Impl::check_decoder(const json& node, const std::string& path) const {
  check(!node.is_null(), where(source, path) + " is missing; byte-level BPE needs ByteLevel");
  std::string type = require(node, "type", source, path).get<std::string>();
  if (type == "Sequence") {
    const json& list = require(node, "decoders", source, path);
    check(list.size() == 1, where(source, path) + ": only a single ByteLevel decoder is supported");
    check_decoder(list[0], path + ".decoders[0]");
    return;
  }
  check(type == "ByteLevel", where(source, path) + ": decoder \"" + type + "\" is not supported");
}

void Tokenizer::Impl::load_config(const json& config, const std::string& config_source) {
  auto id_of = [&](const std::string& token, const char* field) {
    if (token.empty()) return -1;
    auto added_it = added_by_content.find(token);
    if (added_it != added_by_content.end()) return added_it->second;
    int id = vocab.find(token);
    check(id >= 0, where(config_source, field) + ": \"" + token + "\" is not a token of " + source);
    return id;
  };
  if (config.contains("bos_token")) bos_token = token_text(config["bos_token"]);
  if (config.contains("eos_token")) eos_token = token_text(config["eos_token"]);
  bos_id = id_of(bos_token, "bos_token");
  eos_id = id_of(eos_token, "eos_token");
  add_bos_token = config.value("add_bos_token", false);
  if (config.contains("chat_template")) {
    const json& t = config["chat_template"];
    if (t.is_string()) {
      chat_template = t.get<std::string>();
    } else if (t.is_array()) {  // [{"name": "default", "template": "..."}, ...]
      for (const json& named : t)
        if (named.value("name", "") == "default") chat_template = named.value("template", "");
    }
  }
}

std::string Tokenizer::Impl::normalize(std::string_view text) const {
  std::string s(text);
  for (const NormalizerStep& step : normalizer) {
    switch (step.kind) {
      case NormalizerStep::Kind::kNfc:
        s = to_nfc(s);
        break;
      case NormalizerStep::Kind::kNfd:
        s = to_nfd(s);
        break;
      case NormalizerStep::Kind::kPrepend:
        if (!s.empty()) s = step.argument + s;
        break;
      case NormalizerStep::Kind::kReplace: {
        if (step.argument.empty()) break;
        std::string out;
        size_t pos = 0;
        for (size_t hit; (hit = s.find(step.argument, pos)) != std::string::npos;) {
          out.append(s, pos, hit - pos);
          out += step.replacement;
          pos = hit + step.argument.size();
        }
        out.append(s, pos);
        s = std::move(out);
        break;
      }
    }
  }
  return s;
}

void Tokenizer::Impl::find_added_tokens(std::string_view text, const AddedTokenTrie& trie,
                                        std::vector<Segment>& out) const {
  out.clear();
  size_t start_offset = 0;
  if (!trie.empty()) {
    for (size_t i = 0; i < text.size();) {
      if (!trie.may_start_at(static_cast<unsigned char>(text[i]))) {
        ++i;
        continue;
      }
      auto [index, length] = trie.longest_at(text, i);
      if (index < 0) {
        ++i;
        continue;
      }
      const AddedToken& token = added[index];
      size_t start = i, stop = i + length;
      if (token.lstrip) {
        // Back over the whitespace before the token, but not into the previous match.
        size_t s = start;
        while (s > start_offset) {
          size_t p = s - 1;
          while (p > 0 && (static_cast<unsigned char>(text[p]) & 0xC0) == 0x80) --p;
          if (!is_white_space(decode_code_point(text, p, s - p))) break;
          s = p;
        }
        start = s;
      }
      if (token.rstrip) {
        while (stop < text.size()) {
          size_t n = valid_sequence_length(text, stop);
          if (n == 0 || !is_white_space(decode_code_point(text, stop, n))) break;
          stop += n;
        }
      }
      if (start_offset < start) out.push_back({start_offset, start, -1});
      out.push_back({start, stop, token.id});
      start_offset = stop;
      i = std::max(i + length, stop);
    }
  }
  if (start_offset < text.size()) out.push_back({start_offset, text.size(), -1});
}

void Tokenizer::Impl::split(const PreTokenizerStep& step) const {
  next_pieces.clear();
  for (std::string_view piece : pieces) {
    if (step.add_prefix_space && piece.front() != ' ') {
      owned_pieces.push_back(" " + std::string(piece));
      piece = owned_pieces.back();
    }
    if (!step.regex) {
      next_pieces.push_back(piece);
      continue;
    }
    step.regex->find_all(piece, matches);
    if (step.behavior == SplitBehavior::kIsolated) {  // the common case: every part stays
      size_t previous = 0;
      for (const Regex::Match& m : matches) {
        if (previous < m.begin) next_pieces.push_back(piece.substr(previous, m.begin - previous));
        next_pieces.push_back(piece.substr(m.begin, m.end - m.begin));
        previous = m.end;
      }
      if (previous < piece.size()) next_pieces.push_back(piece.substr(previous));
      continue;
    }
    // The general case, written as HF's NormalizedString::split.
    struct Part {
      size_t begin, end;
      bool is_match;
    };
    std::vector<Part> parts;
    size_t previous = 0;
    for (const Regex::Match& m : matches) {
      if (previous < m.begin) parts.push_back({previous, m.begin, false});
      parts.push_back({m.begin, m.end, true});
      previous = m.end;
    }
    if (previous < piece.size()) parts.push_back({previous, piece.size(), false});
    if (step.invert)
      for (Part& p : parts) p.is_match = !p.is_match;
    std::vector<Part> kept;  // is_match now means "remove"
    bool previous_match = false;
    switch (step.behavior) {
      case SplitBehavior::kRemoved:
        kept = parts;
        break;
      case SplitBehavior::kIsolated:
        break;  // handled above
      case SplitBehavior::kContiguous:
        for (const Part& p : parts) {
          if (p.is_match == previous_match && !kept.empty())
            kept.back().end = p.end;
          else
            kept.push_back({p.begin, p.end, false});
          previous_match = p.is_match;
        }
        break;
      case SplitBehavior::kMergedWithPrevious:
        for (const Part& p : parts) {
          if (p.is_match && !previous_match && !kept.empty())
            kept.back().end = p.end;
          else
            kept.push_back({p.begin, p.end, false});
          previous_match = p.is_match;
        }
        break;
      case SplitBehavior::kMergedWithNext:
        for (auto it = parts.rbegin(); it != parts.rend(); ++it) {
          if (it->is_match && !previous_match && !kept.empty())
            kept.back().begin = it->begin;
          else
            kept.push_back({it->begin, it->end, false});
          previous_match = it->is_match;
        }
        std::reverse(kept.begin(), kept.end());
        break;
    }
    for (const Part& p : kept)
      if (!p.is_match && p.end > p.begin)
        next_pieces.push_back(piece.substr(p.begin, p.end - p.begin));
  }
  pieces.swap(next_pieces);
}

void Tokenizer::Impl::encode_text(std::string_view text, std::vector<int>& ids) const {
  pieces.clear();
  owned_pieces.clear();
  if (!text.empty()) pieces.push_back(text);
  for (const PreTokenizerStep& step : pre_tokenizer) split(step);
  for (std::string_view word : pieces) encode_word(word, ids);
}

void Tokenizer::Impl::encode_word(std::string_view word, std::vector<int>& ids) const {
  if (word.size() == 1) {
    int id = byte_id[static_cast<unsigned char>(word[0])];
    if (id < 0) id = unk_id;
    if (id >= 0) ids.push_back(id);
    return;
  }
  bool cacheable = word.size() <= kMaxCachedLength;
  uint64_t hash = 0;
  if (cacheable) {
    hash = std::hash<std::string_view>{}(word);
    size_t count = 0;
    if (const int32_t* cached = cache.find(word, hash, count)) {
      ids.insert(ids.end(), cached, cached + count);
      return;
    }
  }
  size_t first = ids.size();
  int whole = ignore_merges ? vocab_by_bytes.find(word) : -1;
  if (whole >= 0)
    ids.push_back(whole);
  else
    merge_word(word, ids);
  if (cacheable) cache.insert(word, hash, ids.data() + first, ids.size() - first);
}

// BPE: repeatedly join the adjacent pair with the lowest merge rank (the leftmost on a tie)
// until no pair has a merge.
void Tokenizer::Impl::merge_word(std::string_view word, std::vector<int>& ids) const {
  constexpr uint32_t kNoMerge = std::numeric_limits<uint32_t>::max();
  word_ids.clear();
  for (unsigned char b : word) {
    int id = byte_id[b] >= 0 ? byte_id[b] : unk_id;
    if (id >= 0) word_ids.push_back(id);  // HF drops a character it has no id for
  }
  size_t n = word_ids.size();
  if (n <= kLinearMergeLimit) {
    // Short words: a flat array, one rank per adjacent pair, scanned for the minimum.
    std::array<uint32_t, kLinearMergeLimit> rank;
    std::array<int32_t, kLinearMergeLimit> result;
    auto lookup = [&](size_t i) {
      const MergeTable::Merge* m = merges.find(word_ids[i], word_ids[i + 1]);
      rank[i] = m ? m->rank : kNoMerge;
      result[i] = m ? m->result : -1;
    };
    for (size_t i = 0; i + 1 < n; ++i) lookup(i);
    while (n > 1) {
      size_t best = 0;
      for (size_t i = 1; i + 1 < n; ++i)
        if (rank[i] < rank[best]) best = i;
      if (rank[best] == kNoMerge) break;
      word_ids[best] = result[best];
      word_ids.erase(word_ids.begin() + best + 1);
      if (best + 2 < n - 1) {  // pairs right of the merge move one place left
        std::copy(rank.begin() + best + 2, rank.begin() + n - 1, rank.begin() + best + 1);
        std::copy(result.begin() + best + 2, result.begin() + n - 1, result.begin() + best + 1);
      }
      --n;
      if (best > 0) lookup(best - 1);
      if (best + 1 < n) lookup(best);
    }
    ids.insert(ids.end(), word_ids.begin(), word_ids.end());
    return;
  }

  // Long words: a doubly linked list of symbols and a min-heap of candidate merges by
  // (rank, position); stale heap entries are skipped when popped, as in HF's Word::merge_all.
  // A symbol merged into its left neighbour gets id -1.
  std::vector<int32_t>& prev = merge_prev;
  std::vector<int32_t>& next = merge_next;
  std::vector<MergeCandidate>& heap = merge_heap;
  prev.resize(n);
  next.resize(n);
  heap.clear();
  for (size_t i = 0; i < n; ++i) {
    prev[i] = static_cast<int32_t>(i) - 1;
    next[i] = i + 1 < n ? static_cast<int32_t>(i + 1) : -1;
  }
  auto push = [&](int32_t i) {
    if (i < 0 || next[i] < 0) return;
    if (const MergeTable::Merge* m = merges.find(word_ids[i], word_ids[next[i]])) {
      heap.push_back({m->rank, static_cast<uint32_t>(i), m->result});
      std::push_heap(heap.begin(), heap.end(), std::greater<>());
    }
  };
  for (size_t i = 0; i + 1 < n; ++i) push(static_cast<int32_t>(i));
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), std::greater<>());
    MergeCandidate top = heap.back();
    heap.pop_back();
    int32_t i = static_cast<int32_t>(top.position);
    if (word_ids[i] < 0 || next[i] < 0) continue;
    const MergeTable::Merge* m = merges.find(word_ids[i], word_ids[next[i]]);
    if (!m || m->result != top.result) continue;
    int32_t right = next[i];
    word_ids[i] = top.result;
    word_ids[right] = -1;
    next[i] = next[right];
    if (next[i] >= 0) prev[next[i]] = i;
    push(prev[i]);
    push(i);
  }
  for (int32_t i = 0; i >= 0; i = next[i]) ids.push_back(word_ids[i]);
}

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::~Tokenizer() = default;

std::unique_ptr<Tokenizer> Tokenizer::load(const std::string& dir) {
  namespace fs = std::filesystem;
  fs::path json_path = fs::path(dir) / "tokenizer.json";
  check(fs::is_directory(dir), "tokenizer folder " + dir + " does not exist");
  check(fs::exists(json_path),
        "no tokenizer.json in " + dir + " (expected a Hugging Face tokenizer folder)");
  fs::path config_path = fs::path(dir) / "tokenizer_config.json";
  std::string config = fs::exists(config_path) ? read_file(config_path.string()) : "";
  return from_json(read_file(json_path.string()), config, json_path.string());
}

std::unique_ptr<Tokenizer> Tokenizer::from_json(const std::string& tokenizer_json,
                                                const std::string& tokenizer_config_json,
                                                const std::string& source_name) {
  auto impl = std::make_unique<Impl>();
  impl->source = source_name;
  json root;
  StreamedModel streamed;
  try {
    root = parse_tokenizer_json(tokenizer_json, streamed);
  } catch (const json::exception& e) {
    throw Error(source_name + " is not valid JSON: " + e.what());
  }
  try {
    impl->load_model(require(root, "model", source_name, "(top level)"), streamed);
    impl->load_added_tokens(root.contains("added_tokens") ? root["added_tokens"] : json());
    impl->load_normalizer(root.contains("normalizer") ? root["normalizer"] : json(), "normalizer");
    impl->load_pre_tokenizer(root.contains("pre_tokenizer") ? root["pre_tokenizer"] : json(),
                             "pre_tokenizer");
    check(!impl->pre_tokenizer.empty() && impl->pre_tokenizer.back().byte_level,
          where(source_name, "pre_tokenizer") + " must end with ByteLevel");
    impl->load_post_processor(root.contains("post_processor") ? root["post_processor"] : json(),
                              "post_processor");
    impl->check_decoder(root.contains("decoder") ? root["decoder"] : json(), "decoder");
  } catch (const json::exception& e) {
    throw Error(source_name + ": unexpected structure: " + e.what());
  }
  // Added tokens go into the trie of the text they are matched in.
  for (size_t i = 0; i < impl->added.size(); ++i) {
    const AddedToken& t = impl->added[i];
    if (t.normalized)
      impl->normalized_trie.insert(impl->normalize(t.content), static_cast<int>(i));
    else
      impl->raw_trie.insert(t.content, static_cast<int>(i));
  }
  if (!tokenizer_config_json.empty()) {
    std::string config_source =
        std::filesystem::path(source_name).parent_path().empty()
            ? "tokenizer_config.json"
            : (std::filesystem::path(source_name).parent_path() / "tokenizer_config.json").string();
    try {
      impl->load_config(json::parse(tokenizer_config_json), config_source);
    } catch (const json::exception& e) {
      throw Error(config_source + " is not valid: " + e.what());
    }
  }
  return std::unique_ptr<Tokenizer>(new Tokenizer(std::move(impl)));
}

std::vector<int> Tokenizer::encode(std::string_view text, bool add_special_tokens) const {
  const Impl& m = *impl_;
  std::string repaired;
  if (!is_valid_utf8(text)) {
    repaired = to_valid_utf8(text);
    text = repaired;
  }
  std::vector<int> ids;
  ids.reserve(text.size() / 3 + 4);
  {
    std::lock_guard<std::mutex> lock(m.mutex);
    m.find_added_tokens(text, m.raw_trie, m.raw_segments);
    std::vector<Segment> raw_segments = m.raw_segments;  // the next steps reuse the buffer
    std::string normalized;
    for (const Segment& raw : raw_segments) {
      if (raw.token >= 0) {
        ids.push_back(raw.token);
        continue;
      }
      std::string_view piece = text.substr(raw.begin, raw.end - raw.begin);
      if (!m.normalizer.empty()) {
        normalized = m.normalize(piece);
        piece = normalized;
      }
      m.find_added_tokens(piece, m.normalized_trie, m.normalized_segments);
      for (const Segment& s : m.normalized_segments) {
        if (s.token >= 0)
          ids.push_back(s.token);
        else
          m.encode_text(piece.substr(s.begin, s.end - s.begin), ids);
      }
    }
  }
  if (add_special_tokens && !m.single_template.empty()) {
    std::vector<int> framed;
    framed.reserve(ids.size() + 4);
    for (const TemplateItem& item : m.single_template) {
      if (item.is_sequence)
        framed.insert(framed.end(), ids.begin(), ids.end());
      else
        framed.insert(framed.end(), item.ids.begin(), item.ids.end());
    }
    ids.swap(framed);
  }
  return ids;
}

void Tokenizer::pre_tokenize(std::string_view text,
                             const std::function<void(std::string_view)>& visit) const {
  const Impl& m = *impl_;
  std::string repaired;
  if (!is_valid_utf8(text)) {
    repaired = to_valid_utf8(text);
    text = repaired;
  }
  std::lock_guard<std::mutex> lock(m.mutex);
  m.find_added_tokens(text, m.raw_trie, m.raw_segments);
  std::vector<Segment> raw_segments = m.raw_segments;
  std::string normalized;
  for (const Segment& raw : raw_segments) {
    if (raw.token >= 0) continue;
    std::string_view piece = text.substr(raw.begin, raw.end - raw.begin);
    if (!m.normalizer.empty()) {
      normalized = m.normalize(piece);
      piece = normalized;
    }
    m.find_added_tokens(piece, m.normalized_trie, m.normalized_segments);
    std::vector<Segment> segments = m.normalized_segments;
    for (const Segment& s : segments) {
      if (s.token >= 0) continue;
      m.pieces.clear();
      m.owned_pieces.clear();
      std::string_view part = piece.substr(s.begin, s.end - s.begin);
      if (!part.empty()) m.pieces.push_back(part);
      for (const PreTokenizerStep& step : m.pre_tokenizer) m.split(step);
      for (std::string_view word : m.pieces) visit(word);
    }
  }
}

std::string Tokenizer::decode(std::span<const int> ids, bool skip_special_tokens) const {
  std::string bytes;
  for (int id : ids) {
    if (skip_special_tokens && is_special(id)) continue;
    bytes += token_bytes(id);
  }
  return is_valid_utf8(bytes) ? bytes : to_valid_utf8(bytes);
}

const std::string& Tokenizer::token_bytes(int id) const {
  check(id >= 0 && id < vocab_size() && impl_->id_exists[id],
        "token id " + std::to_string(id) + " is not in the vocabulary of " + impl_->source);
  return impl_->bytes_of[id];
}

bool Tokenizer::is_special(int id) const {
  return id >= 0 && static_cast<size_t>(id) < impl_->special.size() && impl_->special[id];
}

int Tokenizer::vocab_size() const {
  return static_cast<int>(impl_->bytes_of.size());
}

std::optional<int> Tokenizer::token_to_id(std::string_view token) const {
  std::string key(token);
  auto added = impl_->added_by_content.find(key);
  if (added != impl_->added_by_content.end()) return added->second;
  int id = impl_->vocab.find(key);
  if (id >= 0) return id;
  return std::nullopt;
}

int Tokenizer::bos_id() const {
  return impl_->bos_id;
}
int Tokenizer::eos_id() const {
  return impl_->eos_id;
}
const std::string& Tokenizer::bos_token() const {
  return impl_->bos_token;
}
const std::string& Tokenizer::eos_token() const {
  return impl_->eos_token;
}
bool Tokenizer::add_bos_token() const {
  return impl_->add_bos_token;
}
const std::string& Tokenizer::chat_template() const {
  return impl_->chat_template;
}

std::string StreamDecoder::push(int id) {
  if (skip_special_tokens_ && tokenizer_.is_special(id)) return "";
  pending_ += tokenizer_.token_bytes(id);
  // Emit every complete character; replace what can no longer become one; hold back a valid
  // but unfinished sequence at the end.
  std::string out;
  size_t i = 0;
  while (i < pending_.size()) {
    size_t n = valid_sequence_length(pending_, i);
    if (n) {
      out.append(pending_, i, n);
      i += n;
      continue;
    }
    size_t bad = invalid_sequence_length(pending_, i);
    if (i + bad == pending_.size() && bad < 4) {
      // Might still be the start of a valid sequence the next token completes.
      auto lead = static_cast<unsigned char>(pending_[i]);
      size_t needed = (lead >= 0xC2 && lead <= 0xDF)   ? 2
                      : (lead >= 0xE0 && lead <= 0xEF) ? 3
                      : (lead >= 0xF0 && lead <= 0xF4) ? 4
                                                       : 0;
      if (needed > bad) break;
    }
    append_utf8(out, kReplacementCharacter);
    i += bad;
  }
  pending_.erase(0, i);
  return out;
}

std::string StreamDecoder::finish() {
  std::string out = to_valid_utf8(pending_);
  pending_.clear();
  return out;
}

void copy_tokenizer_files(const std::string& from_dir, const std::string& to_dir) {
  for (const char* f : {"tokenizer.json", "tokenizer_config.json"})
    if (std::filesystem::exists(from_dir + "/" + f))
      write_file_atomic(to_dir + "/" + f, read_file(from_dir + "/" + f));
}

}  // namespace whale::text
