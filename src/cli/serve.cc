// whale serve: the OpenAI-compatible HTTP server (serve/http_api.h) over the continuous-batching
// scheduler (serve/scheduler.h). SIGTERM or SIGINT shuts it down gracefully: new requests get
// 503, requests in flight may finish for --drain-seconds, the rest are cancelled, exit 0.
#include <omp.h>
#include <pthread.h>
#include <signal.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <thread>

#include "base/error.h"
#include "cli/commands.h"
#include "model/transformer.h"
#include "serve/http_api.h"
#include "serve/metrics.h"
#include "serve/scheduler.h"
#include "text/chat_template.h"
#include "text/tokenizer.h"

namespace whale {

namespace {

struct ServeOptions {
  std::string model_dir, host = "127.0.0.1", api_key, model_name;
  int port = 8080, max_batch = 16, block_tokens = 16, step_tokens = 256, max_n = 16;
  double cache_mib = 1024, drain_seconds = 30;
  bool no_prefix_cache = false;
};

void run_server(const ServeOptions& o) {
  // Signals go to one thread that waits for them (blocked here, so in every thread started
  // from now on); a client that hangs up must not kill the server with SIGPIPE.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGUSR1);  // wakes the signal thread when the server stops by itself
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  const std::string& dir = o.model_dir;
  check(std::filesystem::is_directory(dir), dir + ": no such model folder");
  check(std::filesystem::exists(dir + "/tokenizer.json"),
        dir + ": no tokenizer.json (whale serve needs the model's tokenizer files)");
  auto tokenizer = text::Tokenizer::load(dir);
  std::unique_ptr<text::ChatTemplate> chat_template;
  if (tokenizer->chat_template().empty())
    std::fprintf(stderr,
                 "whale serve: %s has no chat template; chat requests use a plain "
                 "\"User: ...\\nAssistant:\" transcript\n",
                 dir.c_str());
  else
    chat_template = text::ChatTemplate::for_tokenizer(*tokenizer, dir);
  auto model = Model::load(dir);
  const ModelConfig& c = model->config();
  check(tokenizer->vocab_size() <= c.vocab_size,
        dir + ": the tokenizer has " + std::to_string(tokenizer->vocab_size()) +
            " ids but the model's vocabulary is " + std::to_string(c.vocab_size));
  std::vector<int> eos = c.eos_token_ids;
  if (tokenizer->eos_id() >= 0) eos.push_back(tokenizer->eos_id());

  check(o.max_batch >= 1, "serve: --max-batch must be at least 1");
  check(o.cache_mib > 0, "serve: --cache-mib must be positive");
  serve::Metrics metrics;
  serve::SchedulerOptions so;
  so.max_batch = o.max_batch;
  so.cache_bytes = static_cast<size_t>(o.cache_mib * (1 << 20));
  so.block_tokens = o.block_tokens;
  so.step_tokens = std::max(1, o.step_tokens);
  so.prefix_caching = !o.no_prefix_cache;
  so.threads = omp_get_max_threads();
  serve::Scheduler scheduler(*model, *tokenizer, eos, so, metrics);

  serve::ApiOptions ao;
  ao.api_key = o.api_key;
  ao.limits.model_name = o.model_name.empty()
                             ? std::filesystem::path(dir).lexically_normal().filename().string()
                             : o.model_name;
  if (ao.limits.model_name.empty())  // "DIR/" ends in an empty name
    ao.limits.model_name =
        std::filesystem::path(dir).lexically_normal().parent_path().filename().string();
  ao.limits.context = c.max_position_embeddings;
  ao.limits.capacity_tokens = scheduler.capacity_tokens();
  ao.limits.max_n = o.max_n;
  ao.http_threads = std::max(64, 4 * o.max_batch);
  serve::ApiServer server(ao, *tokenizer, chat_template.get(), scheduler, metrics);
  const int port = server.bind(o.host, o.port);
  check(port > 0, "serve: cannot listen on " + o.host + ":" + std::to_string(o.port));
  std::fprintf(stderr,
               "whale serve: model '%s' on http://%s:%d (batch %d, KV cache %d tokens in blocks "
               "of %d%s)\n",
               ao.limits.model_name.c_str(), o.host.c_str(), port, o.max_batch,
               scheduler.capacity_tokens(), o.block_tokens,
               o.no_prefix_cache ? ", no prefix cache" : ", prefix cache");
  std::fflush(stderr);

  std::thread watcher([&] {
    int sig = 0;
    sigwait(&signals, &sig);
    if (sig == SIGUSR1) return;
    std::fprintf(stderr, "whale serve: %s, shutting down\n", sig == SIGTERM ? "SIGTERM" : "SIGINT");
    server.refuse_new_requests();
    const auto deadline =
        std::chrono::steady_clock::now() + std::chrono::duration<double>(o.drain_seconds);
    while (scheduler.in_flight() > 0 && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    if (scheduler.in_flight() > 0) {
      std::fprintf(stderr, "whale serve: cancelling %d sequences still running\n",
                   scheduler.in_flight());
      scheduler.cancel_all();
      for (int i = 0; i < 100 && scheduler.in_flight() > 0; ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    // Let the streams write their last chunks before the connections close.
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    server.stop();
  });
  const bool ok = server.serve();
  pthread_kill(watcher.native_handle(), SIGUSR1);
  watcher.join();
  check(ok, "serve: the HTTP server stopped unexpectedly");
  std::fprintf(stderr, "whale serve: stopped\n");
}

}  // namespace

void add_serve_command(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "serve",
      "OpenAI-compatible HTTP server (/v1/chat/completions, /v1/completions, /v1/models, "
      "/health, /metrics) with continuous batching, a paged KV cache, prefix caching, and a "
      "web chat page at /");
  static ServeOptions o;
  cmd->add_option("--model", o.model_dir, "Model folder (with tokenizer.json)")->required();
  cmd->add_option("--host", o.host, "Address to listen on (default 127.0.0.1)");
  cmd->add_option("--port", o.port, "Port (default 8080; 0: any free port)")
      ->check(CLI::Range(0, 65535));
  cmd->add_option("--api-key", o.api_key, "Require 'Authorization: Bearer KEY' on the API");
  cmd->add_option("--model-name", o.model_name,
                  "Model id clients ask for (default: the model folder's name)");
  cmd->add_option("--max-batch", o.max_batch, "Most sequences decoded together (default 16)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--cache-mib", o.cache_mib, "KV cache budget in MiB (default 1024)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--max-n", o.max_n, "Most choices (n) per request (default 16)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--drain-seconds", o.drain_seconds,
                  "On SIGTERM, how long requests in flight may finish (default 30)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_flag("--no-prefix-cache", o.no_prefix_cache, "Never reuse cached prompt blocks");
  cmd->add_option("--block-tokens", o.block_tokens, "Positions per KV cache block (power of 2)")
      ->group("");
  cmd->add_option("--step-tokens", o.step_tokens, "Most prompt tokens prefilled per step")
      ->group("");
  cmd->callback([] { run_server(o); });
}

}  // namespace whale
