// The OpenAI-compatible HTTP API on cpp-httplib: /v1/chat/completions and /v1/completions
// (JSON, or server-sent events with stream: true), /v1/models, /health, /metrics, and the web
// chat page at /. Requests become scheduler Jobs; each HTTP thread waits on its job's events.
#pragma once
#include <atomic>
#include <memory>
#include <string>

#include "serve/metrics.h"
#include "serve/openai_request.h"
#include "serve/scheduler.h"
#include "text/chat_template.h"
#include "text/tokenizer.h"

namespace httplib {
class Server;
}

namespace whale::serve {

struct ApiOptions {
  std::string api_key;  // empty: no check
  ApiLimits limits;
  int http_threads = 64;  // a streaming request holds one for its whole length
};

class ApiServer {
 public:
  ApiServer(const ApiOptions& options, const text::Tokenizer& tokenizer,
            const text::ChatTemplate* chat_template, Scheduler& scheduler, Metrics& metrics);
  ~ApiServer();

  // Binds host:port (port 0: any free port); returns the port, or -1.
  int bind(const std::string& host, int port);
  // Serves until stop(); false if the server could not run.
  bool serve();
  // New generation requests get 503 from now on (shutting down).
  void refuse_new_requests() { draining_ = true; }
  void stop();

 private:
  void routes();
  ApiOptions options_;
  const text::Tokenizer& tokenizer_;
  const text::ChatTemplate* chat_template_;
  Scheduler& scheduler_;
  Metrics& metrics_;
  std::unique_ptr<httplib::Server> server_;
  std::atomic<bool> draining_{false};
};

// The web chat page (one self-contained HTML file).
const std::string& web_page();

}  // namespace whale::serve
