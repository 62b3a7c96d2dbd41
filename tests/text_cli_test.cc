// `whale tokenize` through the binary: text → ids, --decode, --jsonl, and its errors.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "base/file.h"
#include "test_util.h"

namespace whale {
namespace {

using testing::run_whale;

std::string v3_dir() {
  return std::string(WHALE_SOURCE_DIR) + "/../shared/assets/deepseek-v3-tokenizer";
}

#define REQUIRE_V3()                                          \
  if (!std::filesystem::exists(v3_dir() + "/tokenizer.json")) \
    GTEST_SKIP() << "tokenizer assets not found at " << v3_dir();

TEST(TokenizeCli, TextToIdsAndBack) {
  REQUIRE_V3();
  testing::TempDir dir;
  write_file_atomic(dir / "in.txt", "Hello! 毕老师！1 + 1 = 2 ĠÑĤÐ²ÑĬÑĢ");
  auto r = run_whale("tokenize --tokenizer " + v3_dir() + " < " + (dir / "in.txt"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::string ids =
      "19923 3 223 5464 5008 1175 19 940 223 19 438 223 20 6113 257 76589 131 100 76032 1628 "
      "76589 131 108 76589 131 98";
  EXPECT_EQ(r.output, ids + "\n");
  write_file_atomic(dir / "ids.txt", ids);
  r = run_whale("tokenize --decode --tokenizer " + v3_dir() + " < " + (dir / "ids.txt"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output, "Hello! 毕老师！1 + 1 = 2 ĠÑĤÐ²ÑĬÑĢ");
  // Invalid UTF-8 reads as U+FFFD (one per ill-formed sequence).
  write_file_atomic(dir / "bad.txt",
                    "a\xff\xe4\xb8"
                    "b");
  write_file_atomic(dir / "replaced.txt", "a\uFFFD\uFFFDb");
  r = run_whale("tokenize --tokenizer " + v3_dir() + " < " + (dir / "bad.txt"));
  auto replaced = run_whale("tokenize --tokenizer " + v3_dir() + " < " + (dir / "replaced.txt"));
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.output, replaced.output);
  // Nothing in, nothing out, both ways.
  r = run_whale("tokenize --tokenizer " + v3_dir() + " < /dev/null");
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.output, "\n");
  r = run_whale("tokenize --decode --tokenizer " + v3_dir() + " < /dev/null");
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.output, "");
}

TEST(TokenizeCli, JsonlMatchesHuggingFaceFixture) {
  REQUIRE_V3();
  testing::TempDir dir;
  std::string fixture =
      read_file(std::string(WHALE_SOURCE_DIR) + "/tests/text/fixtures/deepseek-v3.jsonl");
  std::vector<nlohmann::json> expected;
  std::string input;
  size_t start = 0;
  while (start < fixture.size()) {
    size_t end = fixture.find('\n', start);
    auto record = nlohmann::json::parse(fixture.substr(start, end - start));
    input += nlohmann::json{{"text", record["text"]}}.dump() + "\n";
    expected.push_back(record["ids"]);
    start = end + 1;
  }
  write_file_atomic(dir / "in.jsonl", input);
  auto r = run_whale("tokenize --jsonl --tokenizer " + v3_dir() + " < " + (dir / "in.jsonl") +
                     " 2>/dev/null");
  ASSERT_EQ(r.exit_code, 0) << r.output.substr(0, 500);
  size_t line = 0, matched = 0;
  start = 0;
  while (start < r.output.size()) {
    size_t end = r.output.find('\n', start);
    auto got = nlohmann::json::parse(r.output.substr(start, end - start));
    if (line < expected.size() && got["ids"] == expected[line]) ++matched;
    ++line;
    start = end + 1;
  }
  EXPECT_EQ(line, expected.size());
  EXPECT_EQ(matched, expected.size());
}

TEST(TokenizeCli, JsonlDecode) {
  REQUIRE_V3();
  testing::TempDir dir;
  write_file_atomic(dir / "in.jsonl", "{\"ids\": [19923, 3]}\n{\"ids\": []}\n");
  auto r =
      run_whale("tokenize --jsonl --decode --tokenizer " + v3_dir() + " < " + (dir / "in.jsonl"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output, "{\"text\":\"Hello!\"}\n{\"text\":\"\"}\n");
}

TEST(TokenizeCli, ClearErrors) {
  testing::TempDir dir;
  auto r = run_whale("tokenize --tokenizer " + dir.path.string() + " < /dev/null");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.output, "whale: error: no tokenizer.json in " + dir.path.string() +
                          " (expected a Hugging Face tokenizer folder)\n");
  if (!std::filesystem::exists(v3_dir() + "/tokenizer.json")) return;
  write_file_atomic(dir / "bad.jsonl", "{\"text\": 1}\n");
  r = run_whale("tokenize --jsonl --tokenizer " + v3_dir() + " < " + (dir / "bad.jsonl"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("stdin line 1"), std::string::npos) << r.output;
  write_file_atomic(dir / "ids.txt", "5 999999");
  r = run_whale("tokenize --decode --tokenizer " + v3_dir() + " < " + (dir / "ids.txt"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("token id 999999"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace whale
