// whale serve over HTTP: the OpenAI request and response shapes (JSON and SSE), reasoning
// apart from the answer, stop strings, n, every bad input a 4xx in OpenAI's error shape, a
// client that hangs up mid-stream (cancelled, blocks freed, the server keeps serving),
// concurrent requests batched together, a pool too small for everyone at once (requests
// wait or are preempted and still give the right text), the prefix cache, the API key, and
// SIGTERM (exit 0). Models: tiny V3s over the byte-level vocabulary, random or scripted.
#include <arpa/inet.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <future>

#include "serve_util.h"

namespace whale {
namespace {

using nlohmann::json;
using whale::testing::parse_sse;
using whale::testing::ServerProcess;
using whale::testing::TempDir;

class Serve : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    using whale::testing::make_byte_model;
    make_byte_model(*dir_, "random", 1024, {});
    make_byte_model(*dir_, "scripted", 1024, whale::testing::kThinkScript);
    make_byte_model(*dir_, "looping", 4096, {{':', 'L'}, {'L', 'o'}, {'o', 'L'}});
    r1_ = !whale::testing::r1_tokenizer_config().empty();
    if (r1_)
      make_byte_model(*dir_, "scripted-r1", 1024, whale::testing::kThinkScript,
                      whale::testing::r1_tokenizer_config());
    server_ = new ServerProcess("--model " + *dir_ / "random" + " --model-name random");
    ASSERT_GT(server_->port(), 0) << server_->log();
  }
  static void TearDownTestSuite() {
    delete server_;
    delete dir_;
  }

  static httplib::Result post(int port, const std::string& path, const std::string& body,
                              const std::string& key = "") {
    httplib::Client client("127.0.0.1", port);
    client.set_read_timeout(60, 0);
    httplib::Headers headers;
    if (!key.empty()) headers.emplace("Authorization", "Bearer " + key);
    return client.Post(path.c_str(), headers, body, "application/json");
  }
  static json post_json(int port, const std::string& path, const json& body, int expect = 200) {
    auto r = post(port, path, body.dump());
    EXPECT_TRUE(r) << path;
    if (!r) return json();
    EXPECT_EQ(r->status, expect) << r->body;
    return json::parse(r->body);
  }
  static json metrics_value(int port, const std::string& name) {
    httplib::Client client("127.0.0.1", port);
    auto r = client.Get("/metrics");
    if (!r) return nullptr;
    size_t at = r->body.find("\n" + name + " ");
    if (at == std::string::npos) return nullptr;
    return std::atof(r->body.c_str() + at + name.size() + 2);
  }

  static TempDir* dir_;
  static ServerProcess* server_;
  static bool r1_;
};
TempDir* Serve::dir_ = nullptr;
ServerProcess* Serve::server_ = nullptr;
bool Serve::r1_ = false;

json chat_body(const std::string& model, const std::string& user, int max_tokens = 8) {
  return {{"model", model},
          {"messages", {{{"role", "user"}, {"content", user}}}},
          {"max_tokens", max_tokens}};
}

TEST_F(Serve, ModelsHealthMetricsAndPage) {
  httplib::Client client("127.0.0.1", server_->port());
  auto models = client.Get("/v1/models");
  ASSERT_TRUE(models);
  EXPECT_EQ(models->status, 200);
  json m = json::parse(models->body);
  EXPECT_EQ(m["object"], "list");
  EXPECT_EQ(m["data"][0]["id"], "random");
  auto health = client.Get("/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  auto metrics = client.Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_NE(metrics->body.find("# TYPE whale_time_to_first_token_seconds histogram"),
            std::string::npos);
  EXPECT_NE(metrics->body.find("whale_queue_length "), std::string::npos);
  auto page = client.Get("/");
  ASSERT_TRUE(page);
  EXPECT_EQ(page->status, 200);
  EXPECT_NE(page->body.find("<title>whale chat</title>"), std::string::npos);
  auto missing = client.Get("/v1/nothing");
  ASSERT_TRUE(missing);
  EXPECT_EQ(missing->status, 404);
  EXPECT_TRUE(json::parse(missing->body)["error"]["message"].is_string());
}

TEST_F(Serve, ChatAndCompletionsJsonAndStreamed) {
  ServerProcess server("--model " + *dir_ / "scripted");
  ASSERT_GT(server.port(), 0) << server.log();
  const int port = server.port();
  // Plain transcript "...Assistant:" → "OK", then EOS.
  json chat = post_json(port, "/v1/chat/completions", chat_body("scripted", "Hi"));
  EXPECT_EQ(chat["object"], "chat.completion");
  EXPECT_EQ(chat["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(chat["choices"][0]["message"]["content"], "OK");
  EXPECT_EQ(chat["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(chat["usage"]["completion_tokens"], 2);
  EXPECT_GT(chat["usage"]["prompt_tokens"].get<int>(), 5);
  EXPECT_EQ(chat["usage"]["total_tokens"], chat["usage"]["prompt_tokens"].get<int>() + 2);

  json body = chat_body("scripted", "Hi");
  body["stream"] = true;
  body["stream_options"] = {{"include_usage", true}};
  auto r = post(port, "/v1/chat/completions", body.dump());
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->get_header_value("Content-Type"), "text/event-stream");
  auto sse = parse_sse(r->body);
  EXPECT_TRUE(sse.done && sse.well_formed) << r->body;
  std::string text, finish;
  json usage;
  for (const json& c : sse.chunks) {
    EXPECT_EQ(c["object"], "chat.completion.chunk");
    if (!c["usage"].is_null()) usage = c["usage"];
    for (const json& ch : c["choices"]) {
      if (ch["delta"].contains("content")) text += ch["delta"]["content"].get<std::string>();
      if (!ch["finish_reason"].is_null()) finish = ch["finish_reason"];
    }
  }
  EXPECT_EQ(text, "OK");
  EXPECT_EQ(finish, "stop");
  EXPECT_EQ(usage["completion_tokens"], 2);

  // Completions: a string, token ids, n, stop.
  json completion = post_json(port, "/v1/completions",
                              {{"model", "scripted"}, {"prompt", "Say:"}, {"max_tokens", 5}});
  EXPECT_EQ(completion["object"], "text_completion");
  EXPECT_EQ(completion["choices"][0]["text"], "OK");
  completion = post_json(port, "/v1/completions",
                         {{"model", "scripted"},
                          {"prompt", json::array({256, 'A', ':'})},
                          {"max_tokens", 5},
                          {"n", 3}});
  ASSERT_EQ(completion["choices"].size(), 3u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(completion["choices"][i]["index"], i);
    EXPECT_EQ(completion["choices"][i]["text"], "OK");
  }
  EXPECT_EQ(completion["usage"]["prompt_tokens"], 3);
  EXPECT_EQ(completion["usage"]["completion_tokens"], 6);
  completion = post_json(port, "/v1/completions",
                         {{"model", "scripted"}, {"prompt", "Say:"}, {"stop", {"K"}}});
  EXPECT_EQ(completion["choices"][0]["text"], "O");
  EXPECT_EQ(completion["choices"][0]["finish_reason"], "stop");
  completion = post_json(port, "/v1/completions",
                         {{"model", "scripted"}, {"prompt", "Say:"}, {"max_tokens", 1}});
  EXPECT_EQ(completion["choices"][0]["text"], "O");
  EXPECT_EQ(completion["choices"][0]["finish_reason"], "length");

  auto streamed = post(port, "/v1/completions",
                       json{{"model", "scripted"}, {"prompt", "Say:"}, {"stream", true}}.dump());
  ASSERT_TRUE(streamed);
  sse = parse_sse(streamed->body);
  EXPECT_TRUE(sse.done);
  text.clear();
  for (const json& c : sse.chunks)
    for (const json& ch : c["choices"]) text += ch["text"].get<std::string>();
  EXPECT_EQ(text, "OK");
  EXPECT_EQ(server.stop(), 0) << server.log();
}

TEST_F(Serve, ReasoningContentApartFromTheAnswer) {
  if (!r1_) GTEST_SKIP() << "no ../shared/assets/deepseek-r1-tokenizer";
  ServerProcess server("--model " + *dir_ / "scripted-r1");
  ASSERT_GT(server.port(), 0) << server.log();
  // R1's generation prompt ends "<think>\n": the model says "ab</think>XY".
  json chat = post_json(server.port(), "/v1/chat/completions", chat_body("scripted-r1", "Hi", 20));
  EXPECT_EQ(chat["choices"][0]["message"]["reasoning_content"], "ab");
  EXPECT_EQ(chat["choices"][0]["message"]["content"], "XY");
  json body = chat_body("scripted-r1", "Hi", 20);
  body["stream"] = true;
  auto r = post(server.port(), "/v1/chat/completions", body.dump());
  ASSERT_TRUE(r);
  auto sse = parse_sse(r->body);
  std::string reasoning, content;
  for (const json& c : sse.chunks)
    for (const json& ch : c["choices"]) {
      if (ch["delta"].contains("reasoning_content"))
        reasoning += ch["delta"]["reasoning_content"].get<std::string>();
      if (ch["delta"].contains("content")) content += ch["delta"]["content"].get<std::string>();
    }
  EXPECT_EQ(reasoning, "ab");
  EXPECT_EQ(content, "XY");
}

TEST_F(Serve, EveryBadInputIsA4xxInOpenAIsShape) {
  const int port = server_->port();
  const std::string long_prompt(3000, 'x');  // the model's context is 1024
  struct Case {
    std::string name, body;
    int status;
    std::string path = "/v1/chat/completions";
  };
  auto chat_with = [](const std::string& key, const json& value) {
    json b = chat_body("random", "hi");
    b[key] = value;
    return b.dump();
  };
  std::vector<Case> cases = {
      {"malformed JSON", "{\"model\": \"random\", \"messages\": [", 400},
      {"empty body", "", 400},
      {"not an object", "[1, 2]", 400},
      {"invalid UTF-8",
       "{\"model\": \"random\", \"messages\": [{\"role\": \"user\", "
       "\"content\": \"\xff\xfe\xc3\"}]}",
       400},
      {"deep nesting", std::string(100000, '[') + std::string(100000, ']'), 400},
      {"unknown model", chat_body("nope", "hi").dump(), 404},
      {"model not a string", chat_with("model", 7), 400},
      {"messages missing", json{{"model", "random"}}.dump(), 400},
      {"empty messages", json{{"model", "random"}, {"messages", json::array()}}.dump(), 400},
      {"messages not an array", chat_with("messages", "hi"), 400},
      {"message not an object", chat_with("messages", {"hi"}), 400},
      {"bad role", chat_with("messages", {{{"role", "wizard"}, {"content", "hi"}}}), 400},
      {"content a number", chat_with("messages", {{{"role", "user"}, {"content", 5}}}), 400},
      {"temperature a string", chat_with("temperature", "hot"), 400},
      {"temperature out of range", chat_with("temperature", 7), 400},
      {"top_p zero", chat_with("top_p", 0), 400},
      {"stream not a bool", chat_with("stream", "yes"), 400},
      {"n zero", chat_with("n", 0), 400},
      {"n huge", chat_with("n", 1000), 400},
      {"seed a float", chat_with("seed", 1.5), 400},
      {"stop a number", chat_with("stop", 3), 400},
      {"too many stops", chat_with("stop", {"a", "b", "c", "d", "e"}), 400},
      {"max_tokens zero", chat_with("max_tokens", 0), 400},
      {"max_tokens negative", chat_with("max_tokens", -5), 400},
      {"max_tokens absurd", chat_with("max_tokens", 1000000000000LL), 400},
      {"max_tokens past the context", chat_with("max_tokens", 1020), 400},
      {"max_tokens a float", chat_with("max_tokens", 2.5), 400},
      {"stream_options without stream", chat_with("stream_options", {{"include_usage", true}}),
       400},
      {"prompt longer than the context", chat_body("random", long_prompt).dump(), 400},
      {"completion prompt missing", json{{"model", "random"}}.dump(), 400, "/v1/completions"},
      {"completion prompt empty", json{{"model", "random"}, {"prompt", json::array()}}.dump(), 400,
       "/v1/completions"},
      {"token id out of range", json{{"model", "random"}, {"prompt", {1, 99999}}}.dump(), 400,
       "/v1/completions"},
      {"completion prompt too long", json{{"model", "random"}, {"prompt", long_prompt}}.dump(), 400,
       "/v1/completions"},
  };
  for (const Case& c : cases) {
    auto r = post(port, c.path, c.body);
    ASSERT_TRUE(r) << c.name;
    EXPECT_EQ(r->status, c.status) << c.name << ": " << r->body;
    json body;
    ASSERT_NO_THROW(body = json::parse(r->body)) << c.name << ": " << r->body;
    ASSERT_TRUE(body.contains("error")) << c.name;
    EXPECT_TRUE(body["error"]["message"].is_string()) << c.name;
    EXPECT_TRUE(body["error"]["type"].is_string()) << c.name;
    EXPECT_TRUE(body["error"].contains("param") && body["error"].contains("code")) << c.name;
  }
  // The server still serves.
  json ok = post_json(port, "/v1/chat/completions", chat_body("random", "hi", 3));
  EXPECT_EQ(ok["choices"].size(), 1u);
}

// Sends a streaming request on a raw socket, reads the first bytes, and hangs up.
void hang_up_mid_stream(int port, const std::string& body) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  std::string request =
      "POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
      "Content-Type: application/json\r\nContent-Length: " +
      std::to_string(body.size()) + "\r\n\r\n" + body;
  ASSERT_EQ(send(fd, request.data(), request.size(), 0), static_cast<ssize_t>(request.size()));
  std::string got;
  char buf[4096];
  while (got.find("data: {") == std::string::npos) {
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    ASSERT_GT(n, 0);
    got.append(buf, n);
  }
  close(fd);
}

TEST_F(Serve, ClientHangingUpMidStreamIsCancelledAndFreed) {
  ServerProcess server("--model " + *dir_ / "looping");
  ASSERT_GT(server.port(), 0) << server.log();
  const int port = server.port();
  hang_up_mid_stream(
      port,
      json{{"model", "looping"}, {"prompt", "Go:"}, {"max_tokens", 4000}, {"stream", true}}.dump());
  // Cancelled within moments, its blocks back in the pool (4000 tokens would take seconds).
  json cancelled, used;
  for (int i = 0; i < 200; ++i) {
    cancelled = metrics_value(port, "whale_requests_cancelled_total");
    used = metrics_value(port, "whale_cache_blocks_used");
    if (cancelled == 1 && used == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(cancelled, 1);
  EXPECT_EQ(used, 0);
  json generated = metrics_value(port, "whale_generation_tokens_total");
  EXPECT_LT(generated.get<double>(), 4000);
  json again = post_json(port, "/v1/completions",
                         {{"model", "looping"}, {"prompt", "Go:"}, {"max_tokens", 6}});
  EXPECT_EQ(again["choices"][0]["text"], "LoLoLo");
  EXPECT_EQ(server.stop(), 0) << server.log();
}

TEST_F(Serve, ConcurrentRequestsShareBatchesAndWaitForMemory) {
  // A pool of 12 blocks of 16 positions: 192 tokens, while 8 requests want ~70 each.
  const size_t block_bytes = 2 * 16 * (32 + 8) * sizeof(float);
  const double mib = 12.0 * block_bytes / (1 << 20);
  ServerProcess server("--model " + *dir_ / "looping" + " --max-batch 8 --cache-mib " +
                       std::to_string(mib));
  ASSERT_GT(server.port(), 0) << server.log();
  const int port = server.port();
  std::vector<std::future<std::string>> results;
  for (int i = 0; i < 8; ++i)
    results.push_back(std::async(std::launch::async, [port, i] {
      json body = {{"model", "looping"},
                   {"prompt", "Request " + std::to_string(i) + ":"},
                   {"max_tokens", 60},
                   {"stream", i % 2 == 0}};
      auto r = post(port, "/v1/completions", body.dump());
      if (!r || r->status != 200) return std::string("failed");
      if (i % 2) return json::parse(r->body)["choices"][0]["text"].get<std::string>();
      std::string text;
      for (const json& c : parse_sse(r->body).chunks)
        for (const json& ch : c["choices"]) text += ch["text"].get<std::string>();
      return text;
    }));
  std::string expected;
  for (int i = 0; i < 30; ++i) expected += "Lo";
  for (auto& f : results) EXPECT_EQ(f.get(), expected);
  // More than one sequence went through some forward pass.
  httplib::Client client("127.0.0.1", port);
  auto m = client.Get("/metrics");
  ASSERT_TRUE(m);
  const std::string bucket = "whale_batch_sequences_bucket{le=\"1\"} ";
  size_t at = m->body.find(bucket);
  ASSERT_NE(at, std::string::npos);
  double single = std::atof(m->body.c_str() + at + bucket.size());
  double steps = metrics_value(port, "whale_batch_sequences_count").get<double>();
  EXPECT_LT(single, steps);
  EXPECT_EQ(metrics_value(port, "whale_cache_blocks_used"), 0);
  EXPECT_EQ(server.stop(), 0) << server.log();
}

TEST_F(Serve, RepeatedSystemPromptComesFromThePrefixCache) {
  ServerProcess server("--model " + *dir_ / "random");
  ASSERT_GT(server.port(), 0) << server.log();
  std::string system;
  for (int i = 0; i < 40; ++i) system += "Rule " + std::to_string(i) + ": be brief. ";
  auto ask = [&](const std::string& user) {
    json body = {
        {"model", "random"},
        {"messages",
         {{{"role", "system"}, {"content", system}}, {{"role", "user"}, {"content", user}}}},
        {"max_tokens", 2}};
    return post_json(server.port(), "/v1/chat/completions", body)["usage"];
  };
  json first = ask("What is 2+2?");
  json second = ask("And 3+3?");
  EXPECT_EQ(first["prompt_cache_hit_tokens"], 0);
  EXPECT_EQ(first["prompt_cache_miss_tokens"], first["prompt_tokens"]);
  const int prompt = second["prompt_tokens"].get<int>();
  const int hit = second["prompt_cache_hit_tokens"].get<int>();
  EXPECT_GE(hit, static_cast<int>(system.size()) - 16);  // all the system prompt's full blocks
  EXPECT_LT(hit, prompt);
  EXPECT_EQ(second["prompt_cache_miss_tokens"], prompt - hit);
  EXPECT_EQ(second["prompt_tokens_details"]["cached_tokens"], hit);
  EXPECT_GT(metrics_value(server.port(), "whale_prefix_cache_hit_rate").get<double>(), 0.3);
}

TEST_F(Serve, ApiKeyIsChecked) {
  ServerProcess server("--model " + *dir_ / "scripted" + " --api-key sekret");
  ASSERT_GT(server.port(), 0) << server.log();
  auto r = post(server.port(), "/v1/chat/completions", chat_body("scripted", "Hi").dump());
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 401);
  EXPECT_EQ(json::parse(r->body)["error"]["code"], "invalid_api_key");
  r = post(server.port(), "/v1/chat/completions", chat_body("scripted", "Hi").dump(), "wrong");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 401);
  r = post(server.port(), "/v1/chat/completions", chat_body("scripted", "Hi").dump(), "sekret");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
}

TEST_F(Serve, SigtermFinishesInFlightRequestsAndExitsZero) {
  ServerProcess server("--model " + *dir_ / "looping");
  ASSERT_GT(server.port(), 0) << server.log();
  const int port = server.port();
  auto pending = std::async(std::launch::async, [port] {
    json body = {{"model", "looping"}, {"prompt", "Go:"}, {"max_tokens", 300}, {"stream", true}};
    auto r = post(port, "/v1/completions", body.dump());
    return r ? parse_sse(r->body) : whale::testing::SseEvents{};
  });
  // Wait until it runs, then SIGTERM: the stream still ends properly, and the exit is clean.
  for (int i = 0; i < 200 && metrics_value(port, "whale_running_sequences") != 1; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_EQ(server.stop(), 0) << server.log();
  auto sse = pending.get();
  EXPECT_TRUE(sse.done);
  ASSERT_FALSE(sse.chunks.empty());
  EXPECT_EQ(sse.chunks.back()["choices"][0]["finish_reason"], "length");
}

}  // namespace
}  // namespace whale
