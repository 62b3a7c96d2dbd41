// The tokenizer against Hugging Face's tokenizers library: every line of the committed
// fixtures (made by tests/text/make_fixtures.mjs) must encode to exactly HF's ids and decode to
// exactly HF's text, for the real DeepSeek-V3, R1 and R1-Distill-Qwen tokenizers.
#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <thread>

#include "base/error.h"
#include "base/file.h"
#include "test_util.h"
#include "text/tokenizer.h"
#include "text/unicode.h"

namespace whale::text {
namespace {

using nlohmann::json;

std::string asset_dir(const std::string& folder) {
  return std::string(WHALE_SOURCE_DIR) + "/../shared/assets/" + folder;
}

// Loading a real tokenizer takes a fraction of a second: each is loaded once per test binary.
const Tokenizer* real_tokenizer(const std::string& folder) {
  static std::map<std::string, std::unique_ptr<Tokenizer>> loaded;
  auto it = loaded.find(folder);
  if (it == loaded.end()) {
    std::string dir = asset_dir(folder);
    if (!std::filesystem::exists(dir + "/tokenizer.json")) return nullptr;
    it = loaded.emplace(folder, Tokenizer::load(dir)).first;
  }
  return it->second.get();
}

#define REQUIRE_TOKENIZER(var, folder)                                    \
  const Tokenizer* var = real_tokenizer(folder);                          \
  if (!var)                                                               \
    GTEST_SKIP() << "tokenizer assets not found at " << asset_dir(folder) \
                 << " (expected /work/shared/assets beside the repository)";

std::vector<json> fixture(const std::string& name) {
  std::ifstream in(std::string(WHALE_SOURCE_DIR) + "/tests/text/fixtures/" + name + ".jsonl");
  std::vector<json> records;
  for (std::string line; std::getline(in, line);) records.push_back(json::parse(line));
  return records;
}

std::string show(const std::vector<int>& ids) {
  return testing::join_ids(ids);
}

struct RealTokenizer {
  const char* fixture;
  const char* folder;
};

// Names the parameter in test listings (ctest shows it) instead of dumping its bytes.
void PrintTo(const RealTokenizer& t, std::ostream* os) {
  *os << t.fixture;
}

class HuggingFaceFixture : public ::testing::TestWithParam<RealTokenizer> {};

TEST_P(HuggingFaceFixture, EveryLineEncodesToHuggingFaceIds) {
  REQUIRE_TOKENIZER(tokenizer, GetParam().folder);
  std::vector<json> records = fixture(GetParam().fixture);
  ASSERT_GT(records.size(), 500u);
  size_t matched = 0;
  for (const json& r : records) {
    std::string text = r["text"];
    std::vector<int> expected = r["ids"];
    std::vector<int> ids = tokenizer->encode(text);
    if (ids == expected)
      ++matched;
    else
      ADD_FAILURE() << "text " << json(text).dump() << "\n  HF    " << show(expected)
                    << "\n  whale " << show(ids);
  }
  std::printf("[ %s ] %zu of %zu lines match Hugging Face\n", GetParam().fixture, matched,
              records.size());
  EXPECT_EQ(matched, records.size());
}

TEST_P(HuggingFaceFixture, EveryLineDecodesToHuggingFaceText) {
  REQUIRE_TOKENIZER(tokenizer, GetParam().folder);
  for (const json& r : fixture(GetParam().fixture)) {
    std::vector<int> ids = r["ids"];
    std::string expected = r.contains("decoded") ? r["decoded"] : r["text"];
    EXPECT_EQ(tokenizer->decode(ids), expected) << "ids " << show(ids);
    std::string without_special = r.value("decoded_skip_special", expected);
    EXPECT_EQ(tokenizer->decode(ids, /*skip_special_tokens=*/true), without_special)
        << "ids " << show(ids);
  }
}

TEST_P(HuggingFaceFixture, StreamingDecodeEmitsOnlyWholeCharacters) {
  REQUIRE_TOKENIZER(tokenizer, GetParam().folder);
  for (const json& r : fixture(GetParam().fixture)) {
    std::vector<int> ids = r["ids"];
    StreamDecoder stream(*tokenizer);
    std::string joined;
    for (int id : ids) {
      std::string piece = stream.push(id);
      EXPECT_TRUE(is_valid_utf8(piece)) << "after id " << id << " in " << show(ids);
      joined += piece;
    }
    joined += stream.finish();
    EXPECT_EQ(joined, tokenizer->decode(ids));
  }
}

INSTANTIATE_TEST_SUITE_P(Real, HuggingFaceFixture,
                         ::testing::Values(RealTokenizer{"deepseek-v3", "deepseek-v3-tokenizer"},
                                           RealTokenizer{"deepseek-r1", "deepseek-r1-tokenizer"},
                                           RealTokenizer{"r1-distill-qwen",
                                                         "deepseek-r1-distill-qwen-tokenizer"}),
                         [](const auto& info) {
                           std::string name = info.param.fixture;
                           for (char& c : name)
                             if (c == '-') c = '_';
                           return name;
                         });

TEST(Tokenizer, DecodeOfEncodeIsTheTextForValidUtf8) {
  REQUIRE_TOKENIZER(v3, "deepseek-v3-tokenizer");
  REQUIRE_TOKENIZER(qwen, "deepseek-r1-distill-qwen-tokenizer");
  for (const json& r : fixture("deepseek-v3")) {
    std::string text = r["text"];
    EXPECT_EQ(v3->decode(v3->encode(text, false)), text);
    // Qwen normalizes to NFC first, so its round trip gives the NFC form.
    EXPECT_EQ(qwen->decode(qwen->encode(text, false)), to_nfc(text));
  }
}

TEST(Tokenizer, SpecialTokensAndConfig) {
  REQUIRE_TOKENIZER(v3, "deepseek-v3-tokenizer");
  REQUIRE_TOKENIZER(r1, "deepseek-r1-tokenizer");
  REQUIRE_TOKENIZER(qwen, "deepseek-r1-distill-qwen-tokenizer");
  EXPECT_EQ(v3->bos_id(), 0);
  EXPECT_EQ(v3->eos_id(), 1);
  EXPECT_EQ(v3->bos_token(), "<｜begin▁of▁sentence｜>");
  EXPECT_TRUE(v3->add_bos_token());
  EXPECT_FALSE(v3->chat_template().empty());
  EXPECT_EQ(v3->vocab_size(), 128815);
  EXPECT_TRUE(v3->is_special(0));
  EXPECT_FALSE(v3->is_special(128814));  // <｜tool▁sep｜> is added but not special
  // V3 has no <think> token; R1 has it at 128798 (normalized, not special).
  EXPECT_NE(v3->encode("<think>", false).size(), 1u);
  EXPECT_EQ(r1->encode("<think>", false), std::vector<int>{128798});
  EXPECT_EQ(r1->token_to_id("</think>"), 128799);
  EXPECT_FALSE(r1->is_special(128798));
  // The distilled Qwen tokenizer ships no tokenizer_config.json; its post-processor adds BOS.
  EXPECT_EQ(qwen->bos_id(), -1);
  EXPECT_TRUE(qwen->chat_template().empty());
  EXPECT_EQ(qwen->encode("Hello world"), (std::vector<int>{151646, 9707, 1879}));
  EXPECT_EQ(qwen->encode("Hello world", false), (std::vector<int>{9707, 1879}));
  // Decoding can leave special tokens out.
  std::vector<int> ids = v3->encode("<｜begin▁of▁sentence｜>Hi<｜end▁of▁sentence｜>");
  EXPECT_EQ(ids.front(), 0);
  EXPECT_EQ(v3->decode(ids, /*skip_special_tokens=*/true), "Hi");
}

TEST(Tokenizer, InvalidUtf8BecomesReplacementCharacters) {
  REQUIRE_TOKENIZER(v3, "deepseek-v3-tokenizer");
  REQUIRE_TOKENIZER(qwen, "deepseek-r1-distill-qwen-tokenizer");
  // Each case: bytes and the same text after Python's bytes.decode("utf-8", "replace").
  const std::pair<std::string, std::string> cases[] = {
      {"abc\xff", "abc\uFFFD"},
      {"\xc0\xaf", "\uFFFD\uFFFD"},                      // overlong '/'
      {"\xed\xa0\x80 x", "\uFFFD\uFFFD\uFFFD x"},        // a surrogate
      {"\xf0\x9f\x98 end", "\uFFFD end"},                // an emoji cut short: one U+FFFD
      {"\xe4\xb8", "\uFFFD"},                            // 中 cut short at the end
      {"\xf4\x90\x80\x80", "\uFFFD\uFFFD\uFFFD\uFFFD"},  // beyond U+10FFFF
      {"a\x80\x80z", "a\uFFFD\uFFFDz"},                  // stray continuation bytes
      {"\xe2\x82\xac\xe2\x82", "€\uFFFD"},
  };
  for (const auto& [bytes, replaced] : cases) {
    EXPECT_FALSE(is_valid_utf8(bytes));
    EXPECT_EQ(to_valid_utf8(bytes), replaced);
    EXPECT_EQ(v3->encode(bytes), v3->encode(replaced)) << json(replaced).dump();
    EXPECT_EQ(qwen->encode(bytes), qwen->encode(replaced)) << json(replaced).dump();
  }
}

TEST(Tokenizer, StreamingHoldsBackSplitCharacters) {
  REQUIRE_TOKENIZER(v3, "deepseek-v3-tokenizer");
  // 😀 is F0 9F 98 80: feed it as four single-byte tokens, one at a time.
  auto byte_token = [&](unsigned char b) {
    std::string spelling;
    append_utf8(spelling, byte_to_unicode()[b]);
    return v3->token_to_id(spelling).value();
  };
  std::vector<int> ids;
  for (unsigned char b : std::string("\xf0\x9f\x98\x80")) ids.push_back(byte_token(b));
  StreamDecoder stream(*v3);
  EXPECT_EQ(stream.push(ids[0]), "");
  EXPECT_EQ(stream.push(ids[1]), "");
  EXPECT_EQ(stream.push(ids[2]), "");
  EXPECT_EQ(stream.push(ids[3]), "😀");
  // A sequence that can no longer complete is replaced as soon as that is known...
  EXPECT_EQ(stream.push(ids[0]), "");
  EXPECT_EQ(stream.push(*v3->token_to_id("a")), "\uFFFDa");
  // ...and an unfinished one at the end becomes one U+FFFD.
  EXPECT_EQ(stream.push(ids[0]), "");
  EXPECT_EQ(stream.push(ids[1]), "");
  EXPECT_EQ(stream.finish(), "\uFFFD");
}

TEST(Tokenizer, ConcurrentEncodesAgree) {
  REQUIRE_TOKENIZER(qwen, "deepseek-r1-distill-qwen-tokenizer");
  std::vector<json> records = fixture("r1-distill-qwen");
  std::vector<std::thread> threads;
  std::atomic<size_t> mismatches{0};
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (size_t i = t; i < records.size(); i += 2)
        if (qwen->encode(records[i]["text"].get<std::string>()) !=
            records[i]["ids"].get<std::vector<int>>())
          ++mismatches;
    });
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(mismatches.load(), 0u);
}

TEST(Tokenizer, DecodeRejectsUnknownIds) {
  REQUIRE_TOKENIZER(v3, "deepseek-v3-tokenizer");
  std::vector<int> ids{19923, 999999};
  EXPECT_THROW(v3->decode(ids), Error);
  ids = {-1};
  EXPECT_THROW(v3->decode(ids), Error);
}

TEST(Tokenizer, ClearErrorsForBadFolders) {
  testing::TempDir dir;
  try {
    Tokenizer::load(dir.path.string());
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no tokenizer.json in"), std::string::npos) << e.what();
  }
  write_file_atomic(dir / "tokenizer.json", "{not json");
  EXPECT_THROW(Tokenizer::load(dir.path.string()), Error);
  write_file_atomic(dir / "tokenizer.json",
                    R"({"model": {"type": "Unigram", "vocab": []}, "pre_tokenizer": null})");
  try {
    Tokenizer::load(dir.path.string());
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("model.type"), std::string::npos) << e.what();
  }
  EXPECT_THROW(Tokenizer::load(dir / "missing"), Error);

  // Malformed vocabulary and merges name the entry at fault.
  auto error_of = [](const std::string& json_text) -> std::string {
    try {
      Tokenizer::from_json(json_text);
    } catch (const Error& e) {
      return e.what();
    }
    return "no error";
  };
  const std::string rest =
      R"("pre_tokenizer": {"type": "ByteLevel"}, "decoder": {"type": "ByteLevel"}})";
  EXPECT_NE(error_of(R"({"model": {"vocab": {"a": "x"}, "merges": []}, )" + rest)
                .find("model.vocab[\"a\"]"),
            std::string::npos);
  EXPECT_NE(error_of(R"({"model": {"vocab": {"a": 0}, "merges": ["a"]}, )" + rest)
                .find("model.merges[0]"),
            std::string::npos);
  EXPECT_NE(error_of(R"({"model": {"vocab": {"a": 0}, "merges": [["a", "b"]]}, )" + rest)
                .find("\"b\" is not in the vocabulary"),
            std::string::npos);
  EXPECT_NE(error_of(R"({"model": {"vocab": {"a": 0}, "merges": [["a", "a", "a"]]}, )" + rest)
                .find("model.merges[0]"),
            std::string::npos);
  EXPECT_NE(error_of(R"({"model": {"vocab": {"a": 0}, "merges": []}, "pre_tokenizer": )"
                     R"({"type": "Whitespace"}, "decoder": {"type": "ByteLevel"}})")
                .find("\"Whitespace\" is not supported"),
            std::string::npos);
}

TEST(Unicode, Nfc) {
  EXPECT_EQ(to_nfc("cafe\u0301"), "café");
  EXPECT_EQ(to_nfc("plain ascii"), "plain ascii");
  EXPECT_EQ(to_nfc("\u212b"), "\u00c5");              // Angstrom sign → Å
  EXPECT_EQ(to_nfc("\u1100\u1161\u11a8"), "\uac01");  // jamo → 각
  EXPECT_EQ(to_nfc("a\u0323\u0302"), "\u1ead");       // ậ from either mark order
  EXPECT_EQ(to_nfc("a\u0302\u0323"), "\u1ead");
  EXPECT_EQ(to_nfc("\u0958"), "\u0915\u093c");  // composition exclusion
  // U+1DF6 (class 232 since Unicode 10) is a starter in HF's Unicode 9 data: no reordering.
  EXPECT_EQ(to_nfc("a\u1df6\u0316"), "a\u1df6\u0316");
  // Reordered (220 before 230), then the unblocked U+0301 composes with the base.
  EXPECT_EQ(to_nfc("a\u0301\u0316"), "\u00e1\u0316");
  EXPECT_EQ(to_nfd("\u00e9"), "e\u0301");
  EXPECT_EQ(to_nfd("\uac01"), "\u1100\u1161\u11a8");
}

}  // namespace
}  // namespace whale::text
