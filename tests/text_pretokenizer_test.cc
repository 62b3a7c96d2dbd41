// Split behaviors, ByteLevel options, normalizers and added-token stripping against Hugging
// Face: small synthetic tokenizers from tests/text/make_split_fixtures.mjs, whose vocabulary
// makes every cut visible in the ids.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "base/error.h"
#include "base/file.h"
#include "test_util.h"
#include "text/regex.h"
#include "text/tokenizer.h"

namespace whale::text {
namespace {

using nlohmann::json;

TEST(PreTokenizer, EverySplitBehaviorMatchesHuggingFace) {
  json fixture = json::parse(
      read_file(std::string(WHALE_SOURCE_DIR) + "/tests/text/fixtures/split_behaviors.json"));
  ASSERT_GT(fixture["cases"].size(), 60u);
  size_t texts = 0;
  for (const json& c : fixture["cases"]) {
    json config = c["config"];
    json tokenizer_json = {{"model", fixture["model"]},
                           {"added_tokens", config.value("added_tokens", json::array())},
                           {"normalizer", config.value("normalizer", json())},
                           {"pre_tokenizer", config["pre_tokenizer"]},
                           {"post_processor", nullptr},
                           {"decoder", {{"type", "ByteLevel"}}}};
    auto tokenizer = Tokenizer::from_json(tokenizer_json.dump());
    for (size_t i = 0; i < c["texts"].size(); ++i, ++texts) {
      std::string text = c["texts"][i];
      std::vector<int> expected = c["ids"][i];
      EXPECT_EQ(tokenizer->encode(text), expected)
          << "text " << json(text).dump() << " with " << config.dump();
    }
  }
  EXPECT_GT(texts, 1900u);
}

TEST(PreTokenizer, OnigurumaWhitespaceClass) {
  // \s and \S mean Unicode White_Space (as in Oniguruma), inside classes too.
  Regex space("\\s+");
  std::vector<Regex::Match> matches;
  space.find_all("a\u0085\u3000b\u180ec", matches);
  ASSERT_EQ(matches.size(), 1u);
  EXPECT_EQ(matches[0].begin, 1u);
  EXPECT_EQ(matches[0].end, 6u);  // U+0085 (2 bytes) + U+3000 (3 bytes); U+180E is not space
  Regex not_space("[^\\s\\p{L}]+");
  not_space.find_all("ab12 \u180e!", matches);
  ASSERT_EQ(matches.size(), 2u);
  EXPECT_EQ(matches[1].begin, 5u);
  EXPECT_EQ(oniguruma_to_pcre2("[\\]\\s]\\S"),
            "[\\]\\x{9}-\\x{D}\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}"
            "\\x{202F}\\x{205F}\\x{3000}][^\\x{9}-\\x{D}\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-"
            "\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}]");
}

TEST(PreTokenizer, BadPatternIsAClearError) {
  try {
    Regex bad("(unclosed");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("(unclosed"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace whale::text
