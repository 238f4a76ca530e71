// lal serve — the HTTP server: OpenAI-compatible chat completions over the thinking pipeline, the thought-timeline
// page, health and Prometheus metrics. Boost.Beast over Asio sockets, torch-free (the model comes in as the SDK's
// LanguageModel service).
//
// Shape: one thread accepts; each connection gets its own thread (at most max_connections) that reads requests with
// Beast and answers them, streaming a turn's events as they come. Each user has a pipeline session (one Runtime,
// started from the pipeline file, sharing the one model); a turn is one Runtime::submit on that session. At most
// max_concurrent turns run at once, at most max_queue wait; beyond that 429 + Retry-After. A user's turns run one
// after another. A client that disconnects cancels its turn; a turn that runs past turn_timeout is cancelled.
//
// THREADING: run() blocks the calling thread until shutdown() (from any thread, e.g. a signal-waiting one) has
// drained the server: no new connections, queued turns refused (503), running turns given shutdown_grace to
// finish and then cancelled, every session stopped (memory consolidation is the modules' stop()).
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "chat_session.hpp"
#include "lal/services/language_model.hpp"
#include "serve_api.hpp"

namespace lal::serve {

struct ServerOptions {
  std::string host = "127.0.0.1";
  unsigned short port = 8080;  ///< 0 = any free port (see Server::port())
  std::string api_key;         ///< "" = no authentication
  std::string user_header;     ///< a request without `user` takes its memory partition from this header ("" = off)
  std::string model_name = "lal";
  std::string web_dir;        ///< the timeline page's files (share/lal/web)
  int max_concurrent = 4;     ///< turns running at once
  int max_queue = 128;        ///< turns waiting for a slot; beyond: 429
  int max_connections = 512;  ///< open connections; beyond: 503 and close
  int max_sessions = 256;     ///< user sessions kept; the least recently used idle one is ended for a new user
  std::size_t max_body_bytes = 1 << 20;
  std::chrono::seconds turn_timeout{300};
  std::chrono::seconds session_idle{900};  ///< an idle session ends (memories consolidate) after this
  std::chrono::seconds read_timeout{30};   ///< for a request's header and body
  std::chrono::seconds shutdown_grace{30};
  RequestLimits limits;
  cli::ChatOptions pipeline;      ///< the pipeline for reasoning_effort medium/high (and when absent)
  std::string low_effort_config;  ///< the pipeline for reasoning_effort low
};

class Server {
 public:
  /// `model` is shared by every session. `count_tokens` counts a text's tokens for usage.prompt_tokens.
  Server(ServerOptions options, std::shared_ptr<LanguageModel> model,
         std::function<std::int64_t(const std::string&)> count_tokens);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  /// Bind and listen. Throws std::runtime_error naming host:port when that fails.
  void listen();
  /// The bound port (after listen()).
  unsigned short port() const;
  /// Serve until shutdown() has finished draining.
  void run();
  /// Begin a graceful shutdown; returns at once. Any thread.
  void shutdown();

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace lal::serve
