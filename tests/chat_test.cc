// whale chat through a pipe: replies stream, /reset clears the conversation, the KV cache
// reuse gives what recomputing gives, Ctrl-C stops a reply but not the program, a folder
// without a tokenizer is a clean error. Two tiny models with the byte-level tokenizer: a
// random one, and one built to answer with a fixed text (a bigram chain: every block writes
// zeros, so the logits depend only on the last token), which shows the reasoning part apart.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <map>

#include "io/safetensors.h"
#include "scripted_model.h"
#include "test_util.h"
#include "train/data.h"

namespace whale {
namespace {

using nlohmann::json;
using whale::testing::run_whale;
using whale::testing::TempDir;

struct Result {
  int exit_code = -1;
  std::string out, err;
};

// Runs whale with `input` on stdin; stdout and stderr apart. One thread: the tiny models gain
// nothing from more, and on a busy machine OpenMP's barriers would wait for descheduled ones.
Result run_chat(const std::string& args, const std::string& input, const TempDir& dir) {
  write_file_atomic(dir / "stdin.txt", input);
  std::string command = std::string(WHALE_BINARY) + " --threads 1 " + args + " < " +
                        dir / "stdin.txt" + " > " + dir / "stdout.txt" + " 2> " +
                        dir / "stderr.txt";
  int status = std::system(command.c_str());
  Result r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = read_file(dir / "stdout.txt");
  r.err = read_file(dir / "stderr.txt");
  return r;
}

size_t count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

// The "[prompt N tokens (R reused, ..." lines of --stats: (N, R) per turn.
std::vector<std::pair<int, int>> prompt_stats(const std::string& err) {
  std::vector<std::pair<int, int>> out;
  for (size_t at = err.find("[prompt "); at != std::string::npos;
       at = err.find("[prompt ", at + 1)) {
    int n = 0, r = 0;
    std::sscanf(err.c_str() + at, "[prompt %d tokens (%d reused", &n, &r);
    out.push_back({n, r});
  }
  return out;
}

class Chat : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    TempDir& d = *dir_;
    // A tiny V3 over the byte-level vocabulary: 256 bytes, BOS 256, EOS 257.
    auto r = run_whale("init --preset tiny --out " + d / "preset");
    ASSERT_EQ(r.exit_code, 0) << r.output;
    json config = json::parse(read_file(d / "preset/config.json"));
    config["vocab_size"] = kByteVocabSize;
    config["bos_token_id"] = 256;
    config["eos_token_id"] = 257;
    config["max_position_embeddings"] = 32768;  // a long window for the interrupt to land in
    write_file_atomic(d / "config.json", config.dump(2));
    for (const char* name :
         {"random", "scripted", "scripted-r1", "scripted-v3", "looping", "no-tokenizer"}) {
      r = run_whale("init --config " + d / "config.json" + " --dtype f32 --seed 3 --out " +
                    d / name);
      ASSERT_EQ(r.exit_code, 0) << r.output;
      if (std::string(name) != "no-tokenizer") {
        write_file_atomic(d / name + "/tokenizer.json", byte_level_tokenizer_json());
        write_file_atomic(d / name + "/tokenizer_config.json", byte_level_tokenizer_config_json());
      }
    }
    script(d / "scripted", kScript);
    script(d / "scripted-r1", kScript);
    script(d / "scripted-v3", kScript);
    script(d / "looping", {{':', 'L'}, {'L', 'o'}, {'o', 'L'}});  // "LoLoLo..." until stopped
    // The real R1 and V3 chat templates, when their tokenizers are at hand.
    has_templates_ = true;
    for (const char* version : {"r1", "v3"}) {
      std::string config_path = whale::testing::source_dir() + "/../shared/assets/deepseek-" +
                                version + "-tokenizer/tokenizer_config.json";
      if (!std::filesystem::exists(config_path)) {
        has_templates_ = false;
        continue;
      }
      json with_template = json::parse(byte_level_tokenizer_config_json());
      with_template["chat_template"] = json::parse(read_file(config_path))["chat_template"];
      write_file_atomic(d / "scripted-" + version + "/tokenizer_config.json",
                        with_template.dump(2));
    }
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }

  static inline const std::vector<std::pair<char, int>>& kScript = whale::testing::kThinkScript;
  static void script(const std::string& dir, const std::vector<std::pair<char, int>>& chain) {
    whale::testing::script_bigram_model(dir, chain);
  }

  static TempDir* dir_;
  static bool has_templates_;
};
TempDir* Chat::dir_ = nullptr;
bool Chat::has_templates_ = false;

TEST_F(Chat, StreamsRepliesKeepsHistoryAndResets) {
  TempDir t;
  Result r = run_chat("chat --model " + *dir_ / "random" + " --max-tokens 6 --seed 1 --stats",
                      "hello\nhow are you?\n\n/reset\nhello\n", t);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(count(r.err, "has no chat template"), 1u) << r.err;
  EXPECT_EQ(count(r.out, "[conversation cleared]"), 1u) << r.out;
  auto stats = prompt_stats(r.err);
  ASSERT_EQ(stats.size(), 3u) << r.err;
  // Turn 2 holds turn 1 and the reply; after /reset the prompt is turn 1's again.
  EXPECT_GT(stats[1].first, stats[0].first + 6);
  EXPECT_GT(stats[1].second, stats[0].first / 2);  // most of turn 1 came from the KV cache
  EXPECT_EQ(stats[2].first, stats[0].first);
  EXPECT_EQ(count(r.err, "; reply "), 3u) << r.err;
  EXPECT_FALSE(r.out.empty());
}

TEST_F(Chat, CacheReuseGivesWhatRecomputingGives) {
  TempDir t;
  std::string input = "one\ntwo\nthree\n/reset\nfour\n";
  std::string args = "chat --model " + *dir_ / "random" + " --max-tokens 5 --temperature 0";
  Result reuse = run_chat(args, input, t);
  Result fresh = run_chat(args + " --no-cache-reuse", input, t);
  ASSERT_EQ(reuse.exit_code, 0) << reuse.err;
  ASSERT_EQ(fresh.exit_code, 0) << fresh.err;
  EXPECT_EQ(reuse.out, fresh.out);
  EXPECT_GT(reuse.out.size(), 20u);
}

TEST_F(Chat, PlainFormatAnswer) {
  TempDir t;
  Result r = run_chat("chat --model " + *dir_ / "scripted" + " --seed 2", "Hi\nAnd again\n", t);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "OK\nOK\n");
}

TEST_F(Chat, ReasoningIsShownApart) {
  if (!has_templates_) GTEST_SKIP() << "no ../shared/assets/deepseek-{r1,v3}-tokenizer";
  TempDir t;
  Result r = run_chat("chat --model " + *dir_ / "scripted-r1" + " --system 'Be brief.' --stats",
                      "Hi\nAnd again\n/exit\nnot read\n", t);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "[thinking] ab\nXY\n[thinking] ab\nXY\n");
  EXPECT_EQ(count(r.err, "chat template"), 0u) << r.err;
  auto stats = prompt_stats(r.err);
  ASSERT_EQ(stats.size(), 2u) << r.err;
  // R1's template drops the earlier reasoning: turn 2 reuses the cache up to turn 1's answer.
  EXPECT_GT(stats[1].second, 10);
}

TEST_F(Chat, V3TemplateAnswer) {
  if (!has_templates_) GTEST_SKIP() << "no ../shared/assets/deepseek-{r1,v3}-tokenizer";
  TempDir t;
  // V3's generation prompt ends "<｜Assistant｜>": after '>' the chain says "XY".
  Result r = run_chat("chat --model " + *dir_ / "scripted-v3" + " --stats", "Hi\nAgain\n", t);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "XY\nXY\n");
  auto stats = prompt_stats(r.err);
  ASSERT_EQ(stats.size(), 2u) << r.err;
  EXPECT_EQ(stats[1].second, stats[0].first + 2);  // turn 1 and its reply "XY" came from the cache
}

TEST_F(Chat, MissingTokenizerIsAOneLineError) {
  TempDir t;
  Result r = run_chat("chat --model " + *dir_ / "no-tokenizer", "hello\n", t);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(count(r.err, "\n"), 1u) << r.err;
  EXPECT_NE(r.err.find("no tokenizer.json"), std::string::npos) << r.err;
  EXPECT_EQ(r.out, "");
  r = run_chat("chat --model " + *dir_ / "does-not-exist", "hello\n", t);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("no such model folder"), std::string::npos) << r.err;
}

TEST_F(Chat, InterruptStopsTheReplyNotTheProgram) {
  int in[2], out[2];
  ASSERT_EQ(pipe(in), 0);
  ASSERT_EQ(pipe(out), 0);
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    dup2(in[0], 0);
    dup2(out[1], 1);
    dup2(out[1], 2);
    close(in[1]);
    close(out[0]);
    std::string model = *dir_ / "looping";
    execl(WHALE_BINARY, WHALE_BINARY, "--threads", "1", "chat", "--model", model.c_str(),
          "--max-tokens", "100000", "--seed", "5", static_cast<char*>(nullptr));
    _exit(127);
  }
  close(in[0]);
  close(out[1]);
  auto send = [&](const std::string& s) {
    ASSERT_EQ(write(in[1], s.data(), s.size()), static_cast<ssize_t>(s.size()));
  };
  std::string output;
  auto read_until = [&](auto done) {
    char buf[4096];
    for (int waited = 0; !done() && waited < 200;) {  // at most ~20 s
      pollfd p{out[0], POLLIN, 0};
      if (poll(&p, 1, 100) <= 0) {
        ++waited;
        continue;
      }
      ssize_t n = read(out[0], buf, sizeof buf);
      if (n <= 0) break;
      output.append(buf, n);
    }
  };
  send("tell me a long story\n");
  read_until([&] { return output.size() > 300; });  // the reply is streaming
  ASSERT_GT(output.size(), 300u) << output;
  kill(pid, SIGINT);
  read_until([&] { return output.find("[stopped]") != std::string::npos; });
  EXPECT_NE(output.find("[stopped]"), std::string::npos);
  send("/reset\n");
  read_until([&] { return output.find("[conversation cleared]") != std::string::npos; });
  EXPECT_NE(output.find("[conversation cleared]"), std::string::npos);
  close(in[1]);  // end of input: quits
  read_until([] { return false; });
  int status = 0;
  waitpid(pid, &status, 0);
  close(out[0]);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
}

}  // namespace
}  // namespace whale
