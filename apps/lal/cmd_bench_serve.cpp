// lal bench serve — N concurrent streaming clients × T turns against `lal serve`: time to first thought, to the
// first answer token and to the end of the answer (p50/p99), errors, and the server's peak RSS. Without --url it
// starts `lal serve` itself on a free loopback port (and stops it with SIGTERM, timing the graceful shutdown).
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "command.hpp"

namespace lal::cli {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

const std::vector<std::string> kPrompts = {"光合成とは何ですか？",   "オームの法則を説明してください。",
                                           "二分探索の計算量は？",   "日本の首都はどこですか？",
                                           "再帰関数とは何ですか？", "TCPとUDPの違いは？"};

struct TurnResult {
  double first_thought_ms = -1, first_answer_ms = -1, done_ms = -1;
  std::string error;  ///< empty = fine
};

struct Target {
  std::string host;
  std::string port;
};

/// One streamed chat completion; times from just before the request is written.
TurnResult stream_turn(const Target& target, const json& body, const std::string& api_key) {
  TurnResult r;
  try {
    net::io_context io;
    tcp::resolver resolver(io);
    tcp::socket socket(io);
    net::connect(socket, resolver.resolve(target.host, target.port));
    http::request<http::string_body> req{http::verb::post, "/v1/chat/completions", 11};
    req.set(http::field::host, target.host);
    req.set(http::field::content_type, "application/json");
    if (!api_key.empty()) req.set(http::field::authorization, "Bearer " + api_key);
    req.body() = body.dump();
    req.prepare_payload();
    const auto t0 = Clock::now();
    auto ms = [&] { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); };
    http::write(socket, req);

    beast::flat_buffer buffer;
    http::response_parser<http::buffer_body> parser;
    parser.body_limit(std::numeric_limits<std::uint64_t>::max());
    http::read_header(socket, buffer, parser);
    const int status = static_cast<int>(parser.get().result_int());
    std::string sse, raw;
    bool saw_done = false, saw_finish = false;
    char chunk[8192];
    while (!parser.is_done()) {
      parser.get().body().data = chunk;
      parser.get().body().size = sizeof chunk;
      beast::error_code ec;
      http::read_some(socket, buffer, parser, ec);  // whatever has arrived: the stream is timed as it comes
      if (ec == http::error::need_buffer) ec = {};
      if (ec) throw beast::system_error(ec);
      const std::size_t n = sizeof chunk - parser.get().body().size;
      if (status != 200) {
        raw.append(chunk, n);
        continue;
      }
      sse.append(chunk, n);
      for (std::size_t cut; (cut = sse.find("\n\n")) != std::string::npos; sse.erase(0, cut + 2)) {
        const std::string event = sse.substr(0, cut);
        if (event.rfind("data: ", 0) != 0) continue;
        const std::string data = event.substr(6);
        if (data == "[DONE]") {
          saw_done = true;
          continue;
        }
        const json j = json::parse(data);
        if (j.contains("error")) {
          r.error = j["error"].value("message", data);
          continue;
        }
        if (!j.contains("choices") || j["choices"].empty()) continue;
        const json& choice = j["choices"][0];
        if (!choice["finish_reason"].is_null()) saw_finish = true;
        const json& delta = choice["delta"];
        if (r.first_thought_ms < 0 && delta.contains("reasoning_content")) r.first_thought_ms = ms();
        if (delta.contains("content") && delta["content"].is_string() && !delta["content"].get<std::string>().empty()) {
          if (r.first_answer_ms < 0) r.first_answer_ms = ms();
          r.done_ms = ms();
        }
      }
    }
    if (status != 200) {
      r.error = "HTTP " + std::to_string(status) + ": " + raw.substr(0, 300);
    } else if (r.error.empty()) {
      if (!saw_finish)
        r.error = "no chunk with a finish_reason";
      else if (!saw_done)
        r.error = "no [DONE]";
      else if (r.first_answer_ms < 0)
        r.error = "no answer text";
    }
    beast::error_code ec;
    socket.shutdown(tcp::socket::shutdown_both, ec);
  } catch (const std::exception& e) {
    r.error = e.what();
  }
  return r;
}

/// GET `path` (plain, small): the body, or "" when it fails.
std::string http_get(const Target& target, const std::string& path, const std::string& api_key) {
  try {
    net::io_context io;
    tcp::resolver resolver(io);
    tcp::socket socket(io);
    net::connect(socket, resolver.resolve(target.host, target.port));
    http::request<http::empty_body> req{http::verb::get, path, 11};
    req.set(http::field::host, target.host);
    if (!api_key.empty()) req.set(http::field::authorization, "Bearer " + api_key);
    http::write(socket, req);
    beast::flat_buffer buffer;
    http::response<http::string_body> res;
    http::read(socket, buffer, res);
    return res.result() == http::status::ok ? res.body() : "";
  } catch (const std::exception&) {
    return "";
  }
}

/// The value of an unlabelled sample `name` in Prometheus text, or -1.
double prometheus_value(const std::string& text, const std::string& name) {
  const auto at = text.find("\n" + name + " ");
  return at == std::string::npos ? -1 : std::stod(text.substr(at + name.size() + 2));
}

double percentile(std::vector<double> v, double p) {
  v.erase(std::remove_if(v.begin(), v.end(), [](double x) { return x < 0; }), v.end());
  if (v.empty()) return -1;
  std::sort(v.begin(), v.end());
  const auto rank = static_cast<std::size_t>(std::ceil(p / 100.0 * static_cast<double>(v.size())));
  return v[std::min(v.size() - 1, rank == 0 ? 0 : rank - 1)];
}

/// VmHWM / VmRSS of a process in MiB, or -1.
double proc_status_mib(pid_t pid, const std::string& key) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(key + ":", 0) == 0) return std::stod(line.substr(key.size() + 1)) / 1024.0;
  return -1;
}

/// `lal serve` as a child process on a free loopback port.
struct ChildServer {
  pid_t pid = -1;
  std::string port;

  void start(std::vector<std::string> args) {
    int out[2];
    if (pipe(out) != 0) throw std::runtime_error("pipe failed");
    pid = fork();
    if (pid < 0) throw std::runtime_error("fork failed");
    if (pid == 0) {
      dup2(out[1], STDOUT_FILENO);
      close(out[0]);
      close(out[1]);
      std::vector<char*> argv;
      static std::string exe = "/proc/self/exe";
      argv.push_back(exe.data());
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv("/proc/self/exe", argv.data());
      _exit(127);
    }
    close(out[1]);
    // Wait for "lal serve: listening on http://HOST:PORT ..." (the model loads first).
    std::string text;
    char c;
    while (read(out[0], &c, 1) == 1) {
      if (c != '\n') {
        text += c;
        continue;
      }
      const auto at = text.find("listening on http://");
      if (at != std::string::npos) {
        const std::string rest = text.substr(at + 20);
        const auto colon = rest.find(':');
        port = rest.substr(colon + 1, rest.find_first_not_of("0123456789", colon + 1) - colon - 1);
        break;
      }
      text.clear();
    }
    // Keep draining its stdout so it never blocks on a full pipe.
    std::thread([fd = out[0]] {
      char buf[512];
      while (read(fd, buf, sizeof buf) > 0) {
      }
      close(fd);
    }).detach();
    if (port.empty()) {
      stop();
      throw std::runtime_error("lal serve did not start (see its messages above)");
    }
  }
  /// SIGTERM, wait; returns the exit status and how long the shutdown took.
  std::pair<int, double> stop() {
    if (pid <= 0) return {-1, 0};
    const auto t0 = Clock::now();
    kill(pid, SIGTERM);
    int status = 0;
    waitpid(pid, &status, 0);
    pid = -1;
    return {WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status),
            std::chrono::duration<double>(Clock::now() - t0).count()};
  }
  ~ChildServer() {
    if (pid > 0) stop();
  }
};

int bench_serve_command(const std::vector<std::string>& args) {
  po::options_description desc("Options");
  add_common_options(desc);
  desc.add_options()("url", po::value<std::string>(),
                     "a running server, http://HOST:PORT (default: start `lal serve` on a free loopback port)")(
      "clients", po::value<int>()->default_value(64), "concurrent streaming clients, each its own user")(
      "turns", po::value<int>()->default_value(3), "turns per client")(
      "max_tokens", po::value<int>()->default_value(16), "max_tokens of each request")(
      "reasoning_effort", po::value<std::string>()->default_value("low"), "low | medium | high")(
      "api_key", po::value<std::string>()->default_value(""), "sent as Authorization: Bearer KEY")(
      "model_name", po::value<std::string>()->default_value("lal"), "the model id to ask for")(
      "timeout_s", po::value<int>()->default_value(1200), "give up (exit 1) after this long")(
      "serve_arg", po::value<std::vector<std::string>>()->composing(),
      "extra argument for the started `lal serve` (repeatable), e.g. --serve_arg=--max_concurrent=8")(
      "json", "print one JSON object");
  po::variables_map vm;
  if (!parse_command_line("bench serve",
                          "[--url http://HOST:PORT] [--clients 64] [--turns 3] [--max_tokens 16] "
                          "[--reasoning_effort low] [--serve_arg=--OPTION=VALUE ...] [--json]",
                          args, desc, {}, vm))
    return 0;
  const int clients = vm["clients"].as<int>(), turns = vm["turns"].as<int>();
  if (clients < 1 || clients > 4096) throw UsageError("--clients must be 1..4096");
  if (turns < 1) throw UsageError("--turns must be at least 1");
  const std::string effort = vm["reasoning_effort"].as<std::string>();
  if (effort != "low" && effort != "medium" && effort != "high")
    throw UsageError("--reasoning_effort must be low, medium or high");
  const std::string api_key = vm["api_key"].as<std::string>();

  ChildServer child;
  Target target{"127.0.0.1", ""};
  std::string memory_db;
  if (vm.count("url")) {
    const std::string url = vm["url"].as<std::string>();
    const std::string prefix = "http://";
    const auto colon = url.rfind(':');
    if (url.rfind(prefix, 0) != 0 || colon == std::string::npos || colon < prefix.size())
      throw UsageError("--url must look like http://HOST:PORT, not '" + url + "'");
    target.host = url.substr(prefix.size(), colon - prefix.size());
    target.port = url.substr(colon + 1);
    while (!target.port.empty() && target.port.back() == '/') target.port.pop_back();
  } else {
    memory_db = "/tmp/lal-bench-serve-" + std::to_string(::getpid()) + ".db";
    std::vector<std::string> serve_args = {"serve", "--port", "0", "--memory_db", memory_db, "--log_level", "warn"};
    if (!api_key.empty()) serve_args.insert(serve_args.end(), {"--api_key", api_key});
    if (vm.count("serve_arg"))
      for (const auto& a : vm["serve_arg"].as<std::vector<std::string>>()) serve_args.push_back(a);
    child.start(serve_args);
    target.port = child.port;
  }

  const int timeout_s = vm["timeout_s"].as<int>();
  std::atomic<bool> finished{false};
  std::thread watchdog([&, pid = child.pid] {
    const auto until = Clock::now() + std::chrono::seconds(timeout_s);
    while (!finished.load() && Clock::now() < until) std::this_thread::sleep_for(std::chrono::milliseconds(200));
    if (finished.load()) return;
    std::cerr << "lal bench serve: gave up after " << timeout_s << " s\n";
    if (pid > 0) kill(pid, SIGKILL);
    std::_Exit(1);
  });

  std::vector<std::vector<TurnResult>> results(static_cast<std::size_t>(clients));
  std::mutex start_mu;
  std::condition_variable start_cv;
  bool go = false;
  std::vector<std::thread> threads;
  for (int c = 0; c < clients; ++c)
    threads.emplace_back([&, c] {
      {
        std::unique_lock<std::mutex> lk(start_mu);
        start_cv.wait(lk, [&] { return go; });
      }
      for (int t = 0; t < turns; ++t) {
        json body = {
            {"model", vm["model_name"].as<std::string>()},
            {"messages", json::array({{{"role", "user"},
                                       {"content", kPrompts[static_cast<std::size_t>(c + t) % kPrompts.size()]}}})},
            {"stream", true},
            {"user", "bench-" + std::to_string(c)},
            {"max_tokens", vm["max_tokens"].as<int>()},
            {"seed", c * 100 + t},
            {"reasoning_effort", effort}};
        results[static_cast<std::size_t>(c)].push_back(stream_turn(target, body, api_key));
      }
    });
  const auto t0 = Clock::now();
  {
    std::lock_guard<std::mutex> lk(start_mu);
    go = true;
  }
  start_cv.notify_all();
  for (auto& t : threads) t.join();
  const double wall_s = std::chrono::duration<double>(Clock::now() - t0).count();

  std::vector<double> first_thought, first_answer, done;
  int completed = 0, errors = 0, thought_first = 0;
  json samples = json::array();
  for (const auto& per_client : results)
    for (const auto& r : per_client) {
      if (!r.error.empty()) {
        ++errors;
        if (samples.size() < 5) samples.push_back(r.error);
        continue;
      }
      ++completed;
      if (r.first_thought_ms >= 0 && r.first_thought_ms <= r.first_answer_ms) ++thought_first;
      first_thought.push_back(r.first_thought_ms);
      first_answer.push_back(r.first_answer_ms);
      done.push_back(r.done_ms);
    }
  // The server's own view: how much of a turn was waiting for a slot.
  const std::string metrics = http_get(target, "/metrics", api_key);
  auto mean = [&](const std::string& name) {
    const double sum = prometheus_value(metrics, name + "_sum"), count = prometheus_value(metrics, name + "_count");
    return count > 0 ? 1000.0 * sum / count : -1.0;
  };
  const double queue_wait_ms = mean("lal_queue_wait_seconds"), turn_ms = mean("lal_turn_seconds");
  const double rss_peak = child.pid > 0 ? proc_status_mib(child.pid, "VmHWM") : -1;
  const double rss_now = child.pid > 0 ? proc_status_mib(child.pid, "VmRSS") : -1;
  int exit_status = 0;
  double shutdown_s = 0;
  if (child.pid > 0) std::tie(exit_status, shutdown_s) = child.stop();
  finished = true;
  watchdog.join();
  if (!memory_db.empty())
    for (const char* suffix : {"", "-wal", "-shm"}) std::remove((memory_db + suffix).c_str());

  auto stats = [](const std::vector<double>& v) {
    return json{{"p50", percentile(v, 50)}, {"p99", percentile(v, 99)}, {"n", v.size()}};
  };
  const json out = {{"clients", clients},
                    {"turns_per_client", turns},
                    {"max_tokens", vm["max_tokens"].as<int>()},
                    {"reasoning_effort", effort},
                    {"completed", completed},
                    {"errors", errors},
                    {"thought_before_answer", thought_first},
                    {"error_samples", samples},
                    {"wall_s", wall_s},
                    {"turns_per_s", completed / wall_s},
                    {"first_thought_ms", stats(first_thought)},
                    {"first_answer_ms", stats(first_answer)},
                    {"answer_done_ms", stats(done)},
                    {"server_mean_queue_wait_ms", queue_wait_ms},
                    {"server_mean_turn_ms", turn_ms},
                    {"server_rss_peak_mib", rss_peak},
                    {"server_rss_end_mib", rss_now},
                    {"server_exit_status", vm.count("url") ? json(nullptr) : json(exit_status)},
                    {"server_shutdown_s", vm.count("url") ? json(nullptr) : json(shutdown_s)}};
  if (vm.count("json")) {
    std::cout << out.dump() << "\n";
  } else {
    char line[256];
    std::cout << clients << " clients × " << turns << " turns (max_tokens " << vm["max_tokens"].as<int>()
              << ", reasoning_effort " << effort << "): " << completed << " completed, " << errors << " errors, "
              << wall_s << " s\n";
    std::snprintf(line, sizeof line, "%-22s %10s %10s\n", "ms", "p50", "p99");
    std::cout << line;
    for (const auto& [name, v] : {std::pair<const char*, const std::vector<double>*>{"first thought", &first_thought},
                                  {"first answer token", &first_answer},
                                  {"answer done", &done}}) {
      std::snprintf(line, sizeof line, "%-22s %10.1f %10.1f\n", name, percentile(*v, 50), percentile(*v, 99));
      std::cout << line;
    }
    if (turn_ms >= 0)
      std::cout << "server: mean turn " << turn_ms << " ms, of which waiting for a slot " << queue_wait_ms << " ms\n";
    if (rss_peak >= 0) std::cout << "server peak RSS " << rss_peak << " MiB, shutdown " << shutdown_s << " s\n";
    for (const auto& s : samples) std::cout << "error: " << s.get<std::string>() << "\n";
  }
  return errors == 0 && exit_status == 0 ? 0 : 1;
}

}  // namespace

LAL_COMMAND("bench serve", "concurrent streaming clients against lal serve: p50/p99 time to first thought and answer",
            bench_serve_command);

}  // namespace lal::cli
