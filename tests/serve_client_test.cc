// Real clients against whale serve: the official openai npm package (chat and completions,
// streamed and not, reasoning_content), and the web chat page in headless Chromium. They need
// node with build/npm (scripts/npm_deps.sh) and, for the page, Debian's chromium; without
// them the tests skip, saying what is missing (scripts/install.sh installs both for CI).
#include "serve_util.h"

namespace whale {
namespace {

using whale::testing::ServerProcess;
using whale::testing::TempDir;

std::string npm_dir() {
  return (std::filesystem::path(WHALE_BINARY).parent_path() / "npm").string();
}

// Why node clients cannot run here, or "".
std::string missing_node(const std::string& package) {
  if (std::system("command -v node > /dev/null 2>&1") != 0) return "no node on PATH";
  if (!std::filesystem::exists(npm_dir() + "/node_modules/" + package))
    return "no " + npm_dir() + "/node_modules/" + package + " (run scripts/npm_deps.sh)";
  return "";
}

class ServeClients : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    whale::testing::make_byte_model(*dir_, "scripted", 1024, whale::testing::kThinkScript);
    r1_ = !whale::testing::r1_tokenizer_config().empty();
    if (r1_)
      whale::testing::make_byte_model(*dir_, "scripted-r1", 1024, whale::testing::kThinkScript,
                                      whale::testing::r1_tokenizer_config());
  }
  static void TearDownTestSuite() { delete dir_; }
  static TempDir* dir_;
  static bool r1_;
};
TempDir* ServeClients::dir_ = nullptr;
bool ServeClients::r1_ = false;

TEST_F(ServeClients, OfficialOpenAINodeClient) {
  std::string missing = missing_node("openai");
  if (!missing.empty()) GTEST_SKIP() << missing;
  ServerProcess server("--model " + *dir_ / "scripted");
  ASSERT_GT(server.port(), 0) << server.log();
  std::unique_ptr<ServerProcess> r1;
  std::string args = npm_dir() + " http://127.0.0.1:" + std::to_string(server.port()) + " scripted";
  if (r1_) {
    r1 = std::make_unique<ServerProcess>("--model " + *dir_ / "scripted-r1");
    ASSERT_GT(r1->port(), 0) << r1->log();
    args += " http://127.0.0.1:" + std::to_string(r1->port()) + " scripted-r1";
  } else {
    std::fprintf(stderr,
                 "no ../shared/assets/deepseek-r1-tokenizer: reasoning_content unchecked\n");
  }
  std::string command =
      "node " + whale::testing::source_dir() + "/tests/serve/openai_client.mjs " + args + " 2>&1";
  FILE* pipe = popen(command.c_str(), "r");
  ASSERT_TRUE(pipe);
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, pipe)) > 0) out.append(buf, n);
  int status = pclose(pipe);
  EXPECT_EQ(WIFEXITED(status) ? WEXITSTATUS(status) : -1, 0) << out << server.log();
  EXPECT_NE(out.find("all checks passed"), std::string::npos) << out;
  EXPECT_EQ(server.stop(), 0);
}

std::string run_node(const std::string& args, int& exit_code) {
  std::string command = "node " + args + " 2>&1";
  FILE* pipe = popen(command.c_str(), "r");
  std::string out;
  if (!pipe) return out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, pipe)) > 0) out.append(buf, n);
  int status = pclose(pipe);
  exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return out;
}

TEST_F(ServeClients, WebChatPageInHeadlessChromium) {
  std::string missing = missing_node("playwright-core");
  if (!missing.empty()) GTEST_SKIP() << missing;
  const std::string chromium = "/usr/bin/chromium";
  if (!std::filesystem::exists(chromium)) GTEST_SKIP() << "no " << chromium << " (apt chromium)";
  const std::string model = r1_ ? "scripted-r1" : "scripted";
  ServerProcess server("--model " + *dir_ / model);
  ASSERT_GT(server.port(), 0) << server.log();
  std::string args = whale::testing::source_dir() + "/tests/serve/web_chat.mjs " + npm_dir() + " " +
                     chromium + " http://127.0.0.1:" + std::to_string(server.port());
  args += r1_ ? " XY ab" : " OK";
  int code = -1;
  std::string out = run_node(args, code);
  EXPECT_EQ(code, 0) << out << server.log();
  EXPECT_NE(out.find("streamed answer shown"), std::string::npos) << out;
  EXPECT_EQ(server.stop(), 0);
}

}  // namespace
}  // namespace whale
