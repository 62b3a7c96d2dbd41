#include "serve/http_api.h"

#include <httplib.h>

#include <chrono>
#include <random>

#include "text/stream_filters.h"

namespace whale::serve {

using nlohmann::json;

namespace {

int64_t unix_time() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string random_id(const char* prefix) {
  static std::mutex mutex;
  static std::mt19937_64 rng{std::random_device{}()};
  std::lock_guard lock(mutex);
  static const char* digits = "0123456789abcdefghijklmnopqrstuvwxyz";
  std::string id = prefix;
  for (int i = 0; i < 24; ++i) id += digits[rng() % 36];
  return id;
}

void send_json(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(body.dump(), "application/json");
}

void send_error(httplib::Response& res, const ApiError& e) {
  send_json(res, e.status, error_body(e));
}

// One completion request in flight: the parsed request, and what has come back so far.
struct Completion {
  ParsedRequest request;
  std::string id, model;
  int64_t created = unix_time();
  bool split_reasoning = false;
  std::vector<ReasoningSplitter> splitters;
  std::vector<std::string> content, reasoning, finish_reason;
  int unfinished = 0;
  bool started = false, complete = false;

  Completion(ParsedRequest r, std::string model_name, bool reasoning_model)
      : request(std::move(r)), model(std::move(model_name)) {
    const int choices = static_cast<int>(request.job->choices.size());
    id = random_id(request.chat ? "chatcmpl-" : "cmpl-");
    split_reasoning = request.chat && reasoning_model;
    splitters.assign(choices, ReasoningSplitter(request.thinking));
    content.resize(choices);
    reasoning.resize(choices);
    finish_reason.resize(choices);
    unfinished = choices;
  }

  json usage() const {
    const Job& job = *request.job;
    long prompt = 0, hit = 0, completion = 0;
    for (int c = 0; c < static_cast<int>(job.choices.size()); ++c) {
      ChoiceStats s = job.stats(c);
      completion += s.completion_tokens;
      if (c % request.n == 0) {  // the prompt counts once for its n choices
        prompt += static_cast<long>(job.choices[c].prompt.size());
        hit += s.cache_hit_tokens;
      }
    }
    return {{"prompt_tokens", prompt},
            {"completion_tokens", completion},
            {"total_tokens", prompt + completion},
            {"prompt_cache_hit_tokens", hit},
            {"prompt_cache_miss_tokens", prompt - hit},
            {"prompt_tokens_details", {{"cached_tokens", hit}}}};
  }

  json chunk(json choices) const {
    json j = {{"id", id},
              {"object", request.chat ? "chat.completion.chunk" : "text_completion"},
              {"created", created},
              {"model", model},
              {"system_fingerprint", "whale"},
              {"choices", std::move(choices)}};
    if (request.include_usage) j["usage"] = nullptr;
    return j;
  }

  static std::string sse(const json& j) { return "data: " + j.dump() + "\n\n"; }

  // Applies one event to the choice's text; the SSE chunks for it when streaming.
  std::string apply(const ChoiceEvent& e) {
    std::string out;
    const int c = e.choice;
    std::string text_content, text_reasoning;
    if (split_reasoning) {
      ReasoningSplitter::Delta d = splitters[c].push(e.text);
      if (e.finished) {
        ReasoningSplitter::Delta rest = splitters[c].finish();
        d.reasoning += rest.reasoning;
        d.content += rest.content;
      }
      text_content = std::move(d.content);
      text_reasoning = std::move(d.reasoning);
    } else {
      text_content = e.text;
    }
    content[c] += text_content;
    reasoning[c] += text_reasoning;
    if (request.stream) {
      if (request.chat) {
        if (!text_reasoning.empty())
          out += sse(chunk(json::array({{{"index", c},
                                         {"delta", {{"reasoning_content", text_reasoning}}},
                                         {"logprobs", nullptr},
                                         {"finish_reason", nullptr}}})));
        if (!text_content.empty())
          out += sse(chunk(json::array({{{"index", c},
                                         {"delta", {{"content", text_content}}},
                                         {"logprobs", nullptr},
                                         {"finish_reason", nullptr}}})));
      } else if (!text_content.empty()) {
        out += sse(chunk(json::array({{{"index", c},
                                       {"text", text_content},
                                       {"logprobs", nullptr},
                                       {"finish_reason", nullptr}}})));
      }
    }
    if (e.finished) {
      finish_reason[c] = e.finish_reason;
      --unfinished;
      if (request.stream) {
        json choice = {{"index", c}, {"logprobs", nullptr}, {"finish_reason", e.finish_reason}};
        if (request.chat)
          choice["delta"] = json::object();
        else
          choice["text"] = "";
        out += sse(chunk(json::array({choice})));
      }
    }
    return out;
  }

  // The first chunks of a chat stream: each choice's role.
  std::string opening() const {
    std::string out;
    if (!request.chat) return out;
    for (int c = 0; c < static_cast<int>(content.size()); ++c)
      out += sse(chunk(json::array({{{"index", c},
                                     {"delta", {{"role", "assistant"}, {"content", ""}}},
                                     {"logprobs", nullptr},
                                     {"finish_reason", nullptr}}})));
    return out;
  }

  std::string closing() const {
    std::string out;
    if (request.include_usage) {
      json j = chunk(json::array());
      j["usage"] = usage();
      out += sse(j);
    }
    return out + "data: [DONE]\n\n";
  }

  json response() const {
    json choices = json::array();
    for (int c = 0; c < static_cast<int>(content.size()); ++c) {
      json choice = {{"index", c}, {"logprobs", nullptr}, {"finish_reason", finish_reason[c]}};
      if (request.chat) {
        json message = {{"role", "assistant"}, {"content", content[c]}};
        if (split_reasoning) message["reasoning_content"] = reasoning[c];
        choice["message"] = message;
      } else {
        choice["text"] = content[c];
      }
      choices.push_back(choice);
    }
    return {{"id", id},
            {"object", request.chat ? "chat.completion" : "text_completion"},
            {"created", created},
            {"model", model},
            {"system_fingerprint", "whale"},
            {"choices", choices},
            {"usage", usage()}};
  }
};

}  // namespace

ApiServer::ApiServer(const ApiOptions& options, const text::Tokenizer& tokenizer,
                     const text::ChatTemplate* chat_template, Scheduler& scheduler,
                     Metrics& metrics)
    : options_(options),
      tokenizer_(tokenizer),
      chat_template_(chat_template),
      scheduler_(scheduler),
      metrics_(metrics),
      server_(std::make_unique<httplib::Server>()) {
  routes();
}

ApiServer::~ApiServer() = default;

int ApiServer::bind(const std::string& host, int port) {
  if (port == 0) return server_->bind_to_any_port(host);
  return server_->bind_to_port(host, port) ? port : -1;
}

bool ApiServer::serve() {
  return server_->listen_after_bind();
}

void ApiServer::stop() {
  server_->stop();
}

void ApiServer::routes() {
  httplib::Server& s = *server_;
  const int threads = options_.http_threads;
  s.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  s.set_payload_max_length(16u << 20);
  s.set_tcp_nodelay(true);

  s.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    // httplib would gzip text/* replies (SSE included) for clients that accept it, and a
    // compressed event stream arrives in bursts; replies here are small, so none is
    // compressed. The Request object is the server's own, non-const.
    const_cast<httplib::Request&>(req).headers.erase("Accept-Encoding");
    const bool open = req.path == "/" || req.path == "/health" || req.path == "/metrics";
    if (!options_.api_key.empty() && !open &&
        req.get_header_value("Authorization") != "Bearer " + options_.api_key) {
      send_error(res, ApiError(401, "invalid or missing API key (send 'Authorization: Bearer KEY')",
                               "", "invalid_api_key"));
      metrics_.request_done(req.path, 401);
      return httplib::Server::HandlerResponse::Handled;
    }
    return httplib::Server::HandlerResponse::Unhandled;
  });
  s.set_error_handler(
      httplib::Server::HandlerWithResponse([](const httplib::Request& req, httplib::Response& res) {
        if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
        std::string message = res.status == 404 ? "no such endpoint: " + req.method + " " + req.path
                              : res.status == 413 ? "the request body is too large"
                                                  : "the request could not be served";
        send_error(res, ApiError(res.status, message, "", "",
                                 res.status >= 500 ? "server_error" : "invalid_request_error"));
        return httplib::Server::HandlerResponse::Handled;
      }));
  s.set_exception_handler(
      [this](const httplib::Request& req, httplib::Response& res, std::exception_ptr ep) {
        std::string what = "internal error";
        try {
          std::rethrow_exception(ep);
        } catch (const std::exception& e) {
          what = e.what();
        } catch (...) {
        }
        send_error(res, ApiError(500, what, "", "", "server_error"));
        metrics_.request_done(req.path, 500);
      });

  s.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
    if (draining_)
      send_json(res, 503, {{"status", "shutting down"}});
    else
      send_json(res, 200, {{"status", "ok"}});
  });
  s.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(metrics_.render(), "text/plain; version=0.0.4");
  });
  auto model_object = [this] {
    return json{{"id", options_.limits.model_name},
                {"object", "model"},
                {"created", 0},
                {"owned_by", "whale"}};
  };
  s.Get("/v1/models", [this, model_object](const httplib::Request& req, httplib::Response& res) {
    send_json(res, 200, {{"object", "list"}, {"data", json::array({model_object()})}});
    metrics_.request_done("/v1/models", 200);
  });
  s.Get(R"(/v1/models/(.+))",
        [this, model_object](const httplib::Request& req, httplib::Response& res) {
          if (req.matches[1] == options_.limits.model_name)
            send_json(res, 200, model_object());
          else
            send_error(
                res, ApiError(404, "the model '" + std::string(req.matches[1]) + "' does not exist",
                              "model", "model_not_found"));
        });
  s.Get("/", [](const httplib::Request&, httplib::Response& res) {
    res.set_content(web_page(), "text/html; charset=utf-8");
  });

  auto completion = [this](bool chat) {
    const std::string endpoint = chat ? "/v1/chat/completions" : "/v1/completions";
    return [this, chat, endpoint](const httplib::Request& req, httplib::Response& res) {
      if (draining_) {
        send_error(res, ApiError(503, "the server is shutting down", "", "", "server_error"));
        metrics_.request_done(endpoint, 503);
        return;
      }
      std::shared_ptr<Completion> state;
      try {
        state = std::make_shared<Completion>(
            parse_request(req.body, chat, options_.limits, tokenizer_, chat_template_),
            options_.limits.model_name,
            chat_template_ && chat_template_->format() == text::ChatFormat::kDeepSeekR1);
      } catch (const ApiError& e) {
        send_error(res, e);
        metrics_.request_done(endpoint, e.status);
        return;
      }
      metrics_.request_done(endpoint, 200);
      scheduler_.submit(state->request.job);
      if (!state->request.stream) {
        while (state->unfinished > 0)
          for (const ChoiceEvent& e : state->request.job->wait(std::chrono::milliseconds(1000)))
            state->apply(e);
        send_json(res, 200, state->response());
        return;
      }
      res.set_header("Cache-Control", "no-cache");
      res.set_header("X-Accel-Buffering", "no");
      res.set_chunked_content_provider(
          "text/event-stream",
          [state](size_t, httplib::DataSink& sink) {
            std::string out;
            if (!state->started) {
              state->started = true;
              out = state->opening();
            } else {
              for (const ChoiceEvent& e : state->request.job->wait(std::chrono::milliseconds(500)))
                out += state->apply(e);
              // A comment line while there is nothing to send: a client that went away is
              // noticed by the failed write.
              if (out.empty() && state->unfinished > 0) out = ": keep-alive\n\n";
            }
            if (state->unfinished == 0) out += state->closing();
            if (!out.empty() && !sink.write(out.data(), out.size())) return false;
            if (state->unfinished == 0) {
              state->complete = true;
              sink.done();
            }
            return true;
          },
          [state](bool) {
            // The client went away (or the server stopped) before the end: free its sequences.
            if (!state->complete) state->request.job->cancelled = true;
          });
    };
  };
  s.Post("/v1/chat/completions", completion(true));
  s.Post("/v1/completions", completion(false));
  // Also without the /v1 prefix, as OpenAI-compatible servers commonly accept.
  s.Post("/chat/completions", completion(true));
  s.Post("/completions", completion(false));
}

}  // namespace whale::serve
