// Chat formats: whale's native rendering against the real DeepSeek-V3 and R1 chat_template
// strings run through @huggingface/jinja (fixtures from tests/text/make_chat_fixtures.mjs).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "base/error.h"
#include "base/file.h"
#include "test_util.h"
#include "text/chat_template.h"
#include "text/tokenizer.h"

namespace whale::text {
namespace {

using nlohmann::json;

std::string asset_dir(const std::string& name) {
  return std::string(WHALE_SOURCE_DIR) + "/../shared/assets/" + name + "-tokenizer";
}

TEST(ChatTemplate, RendersExactlyAsJinja) {
  std::map<std::string, std::unique_ptr<Tokenizer>> tokenizers;
  std::ifstream in(std::string(WHALE_SOURCE_DIR) + "/tests/text/fixtures/chat_templates.jsonl");
  size_t rendered = 0;
  for (std::string line; std::getline(in, line);) {
    json record = json::parse(line);
    std::string name = record["tokenizer"];
    if (!tokenizers.count(name)) {
      if (!std::filesystem::exists(asset_dir(name) + "/tokenizer_config.json"))
        GTEST_SKIP() << "tokenizer assets not found at " << asset_dir(name);
      tokenizers[name] = Tokenizer::load(asset_dir(name));
    }
    auto chat = ChatTemplate::for_tokenizer(*tokenizers[name], asset_dir(name));
    EXPECT_EQ(chat->render(record["messages"], record["add_generation_prompt"]),
              record["text"].get<std::string>())
        << name << " " << record["messages"].dump();
    ++rendered;
  }
  EXPECT_EQ(rendered, 40u);
}

TEST(ChatTemplate, RecognizesOnlyKnownTemplates) {
  EXPECT_THROW(ChatTemplate::recognize("{{ messages }}", "x/tokenizer_config.json"), Error);
  try {
    ChatTemplate::recognize("{{ messages }}", "x/tokenizer_config.json");
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("unrecognized chat_template"), std::string::npos);
  }
  std::string dir = std::string(WHALE_SOURCE_DIR) + "/../shared/assets/deepseek-r1-tokenizer";
  if (!std::filesystem::exists(dir)) GTEST_SKIP() << "tokenizer assets not found at " << dir;
  auto tokenizer = Tokenizer::load(dir);
  EXPECT_EQ(ChatTemplate::recognize(tokenizer->chat_template(), dir), ChatFormat::kDeepSeekR1);
}

TEST(ChatTemplate, BadMessagesAreClearErrors) {
  ChatTemplate chat(ChatFormat::kDeepSeekV3, "<｜begin▁of▁sentence｜>");
  EXPECT_THROW(chat.render(json::object(), false), Error);
  EXPECT_THROW(chat.render(json::parse(R"([{"role": "user", "content": 3}])"), false), Error);
  EXPECT_THROW(chat.render(json::parse(R"([{"role": "assistant"}])"), false), Error);
  EXPECT_THROW(
      chat.render(
          json::parse(
              R"([{"role": "assistant", "content": null, "tool_calls": [{"type": "function"}]}])"),
          false),
      Error);
}

TEST(ChatTemplate, NoTemplateIsAClearError) {
  std::string dir = asset_dir("deepseek-r1-distill-qwen");
  if (!std::filesystem::exists(dir)) GTEST_SKIP() << "tokenizer assets not found at " << dir;
  auto tokenizer = Tokenizer::load(dir);
  EXPECT_THROW(ChatTemplate::for_tokenizer(*tokenizer, dir), Error);
}

TEST(ChatTemplate, CliRendersAndTokenizes) {
  std::string dir = asset_dir("deepseek-r1");
  if (!std::filesystem::exists(dir)) GTEST_SKIP() << "tokenizer assets not found at " << dir;
  testing::TempDir tmp;
  write_file_atomic(
      tmp / "chat.jsonl",
      R"({"messages": [{"role": "user", "content": "Hi"}], "add_generation_prompt": true})"
      "\n");
  auto r = testing::run_whale("tokenize --chat --tokenizer " + dir + " < " + (tmp / "chat.jsonl"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  json reply = json::parse(r.output);
  EXPECT_EQ(reply["text"], "<｜begin▁of▁sentence｜><｜User｜>Hi<｜Assistant｜><think>\n");
  // What HF tokenizers gives for that text (add_special_tokens=false, as apply_chat_template).
  EXPECT_EQ(reply["ids"], json::parse("[0, 128803, 23166, 128804, 128798, 201]"));
}

}  // namespace
}  // namespace whale::text
