// Helpers of the `whale serve` tests: models with a byte-level tokenizer (random, or scripted
// to a known answer), a server process on a free port, and an SSE reader.
#pragma once
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "scripted_model.h"
#include "test_util.h"
#include "train/data.h"

namespace whale::testing {

// Writes a tiny V3 over the byte-level vocabulary (256 bytes, BOS 256, EOS 257) into dir/name,
// with the byte-level tokenizer; chain non-empty: scripted to that bigram chain. template_from:
// a tokenizer_config.json whose chat_template to use ("" for none).
inline void make_byte_model(const TempDir& dir, const std::string& name, int context,
                            const std::vector<std::pair<char, int>>& chain,
                            const std::string& template_from = "") {
  auto r = run_whale("init --preset tiny --out " + dir / (name + "-preset"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  nlohmann::json config = nlohmann::json::parse(read_file(dir / (name + "-preset/config.json")));
  config["vocab_size"] = kByteVocabSize;
  config["bos_token_id"] = 256;
  config["eos_token_id"] = 257;
  config["max_position_embeddings"] = context;
  write_file_atomic(dir / (name + ".json"), config.dump(2));
  r = run_whale("init --config " + dir / (name + ".json") + " --dtype f32 --seed 3 --out " +
                dir / name);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  write_file_atomic(dir / name + "/tokenizer.json", byte_level_tokenizer_json());
  nlohmann::json tc = nlohmann::json::parse(byte_level_tokenizer_config_json());
  if (!template_from.empty())
    tc["chat_template"] = nlohmann::json::parse(read_file(template_from))["chat_template"];
  write_file_atomic(dir / name + "/tokenizer_config.json", tc.dump(2));
  if (!chain.empty()) script_bigram_model(dir / name, chain);
}

// The R1 tokenizer config from the shared assets, or "" when it is not at hand.
inline std::string r1_tokenizer_config() {
  std::string path = source_dir() + "/../shared/assets/deepseek-r1-tokenizer/tokenizer_config.json";
  return std::filesystem::exists(path) ? path : "";
}

// `whale serve` in a child process on a free port; SIGTERM and reaped when destroyed.
class ServerProcess {
 public:
  explicit ServerProcess(const std::string& args) {
    char tmpl[] = "/tmp/whale-serve-log-XXXXXX";
    int fd = mkstemp(tmpl);
    log_path_ = tmpl;
    pid_ = fork();
    if (pid_ == 0) {
      dup2(fd, 1);
      dup2(fd, 2);
      std::string command =
          std::string("exec ") + WHALE_BINARY + " --threads 1 serve --port 0 " + args;
      execl("/bin/sh", "sh", "-c", command.c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
    close(fd);
    // Wait for "on http://HOST:PORT".
    for (int i = 0; i < 600 && port_ <= 0; ++i) {
      std::string log = read_file(log_path_);
      size_t at = log.find("on http://");
      if (at != std::string::npos) {
        size_t colon = log.find(':', at + 10);
        if (colon != std::string::npos) port_ = std::atoi(log.c_str() + colon + 1);
      }
      int status;
      if (port_ <= 0 && waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        break;
      }
      if (port_ <= 0) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
  ~ServerProcess() {
    if (pid_ > 0) stop();
    std::remove(log_path_.c_str());
  }
  int port() const { return port_; }
  std::string log() const { return read_file(log_path_); }
  // SIGTERM, then the exit status (-1: killed after 30 s, or not exited normally).
  int stop() {
    if (pid_ <= 0) return -1;
    kill(pid_, SIGTERM);
    int status = 0;
    for (int i = 0; i < 3000; ++i) {
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    kill(pid_, SIGKILL);
    waitpid(pid_, &status, 0);
    pid_ = -1;
    return -1;
  }

 private:
  pid_t pid_ = -1;
  int port_ = -1;
  std::string log_path_;
};

// The JSON payloads of an SSE body's "data: " lines, and whether it ended with [DONE].
struct SseEvents {
  std::vector<nlohmann::json> chunks;
  bool done = false;
  bool well_formed = true;
};
inline SseEvents parse_sse(const std::string& body) {
  SseEvents out;
  size_t pos = 0;
  while (pos < body.size()) {
    size_t end = body.find("\n\n", pos);
    if (end == std::string::npos) {
      out.well_formed = false;
      break;
    }
    std::string event = body.substr(pos, end - pos);
    pos = end + 2;
    if (event.starts_with(":")) continue;  // comment (keep-alive)
    if (!event.starts_with("data: ")) {
      out.well_formed = false;
      continue;
    }
    std::string data = event.substr(6);
    if (data == "[DONE]") {
      out.done = true;
      continue;
    }
    out.chunks.push_back(nlohmann::json::parse(data));
  }
  return out;
}

}  // namespace whale::testing
