// lal serve — the thinking pipeline behind an OpenAI-compatible API, with a browser view of the thoughts.
// Loads the model once, then serves (serve_server.cpp) until SIGTERM or SIGINT, and shuts down gracefully.
#include <spdlog/spdlog.h>

#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <optional>
#include <thread>

#include "chat_session.hpp"
#include "lal/lm/tokenizer.hpp"
#include "lal/lm/torch_language_model.hpp"
#include "serve_server.hpp"

namespace lal::cli {
namespace {

int serve_command(const std::vector<std::string>& args) {
  po::options_description desc("Options");
  add_common_options(desc);
  add_chat_options(desc);
  desc.add_options()("host", po::value<std::string>()->default_value("127.0.0.1"),
                     "address to listen on (0.0.0.0 = every interface: set --api_key)")(
      "port", po::value<int>()->default_value(8080), "TCP port; 0 = any free port (printed at start)")(
      "api_key", po::value<std::string>(),
      "require Authorization: Bearer KEY on /v1/* and /metrics (default: $LAL_API_KEY, else none)")(
      "user_header", po::value<std::string>(),
      "a request without `user` takes its memory partition from this header, e.g. X-OpenWebUI-User-Id")(
      "model_name", po::value<std::string>()->default_value("lal"), "the model id clients ask for (/v1/models)")(
      "low_effort_config", po::value<std::string>(),
      "pipeline for reasoning_effort low (default: configs/answer-first.yaml)")(
      "max_concurrent", po::value<int>()->default_value(4), "turns running at once")(
      "max_queue", po::value<int>()->default_value(128), "turns waiting for a slot; beyond: 429 + Retry-After")(
      "max_sessions", po::value<int>()->default_value(256),
      "user sessions kept alive; the least recently used idle one ends for a new user")(
      "max_connections", po::value<int>()->default_value(512), "open connections; beyond: 503")(
      "max_body_bytes", po::value<long long>()->default_value(1 << 20), "largest request body; beyond: 413")(
      "turn_timeout_s", po::value<int>()->default_value(300), "a turn (queue wait included) is cancelled after this")(
      "session_idle_s", po::value<int>()->default_value(900),
      "a user's session ends (memories consolidate) after this long idle")(
      "shutdown_grace_s", po::value<int>()->default_value(30),
      "on SIGTERM: how long running turns may finish before they are cancelled")(
      "web_dir", po::value<std::string>(), "the timeline page's files (default: the installed share/lal/web)");
  po::variables_map vm;
  if (!parse_command_line("serve",
                          "[--config FILE] [--model_path DIR] [--host 127.0.0.1] [--port 8080] [--api_key KEY] "
                          "[--memory_db FILE] [--max_concurrent N] [--device auto|cpu|cuda] [--plugin_path DIR] "
                          "[--set PATH=VALUE]",
                          args, desc, {}, vm))
    return 0;
  if (vm.count("output") || vm.count("hide_thoughts"))
    throw UsageError("--output and --hide_thoughts do not apply to lal serve: clients get every event");

  serve::ServerOptions o;
  o.pipeline = chat_options_from(vm);
  o.host = vm["host"].as<std::string>();
  const int port = vm["port"].as<int>();
  if (port < 0 || port > 65535) throw UsageError("--port must be 0..65535, not " + std::to_string(port));
  o.port = static_cast<unsigned short>(port);
  if (vm.count("api_key")) {
    o.api_key = vm["api_key"].as<std::string>();
    if (o.api_key.empty()) throw UsageError("--api_key must not be empty");
  } else if (const char* env = std::getenv("LAL_API_KEY"); env && *env) {
    o.api_key = env;
  }
  if (vm.count("user_header")) {
    o.user_header = vm["user_header"].as<std::string>();
    if (o.user_header.empty() || o.user_header.find_first_of(" :\r\n") != std::string::npos)
      throw UsageError("--user_header must be a header name, not '" + o.user_header + "'");
  }
  o.model_name = vm["model_name"].as<std::string>();
  if (o.model_name.empty()) throw UsageError("--model_name must not be empty");
  o.low_effort_config = vm.count("low_effort_config") ? vm["low_effort_config"].as<std::string>()
                                                      : data_dir() + "/configs/answer-first.yaml";
  auto positive = [&](const char* key, int lo, int hi) {
    const int v = vm[key].as<int>();
    if (v < lo || v > hi)
      throw UsageError(std::string("--") + key + " must be " + std::to_string(lo) + ".." + std::to_string(hi) +
                       ", not " + std::to_string(v));
    return v;
  };
  o.max_concurrent = positive("max_concurrent", 1, 4096);
  o.max_queue = positive("max_queue", 0, 1 << 20);
  o.max_sessions = positive("max_sessions", 1, 1 << 20);
  o.max_connections = positive("max_connections", 1, 1 << 20);
  if (o.max_sessions < o.max_concurrent)
    throw UsageError("--max_sessions must be at least --max_concurrent (each running turn needs its session)");
  const long long body = vm["max_body_bytes"].as<long long>();
  if (body < 1024 || body > (1LL << 30)) throw UsageError("--max_body_bytes must be 1024..1073741824");
  o.max_body_bytes = static_cast<std::size_t>(body);
  o.turn_timeout = std::chrono::seconds(positive("turn_timeout_s", 1, 86400));
  o.session_idle = std::chrono::seconds(positive("session_idle_s", 1, 86400 * 30));
  o.shutdown_grace = std::chrono::seconds(positive("shutdown_grace_s", 0, 3600));
  o.web_dir = vm.count("web_dir") ? vm["web_dir"].as<std::string>() : data_dir() + "/web";
  if (!std::filesystem::exists(std::filesystem::path(o.web_dir) / "index.html"))
    throw UsageError("no timeline page at " + o.web_dir + "/index.html (--web_dir DIR)");

  // Signals go to one waiting thread; block them before any other thread (the model's, the server's) exists.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  std::signal(SIGPIPE, SIG_IGN);

  auto model = load_chat_model(o.pipeline);
  std::function<std::int64_t(const std::string&)> count_tokens;
  if (auto* torch_model = dynamic_cast<lm::TorchLanguageModel*>(model.get()))
    if (const auto* tokenizer = torch_model->engine().tokenizer())
      count_tokens = [tok = *tokenizer](const std::string& text) {
        return static_cast<std::int64_t>(tok.encode(text).size());
      };

  serve::Server server(o, model, count_tokens);
  server.listen();
  const std::string url = "http://" + o.host + ":" + std::to_string(server.port());
  std::cout << "lal serve: listening on " << url << " (model '" << o.model_name << "': " << model->describe() << ")"
            << std::endl;
  std::cerr << "  page: " << url << "/   API: " << url << "/v1/chat/completions"
            << (o.api_key.empty() ? "" : "   (API key required)") << std::endl;

  std::thread waiter([&] {
    int sig = 0;
    sigwait(&signals, &sig);
    spdlog::info("lal serve: {} received, shutting down", sig == SIGTERM ? "SIGTERM" : "SIGINT");
    server.shutdown();
  });
  server.run();
  waiter.join();
  std::cout << "lal serve: stopped" << std::endl;
  return 0;
}

}  // namespace

LAL_COMMAND("serve", "serve the thinking pipeline over an OpenAI-compatible HTTP API, with a thought-timeline page",
            serve_command);

}  // namespace lal::cli
