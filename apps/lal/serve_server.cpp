#include "serve_server.hpp"

#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <fstream>
#include <list>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include "lal/messages.hpp"

namespace lal::serve {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;
using nlohmann::json;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

namespace {

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// ---------------------------------------------------------------------------------------------------------------
// Metrics (Prometheus text exposition format 0.0.4)

class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds) : bounds_(std::move(bounds)), counts_(bounds_.size() + 1) {}
  void observe(double v) {
    std::lock_guard<std::mutex> lk(mu_);
    const auto i = static_cast<std::size_t>(std::lower_bound(bounds_.begin(), bounds_.end(), v) - bounds_.begin());
    ++counts_[i];
    sum_ += v;
  }
  void write(std::ostringstream& out, const std::string& name, const std::string& help) const {
    std::lock_guard<std::mutex> lk(mu_);
    out << "# HELP " << name << " " << help << "\n# TYPE " << name << " histogram\n";
    std::uint64_t cumulative = 0;
    for (std::size_t i = 0; i < bounds_.size(); ++i) {
      cumulative += counts_[i];
      out << name << "_bucket{le=\"" << bounds_[i] << "\"} " << cumulative << "\n";
    }
    cumulative += counts_.back();
    out << name << "_bucket{le=\"+Inf\"} " << cumulative << "\n"
        << name << "_sum " << sum_ << "\n"
        << name << "_count " << cumulative << "\n";
  }

 private:
  mutable std::mutex mu_;
  std::vector<double> bounds_;
  std::vector<std::uint64_t> counts_;
  double sum_ = 0;
};

const std::vector<double> kLatencyBuckets = {0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300};

struct Metrics {
  std::mutex mu;
  std::map<std::pair<std::string, int>, std::uint64_t> requests;  // (route, status)
  std::map<std::string, std::uint64_t> turns;                     // outcome
  std::atomic<std::int64_t> prompt_tokens{0}, completion_tokens{0};
  Histogram first_thought{kLatencyBuckets}, first_answer{kLatencyBuckets}, turn_seconds{kLatencyBuckets},
      queue_wait{kLatencyBuckets};

  void request(const std::string& route, int status) {
    std::lock_guard<std::mutex> lk(mu);
    ++requests[{route, status}];
  }
  void turn(const std::string& outcome) {
    std::lock_guard<std::mutex> lk(mu);
    ++turns[outcome];
  }
};

// ---------------------------------------------------------------------------------------------------------------
// A turn's events, handed from the pipeline's bus threads to the connection thread.

struct TurnStream {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<TurnEvent> events;
  TurnId turn = 0;
  bool done = false;

  void push(TurnEvent e) {
    std::lock_guard<std::mutex> lk(mu);
    if (done) return;  // a region speaking after the turn closed (emotion appraising it) is not part of the reply
    done = e.turn_done;
    events.push_back(std::move(e));
    cv.notify_all();
  }
  std::vector<TurnEvent> take(milliseconds wait) {
    std::unique_lock<std::mutex> lk(mu);
    cv.wait_for(lk, wait, [&] { return !events.empty(); });
    std::vector<TurnEvent> out(std::make_move_iterator(events.begin()), std::make_move_iterator(events.end()));
    events.clear();
    return out;
  }
};

/// The shared model as one session sees it: counts the tokens generated for that session's turns.
class CountingModel final : public LanguageModel {
 public:
  explicit CountingModel(std::shared_ptr<LanguageModel> base) : base_(std::move(base)) {}
  std::string describe() const override { return base_->describe(); }
  GenerationResult generate(const GenerationRequest& request, const std::function<bool(const TokenEvent&)>& on_token,
                            const CancellationToken& cancel) override {
    GenerationResult r = base_->generate(request, on_token, cancel);
    generated += static_cast<std::int64_t>(r.ids.size());
    return r;
  }
  void submit(const GenerationRequest& request, TokenCallback on_token, DoneCallback on_done,
              const CancellationToken& cancel) override {
    base_->submit(
        request,
        [this, on_token = std::move(on_token)](const TokenEvent& ev) {
          ++generated;  // the session outlives its runtime, and the runtime its modules' generations
          if (on_token) on_token(ev);
        },
        std::move(on_done), cancel);
  }
  std::atomic<std::int64_t> generated{0};

 private:
  std::shared_ptr<LanguageModel> base_;
};

struct SessionSettings {
  std::string config_file;
  std::vector<runtime::Override> overrides;
  bool operator==(const SessionSettings& o) const {
    if (config_file != o.config_file || overrides.size() != o.overrides.size()) return false;
    for (std::size_t i = 0; i < overrides.size(); ++i)
      if (overrides[i].path != o.overrides[i].path || overrides[i].yaml != o.overrides[i].yaml) return false;
    return true;
  }
};

/// One user's pipeline: a Runtime started from the pipeline file with that user's settings, sharing the model.
struct UserSession {
  std::string user;
  SessionSettings settings;
  std::shared_ptr<CountingModel> model;
  cli::ChatSession chat;
  TurnId turns_submitted = 0;
  bool busy = false;            // guarded by the pool's mutex
  Clock::time_point last_used;  // guarded by the pool's mutex

  std::mutex mu;  // guards current
  std::shared_ptr<TurnStream> current;

  void deliver(TurnEvent e) {
    std::lock_guard<std::mutex> lk(mu);
    if (current && current->turn == e.turn) current->push(std::move(e));
  }
  ~UserSession() {
    if (chat.runtime) chat.runtime->stop();  // modules' stop(): memories consolidate at session end
  }
};

// ---------------------------------------------------------------------------------------------------------------
// Admission: at most max_running turns at once, one per user, at most max_queue waiting (FIFO).

class Admission {
 public:
  struct Ticket {
    std::string user;
    bool granted = false;
    bool refused = false;  // draining
  };

  Admission(int max_running, int max_queue) : max_running_(max_running), max_queue_(max_queue) {}

  /// Join the queue, or throw ApiError 429 (queue full) / 503 (shutting down).
  std::shared_ptr<Ticket> enqueue(const std::string& user, int retry_after_s) {
    std::lock_guard<std::mutex> lk(mu_);
    if (draining_) throw ApiError(503, "server_error", "lal serve is shutting down");
    if (static_cast<int>(waiting_.size()) >= max_queue_) {
      ApiError e(429, "rate_limit_error",
                 "lal serve is busy: " + std::to_string(running_) + " turns running and " +
                     std::to_string(waiting_.size()) + " waiting; retry after " + std::to_string(retry_after_s) + " s",
                 "", "queue_full");
      throw e;
    }
    auto t = std::make_shared<Ticket>();
    t->user = user;
    waiting_.push_back(t);
    grant_locked();
    return t;
  }
  /// Wait up to `wait` for the ticket; true once granted.
  bool wait(const std::shared_ptr<Ticket>& t, milliseconds wait) {
    std::unique_lock<std::mutex> lk(mu_);
    cv_.wait_for(lk, wait, [&] { return t->granted || t->refused; });
    return t->granted;
  }
  bool refused(const std::shared_ptr<Ticket>& t) {
    std::lock_guard<std::mutex> lk(mu_);
    return t->refused;
  }
  /// Give up waiting (client gone, timeout).
  void leave(const std::shared_ptr<Ticket>& t) {
    std::lock_guard<std::mutex> lk(mu_);
    if (t->granted) {
      release_locked(t);
      return;
    }
    waiting_.erase(std::remove(waiting_.begin(), waiting_.end(), t), waiting_.end());
  }
  /// The granted turn is over.
  void finish(const std::shared_ptr<Ticket>& t) {
    std::lock_guard<std::mutex> lk(mu_);
    release_locked(t);
  }
  /// Refuse everyone waiting and every later arrival.
  void drain() {
    std::lock_guard<std::mutex> lk(mu_);
    draining_ = true;
    for (auto& t : waiting_) t->refused = true;
    waiting_.clear();
    cv_.notify_all();
  }
  int queued() {
    std::lock_guard<std::mutex> lk(mu_);
    return static_cast<int>(waiting_.size());
  }
  int running() {
    std::lock_guard<std::mutex> lk(mu_);
    return running_;
  }

 private:
  void release_locked(const std::shared_ptr<Ticket>& t) {
    if (!t->granted) return;
    t->granted = false;
    --running_;
    running_users_.erase(running_users_.find(t->user));
    grant_locked();
  }
  void grant_locked() {
    for (auto it = waiting_.begin(); it != waiting_.end() && running_ < max_running_;) {
      if (running_users_.count((*it)->user)) {
        ++it;  // this user's earlier turn is still running: keep their order, let others pass
        continue;
      }
      (*it)->granted = true;
      ++running_;
      running_users_.insert((*it)->user);
      it = waiting_.erase(it);
    }
    cv_.notify_all();
  }

  std::mutex mu_;
  std::condition_variable cv_;
  const int max_running_, max_queue_;
  int running_ = 0;
  bool draining_ = false;
  std::multiset<std::string> running_users_;
  std::deque<std::shared_ptr<Ticket>> waiting_;
};

// ---------------------------------------------------------------------------------------------------------------
// A connection's socket with deadlines: Beast's synchronous read/write over a non-blocking socket, waiting with
// poll() in short slices so a slow client times out and a shutdown is noticed.

class DeadlineSocket {
 public:
  using executor_type = tcp::socket::executor_type;
  DeadlineSocket(tcp::socket& socket, const std::atomic<bool>& stopping) : socket_(socket), stopping_(stopping) {}
  void expires_after(std::chrono::seconds s) { deadline_ = Clock::now() + s; }
  executor_type get_executor() { return socket_.get_executor(); }

  template <class Buffers>
  std::size_t read_some(const Buffers& buffers, beast::error_code& ec) {
    return io(POLLIN, ec, [&] { return socket_.read_some(buffers, ec); });
  }
  template <class Buffers>
  std::size_t read_some(const Buffers& buffers) {
    beast::error_code ec;
    const std::size_t n = read_some(buffers, ec);
    if (ec) throw beast::system_error(ec);
    return n;
  }
  template <class Buffers>
  std::size_t write_some(const Buffers& buffers, beast::error_code& ec) {
    return io(POLLOUT, ec, [&] { return socket_.write_some(buffers, ec); });
  }
  template <class Buffers>
  std::size_t write_some(const Buffers& buffers) {
    beast::error_code ec;
    const std::size_t n = write_some(buffers, ec);
    if (ec) throw beast::system_error(ec);
    return n;
  }

  /// True when the peer has closed its end (checked without consuming pipelined bytes).
  bool peer_closed() {
    pollfd p{socket_.native_handle(), POLLIN | POLLRDHUP, 0};
    if (::poll(&p, 1, 0) <= 0) return false;
    if (p.revents & (POLLHUP | POLLERR | POLLRDHUP)) return true;
    char c;
    const ssize_t n = ::recv(socket_.native_handle(), &c, 1, MSG_PEEK | MSG_DONTWAIT);
    return n == 0;
  }

 private:
  template <class Op>
  std::size_t io(short events, beast::error_code& ec, Op op) {
    while (true) {
      const std::size_t n = op();
      if (ec != net::error::would_block && ec != net::error::try_again) return n;
      ec = {};
      const auto left = std::chrono::duration_cast<milliseconds>(deadline_ - Clock::now()).count();
      if (left <= 0) {
        ec = net::error::timed_out;
        return 0;
      }
      // Writes go on during a shutdown (a turn finishing its answer); reads for new requests stop.
      if (events == POLLIN && stopping_.load()) {
        ec = net::error::operation_aborted;
        return 0;
      }
      pollfd p{socket_.native_handle(), events, 0};
      ::poll(&p, 1, static_cast<int>(std::min<long long>(left, 200)));
    }
  }

  tcp::socket& socket_;
  const std::atomic<bool>& stopping_;
  Clock::time_point deadline_ = Clock::now();
};

bool safe_web_name(const std::string& name) {
  if (name.empty() || name.front() == '.') return false;
  for (const char c : name)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '_')) return false;
  return name.find("..") == std::string::npos;
}

const char* content_type_for(const std::string& name) {
  auto ends = [&](const char* ext) {
    const std::string e(ext);
    return name.size() >= e.size() && name.compare(name.size() - e.size(), e.size(), e) == 0;
  };
  if (ends(".html")) return "text/html; charset=utf-8";
  if (ends(".js")) return "text/javascript; charset=utf-8";
  if (ends(".css")) return "text/css; charset=utf-8";
  if (ends(".svg")) return "image/svg+xml";
  if (ends(".png")) return "image/png";
  return nullptr;
}

std::string random_id() {
  static std::atomic<std::uint64_t> counter{0};
  const auto now = static_cast<std::uint64_t>(Clock::now().time_since_epoch().count());
  std::ostringstream s;
  s << std::hex << (now ^ (counter.fetch_add(1) * 0x9E3779B97F4A7C15ull));
  return "chatcmpl-" + s.str();
}

bool constant_time_equal(const std::string& a, const std::string& b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (std::size_t i = 0; i < a.size(); ++i)
    diff |= static_cast<unsigned char>(a[i] ^ b[i % (b.empty() ? 1 : b.size())]);
  return diff == 0;
}

}  // namespace

// -------------------------------------------------------------------------------------------------------------------

struct Server::Impl {
  ServerOptions options;
  std::shared_ptr<LanguageModel> model;
  std::function<std::int64_t(const std::string&)> count_tokens;
  std::int64_t created = 0;

  net::io_context io;
  tcp::acceptor acceptor{io};
  std::atomic<bool> stopping{false};    // no new requests
  std::atomic<bool> cancelling{false};  // grace is over: cancel running turns
  std::mutex stop_mu;
  std::condition_variable stop_cv;
  bool stop_requested = false;

  Metrics metrics;
  Admission admission;
  std::atomic<double> mean_turn_s{5.0};

  std::mutex connections_mu;
  std::condition_variable connections_cv;
  int connections = 0;

  // Sessions, by user.
  std::mutex pool_mu;
  std::mutex session_start_mu;
  std::map<std::string, std::shared_ptr<UserSession>> sessions;
  /// config file → module id → its declared config keys (to map temperature, top_p, ... onto the modules).
  std::map<std::string, std::map<std::string, std::set<std::string>>> config_keys;

  Impl(ServerOptions o, std::shared_ptr<LanguageModel> m, std::function<std::int64_t(const std::string&)> count)
      : options(std::move(o)),
        model(std::move(m)),
        count_tokens(std::move(count)),
        admission(options.max_concurrent, options.max_queue) {
    created =
        std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
    for (const std::string& file : {main_config(), options.low_effort_config}) {
      std::vector<runtime::fs::path> dirs(options.pipeline.plugin_dirs.begin(), options.pipeline.plugin_dirs.end());
      auto load = runtime::load_pipeline(file, dirs, options.pipeline.extra_overrides);
      if (!load.ok()) {
        std::string s;
        for (const auto& e : load.errors) s += "\n  " + e.str();
        throw std::runtime_error("invalid pipeline " + file + ":" + s);
      }
      auto& modules = config_keys[file];
      for (const auto& m : load.spec.modules)
        for (const auto& c : m.loaded->descriptor->config) modules[m.id].insert(c.name);
    }
  }

  std::string main_config() const {
    return options.pipeline.config.empty() ? cli::data_dir() + "/configs/chat.yaml" : options.pipeline.config;
  }

  int retry_after_s() const {
    const double per_slot = mean_turn_s.load() * (1.0 + admission_queued_hint()) / std::max(1, options.max_concurrent);
    return std::clamp(static_cast<int>(std::ceil(per_slot)), 1, 120);
  }
  double admission_queued_hint() const { return static_cast<double>(const_cast<Admission&>(admission).queued()); }

  // --- settings of a request → pipeline overrides -----------------------------------------------------------------

  SessionSettings settings_for(const ChatRequest& r) const {
    SessionSettings s;
    s.config_file = r.reasoning_effort == "low" ? options.low_effort_config : main_config();
    const auto& modules = config_keys.at(s.config_file);
    auto every = [&](const char* key, const std::string& yaml) {
      for (const auto& [id, keys] : modules)
        if (keys.count(key)) s.overrides.push_back({"modules." + id + ".config." + key, yaml});
    };
    if (r.temperature) every("temperature", dump(json(*r.temperature)));
    if (r.top_p) every("top_p", dump(json(*r.top_p)));
    if (r.max_tokens) every("max_tokens", std::to_string(*r.max_tokens));
    if (r.seed) every("seed", std::to_string(*r.seed));
    for (const auto& [path, yaml] : r.overrides) {
      const std::string rest = path.substr(std::string("modules.").size());
      const std::string id = rest.substr(0, rest.find(".config."));
      const std::string key = rest.substr(rest.find(".config.") + 8);
      const auto m = modules.find(id);
      if (m == modules.end()) {
        std::string known;
        for (const auto& kv : modules) known += (known.empty() ? "" : ", ") + kv.first;
        throw ApiError(400, "invalid_request_error",
                       "'lal." + path + "': the pipeline " + s.config_file + " has no module '" + id +
                           "' (modules: " + known + ")",
                       "lal." + path);
      }
      if (!m->second.count(key))
        throw ApiError(400, "invalid_request_error",
                       "'lal." + path + "': module '" + id + "' has no config key '" + key + "' (see `lal plugins`)",
                       "lal." + path);
      s.overrides.push_back({path, yaml});
    }
    return s;
  }

  // --- sessions ---------------------------------------------------------------------------------------------------

  std::shared_ptr<UserSession> start_session(const std::string& user, const SessionSettings& settings,
                                             bool request_overrides) {
    auto session = std::make_shared<UserSession>();
    session->user = user;
    session->settings = settings;
    session->model = std::make_shared<CountingModel>(model);
    cli::ChatOptions o = options.pipeline;
    o.config = settings.config_file;
    o.output = "jsonl";
    o.hide_thoughts = false;
    o.model = session->model;
    o.extra_overrides.insert(o.extra_overrides.end(), settings.overrides.begin(), settings.overrides.end());
    runtime::RuntimeOptions ro;
    UserSession* raw = session.get();
    ro.output = [raw](std::string_view text) {
      // The jsonl strategy writes whole lines, one per call.
      std::size_t start = 0;
      while (start < text.size()) {
        const std::size_t end = std::min(text.find('\n', start), text.size());
        if (end > start) {
          try {
            raw->deliver(parse_turn_event(text.substr(start, end - start)));
          } catch (const std::exception& e) {
            spdlog::warn("lal serve: user '{}': {}", raw->user, e.what());
          }
        }
        start = end + 1;
      }
    };
    try {
      session->chat = cli::start_chat_session(o, std::move(ro));
    } catch (const std::exception& e) {
      if (request_overrides) throw ApiError(400, "invalid_request_error", e.what(), "lal");
      throw ApiError(500, "server_error", std::string("could not start the pipeline: ") + e.what());
    }
    if (!session->chat.emotion_topic.empty())
      session->chat.runtime->observe<EmotionState>(session->chat.emotion_topic, [raw](const Delivery<EmotionState>& m) {
        TurnEvent e;
        e.stage = Stage::emotion;
        e.kind = ChunkKind::state;
        e.origin = "emotion";
        e.text = m->label;
        e.turn = m.header.turn;
        e.emotion = {
            {"label", m->label}, {"valence", m->valence}, {"arousal", m->arousal}, {"dominance", m->dominance}};
        raw->deliver(std::move(e));
      });
    return session;
  }

  /// The user's session with these settings, started (or restarted) as needed; marked busy. Runs on the
  /// connection thread; starting a pipeline takes a moment, ending one (eviction) consolidates its memories.
  std::shared_ptr<UserSession> acquire_session(const std::string& user, const SessionSettings& settings,
                                               bool request_overrides) {
    std::vector<std::shared_ptr<UserSession>> to_end;
    {
      std::lock_guard<std::mutex> lk(pool_mu);
      auto it = sessions.find(user);
      if (it != sessions.end() && it->second->settings == settings && !it->second->chat.runtime->failed()) {
        it->second->busy = true;
        it->second->last_used = Clock::now();
        return it->second;
      }
      if (it != sessions.end()) {  // new settings (or a failed pipeline): this session ends, a new one starts
        to_end.push_back(it->second);
        sessions.erase(it);
      }
      while (static_cast<int>(sessions.size()) >= options.max_sessions) {
        auto lru = sessions.end();
        for (auto s = sessions.begin(); s != sessions.end(); ++s)
          if (!s->second->busy && (lru == sessions.end() || s->second->last_used < lru->second->last_used)) lru = s;
        if (lru == sessions.end()) break;  // every session busy: at most max_concurrent, so this is transient
        to_end.push_back(lru->second);
        sessions.erase(lru);
      }
    }
    to_end.clear();  // ends them (outside the lock)
    std::shared_ptr<UserSession> session;
    {
      // One start at a time: they share files (the memory database is created by the first) and the CPU.
      std::lock_guard<std::mutex> lk(session_start_mu);
      session = start_session(user, settings, request_overrides);
    }
    std::lock_guard<std::mutex> lk(pool_mu);
    session->busy = true;
    session->last_used = Clock::now();
    sessions[user] = session;
    return session;
  }

  void release_session(const std::shared_ptr<UserSession>& session) {
    std::lock_guard<std::mutex> lk(pool_mu);
    session->busy = false;
    session->last_used = Clock::now();
  }

  void end_idle_sessions(Clock::time_point older_than) {
    std::vector<std::shared_ptr<UserSession>> to_end;
    {
      std::lock_guard<std::mutex> lk(pool_mu);
      for (auto it = sessions.begin(); it != sessions.end();)
        if (!it->second->busy && it->second->last_used < older_than) {
          to_end.push_back(it->second);
          it = sessions.erase(it);
        } else {
          ++it;
        }
    }
  }

  int session_count() {
    std::lock_guard<std::mutex> lk(pool_mu);
    return static_cast<int>(sessions.size());
  }

  // --- HTTP -------------------------------------------------------------------------------------------------------

  using Request = http::request<http::string_body>;

  template <class Body>
  void common_headers(http::response<Body>& res) {
    res.set(http::field::server, "lal");
    res.set(http::field::cache_control, "no-store");
  }

  bool send(DeadlineSocket& sock, const Request& req, http::status status, const std::string& content_type,
            std::string body, const std::string& route, std::vector<std::pair<std::string, std::string>> extra = {}) {
    http::response<http::string_body> res{status, req.version()};
    common_headers(res);
    res.set(http::field::content_type, content_type);
    for (const auto& [k, v] : extra) res.set(k, v);
    res.keep_alive(req.keep_alive() && !stopping.load());
    res.body() = std::move(body);
    res.prepare_payload();
    metrics.request(route, static_cast<int>(status));
    sock.expires_after(options.read_timeout);
    beast::error_code ec;
    http::write(sock, res, ec);
    return !ec && res.keep_alive();
  }

  bool send_error(DeadlineSocket& sock, const Request& req, const ApiError& e, const std::string& route) {
    std::vector<std::pair<std::string, std::string>> extra;
    if (e.status == 429) extra.emplace_back("Retry-After", std::to_string(retry_after_s()));
    if (e.status == 401) extra.emplace_back("WWW-Authenticate", "Bearer");
    return send(sock, req, static_cast<http::status>(e.status), "application/json", error_body(e), route,
                std::move(extra));
  }

  void check_auth(const Request& req) {
    if (options.api_key.empty()) return;
    const auto h = req[http::field::authorization];
    const std::string header(h.data(), h.size());
    const std::string prefix = "Bearer ";
    if (header.compare(0, prefix.size(), prefix) != 0 ||
        !constant_time_equal(header.substr(prefix.size()), options.api_key))
      throw ApiError(401, "authentication_error",
                     header.empty() ? "missing API key: send Authorization: Bearer KEY (lal serve --api_key)"
                                    : "incorrect API key",
                     "", "invalid_api_key");
  }

  /// Answer one request; false = close the connection.
  bool handle(DeadlineSocket& sock, const Request& req) {
    const std::string target(req.target());
    const std::string path = target.substr(0, target.find('?'));
    const bool get = req.method() == http::verb::get;
    std::string route = path;
    try {
      if (path == "/health" && get) {
        json j = {{"status", stopping.load() ? "draining" : "ok"},
                  {"model", options.model_name},
                  {"running", admission.running()},
                  {"queued", admission.queued()},
                  {"sessions", session_count()}};
        return send(sock, req, stopping.load() ? http::status::service_unavailable : http::status::ok,
                    "application/json", dump(j), route);
      }
      if (path == "/metrics" && get) {
        check_auth(req);
        return send(sock, req, http::status::ok, "text/plain; version=0.0.4; charset=utf-8", metrics_text(), route);
      }
      if ((path == "/v1/models" || path == "/v1/models/" + options.model_name) && get) {
        check_auth(req);
        json m = {{"id", options.model_name}, {"object", "model"}, {"created", created}, {"owned_by", "lal"}};
        return send(sock, req, http::status::ok, "application/json",
                    dump(path == "/v1/models" ? json{{"object", "list"}, {"data", json::array({m})}} : m), route);
      }
      if (path == "/v1/chat/completions") {
        if (req.method() != http::verb::post)
          throw ApiError(405, "invalid_request_error", "use POST for /v1/chat/completions");
        check_auth(req);
        return chat(sock, req);
      }
      if (get && path.rfind("/v1/", 0) != 0) {
        const std::string name = path == "/" ? "index.html" : path.substr(1);
        const char* type = content_type_for(name);
        const std::filesystem::path file = std::filesystem::path(options.web_dir) / name;
        std::ifstream in(file, std::ios::binary);
        if (safe_web_name(name) && type && in) {
          std::ostringstream body;
          body << in.rdbuf();
          route = "/static";
          return send(sock, req, http::status::ok, type, body.str(), route);
        }
      }
      route = "other";
      throw ApiError(404, "invalid_request_error", "no route " + std::string(req.method_string()) + " " + path, "",
                     "not_found");
    } catch (const ApiError& e) {
      return send_error(sock, req, e, route);
    }
  }

  std::string metrics_text() {
    std::ostringstream out;
    {
      std::lock_guard<std::mutex> lk(metrics.mu);
      out << "# HELP lal_requests_total HTTP requests answered, by route and status\n"
             "# TYPE lal_requests_total counter\n";
      for (const auto& [k, n] : metrics.requests)
        out << "lal_requests_total{route=\"" << k.first << "\",code=\"" << k.second << "\"} " << n << "\n";
      out << "# HELP lal_turns_total chat turns, by outcome\n# TYPE lal_turns_total counter\n";
      for (const auto& [k, n] : metrics.turns) out << "lal_turns_total{outcome=\"" << k << "\"} " << n << "\n";
    }
    out << "# HELP lal_prompt_tokens_total tokens of the users' messages\n# TYPE lal_prompt_tokens_total counter\n"
        << "lal_prompt_tokens_total " << metrics.prompt_tokens.load() << "\n"
        << "# HELP lal_completion_tokens_total tokens generated (thoughts and answers)\n"
           "# TYPE lal_completion_tokens_total counter\n"
        << "lal_completion_tokens_total " << metrics.completion_tokens.load() << "\n";
    metrics.first_thought.write(out, "lal_time_to_first_thought_seconds",
                                "from a request's arrival to its first thought on the wire");
    metrics.first_answer.write(out, "lal_time_to_answer_seconds",
                               "from a request's arrival to the first token of its answer on the wire");
    metrics.turn_seconds.write(out, "lal_turn_seconds", "from a request's arrival to the end of its turn");
    metrics.queue_wait.write(out, "lal_queue_wait_seconds", "time a turn waited for a free slot");
    out << "# HELP lal_queue_depth turns waiting for a slot\n# TYPE lal_queue_depth gauge\nlal_queue_depth "
        << admission.queued() << "\n"
        << "# HELP lal_turns_running turns running now\n# TYPE lal_turns_running gauge\nlal_turns_running "
        << admission.running() << "\n"
        << "# HELP lal_sessions user pipeline sessions alive\n# TYPE lal_sessions gauge\nlal_sessions "
        << session_count() << "\n";
    {
      std::lock_guard<std::mutex> lk(connections_mu);
      out << "# HELP lal_connections open HTTP connections\n# TYPE lal_connections gauge\nlal_connections "
          << connections << "\n";
    }
    return out.str();
  }

  // --- a chat turn ------------------------------------------------------------------------------------------------

  /// Writes a streamed response: header once, then SSE events as chunks.
  struct SseWriter {
    DeadlineSocket& sock;
    bool header_sent = false;
    bool failed = false;
    std::string pending;
    void add(const json& chunk) { pending += "data: " + dump(chunk) + "\n\n"; }
    void add_raw(const std::string& data) { pending += "data: " + data + "\n\n"; }
    bool flush(const Request& req, std::chrono::seconds timeout) {
      if (failed) return false;
      beast::error_code ec;
      sock.expires_after(timeout);
      if (!header_sent) {
        http::response<http::empty_body> res{http::status::ok, req.version()};
        res.set(http::field::server, "lal");
        res.set(http::field::content_type, "text/event-stream; charset=utf-8");
        res.set(http::field::cache_control, "no-cache");
        res.set("X-Accel-Buffering", "no");
        res.keep_alive(req.keep_alive());
        res.chunked(true);
        http::response_serializer<http::empty_body> sr{res};
        http::write_header(sock, sr, ec);
        header_sent = true;
        if (ec) return !(failed = true);
      }
      if (pending.empty()) return true;
      net::write(sock, http::make_chunk(net::buffer(pending)), ec);
      pending.clear();
      return !(failed = static_cast<bool>(ec));
    }
    bool close(const Request& req, std::chrono::seconds timeout) {
      if (!flush(req, timeout)) return false;
      beast::error_code ec;
      net::write(sock, http::make_chunk_last(), ec);
      return !(failed = static_cast<bool>(ec));
    }
  };

  bool chat(DeadlineSocket& sock, const Request& req) {
    const auto t0 = Clock::now();
    const std::string route = "/v1/chat/completions";
    ChatRequest r = parse_chat_request(req.body(), options.limits);
    if (!r.user_given && !options.user_header.empty()) {
      const auto h = req[options.user_header];
      if (!h.empty()) {
        r.user = std::string(h.data(), h.size());
        check_user(r.user, options.user_header, options.limits);
      }
    }
    if (r.model != options.model_name)
      throw ApiError(404, "invalid_request_error",
                     "the model '" + r.model + "' does not exist; this server has '" + options.model_name + "'",
                     "model", "model_not_found");
    const SessionSettings settings = settings_for(r);

    // Wait for a slot (429 when the queue is full). The client may give up meanwhile.
    const auto ticket = admission.enqueue(r.user, retry_after_s());
    const auto deadline = t0 + options.turn_timeout;
    while (!admission.wait(ticket, milliseconds(100))) {
      if (admission.refused(ticket)) throw ApiError(503, "server_error", "lal serve is shutting down");
      if (sock.peer_closed()) {
        admission.leave(ticket);
        metrics.turn("disconnected");
        return false;
      }
      if (Clock::now() >= deadline) {
        admission.leave(ticket);
        metrics.turn("timeout");
        throw ApiError(503, "server_error", "no free slot within the turn timeout; retry later", "", "timeout");
      }
    }
    metrics.queue_wait.observe(seconds_since(t0));
    struct Finish {  // the slot is released however this turn ends
      Admission& a;
      std::shared_ptr<Admission::Ticket> t;
      ~Finish() { a.finish(t); }
    } finish{admission, ticket};

    std::shared_ptr<UserSession> session;
    try {
      session = acquire_session(r.user, settings, !r.overrides.empty());
    } catch (const ApiError&) {
      metrics.turn("error");
      throw;
    }
    struct Release {
      Impl& impl;
      std::shared_ptr<UserSession> s;
      ~Release() { impl.release_session(s); }
    } release{*this, session};

    runtime::Runtime& rt = *session->chat.runtime;
    const std::string id = random_id();
    const std::int64_t created_s =
        std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
    const std::int64_t tokens_before = session->model->generated.load();

    auto stream = std::make_shared<TurnStream>();
    {
      std::lock_guard<std::mutex> lk(session->mu);
      stream->turn = session->turns_submitted + 1;
      session->current = stream;
    }
    const TurnId turn = rt.submit(r.input, r.user);
    session->turns_submitted = turn;
    if (turn != stream->turn) {  // someone else submitted on this runtime: its turn ids are not ours to predict
      std::lock_guard<std::mutex> lk(session->mu);
      stream->turn = turn;
    }

    SseWriter sse{sock, false, false, {}};
    ThoughtSerializer serializer(true);
    StopMatcher stopper(r.stop);
    std::string reasoning, content;
    json lal_events = json::array();
    bool first_thought = false, first_answer = false, client_gone = false, timed_out = false, shut = false;
    bool cancelled = false;
    TurnEvent closing;
    bool done = false;
    auto cancel = [&] {
      if (!cancelled) rt.cancel_turn(turn);
      cancelled = true;
    };

    auto emit = [&](json delta, json ext) {
      if (r.stream) {
        if (sse.pending.empty() && !sse.header_sent) {  // the first chunk names the role, as OpenAI's does
          json first = delta;
          first["role"] = "assistant";
          sse.add(chunk_json(id, created_s, options.model_name, first, nullptr, ext));
        } else {
          sse.add(chunk_json(id, created_s, options.model_name, delta, nullptr, ext));
        }
      } else {
        lal_events.push_back(ext);
      }
    };
    auto thought = [&](const ThoughtSerializer::Piece& p) {
      if (p.event.text.empty()) return;
      if (!first_thought) metrics.first_thought.observe(seconds_since(t0));
      first_thought = true;
      reasoning += p.event.text;
      json ext = lal_extension(p.event, p.heading ? "heading" : nullptr);
      if (!r.stream) ext["text"] = p.event.text;
      emit(json{{"reasoning_content", p.event.text}, {"reasoning", p.event.text}}, ext);
    };
    auto answer = [&](const TurnEvent& e, const std::string& text) {
      if (text.empty()) return;
      if (!first_answer) metrics.first_answer.observe(seconds_since(t0));
      first_answer = true;
      content += text;
      json ext = lal_extension(e);
      if (!r.stream) ext["text"] = text;
      emit(json{{"content", text}}, ext);
    };

    const auto turn_deadline = t0 + options.turn_timeout;
    Clock::time_point settle_deadline{};  // after a cancel: how long to wait for the turn to close
    while (!done) {
      for (auto& e : stream->take(milliseconds(50))) {
        if (e.turn_done) {
          closing = e;
          done = true;
          break;
        }
        if (e.kind == ChunkKind::answer) {
          if (stopper.stopped()) continue;
          answer(e, stopper.feed(e.text));
          if (stopper.stopped()) cancel();  // a stop string: the answer is complete, the rest need not be made
        } else if (!e.emotion.is_null()) {
          json ext = lal_extension(e);
          if (r.stream)
            emit(json::object(), ext);
          else
            lal_events.push_back(ext);
        } else {
          for (const auto& piece : serializer.feed(e)) thought(piece);
        }
      }
      if (r.stream && !sse.pending.empty() && !sse.flush(req, options.read_timeout)) {
        client_gone = true;
        cancel();
      }
      if (!cancelled) {
        if (sock.peer_closed()) {
          client_gone = true;
          cancel();
        } else if (Clock::now() >= turn_deadline) {
          timed_out = true;
          cancel();
        } else if (cancelling.load()) {
          shut = true;
          cancel();
        } else if (rt.failed()) {
          break;
        }
      }
      if (cancelled) {
        if (settle_deadline == Clock::time_point{}) settle_deadline = Clock::now() + std::chrono::seconds(10);
        if (Clock::now() >= settle_deadline) break;
      }
    }
    {
      std::lock_guard<std::mutex> lk(session->mu);
      session->current.reset();
    }
    for (const auto& piece : serializer.flush()) thought(piece);
    if (!stopper.stopped()) answer(closing, stopper.flush());
    // As OpenAI: "length" when the answer ran into its token budget (max_tokens), else "stop" (the model ended
    // it, or a stop string did).
    const char* finish_reason = !stopper.stopped() && closing.finish_reason == FinishReason::length ? "length" : "stop";

    const Usage usage{count_tokens ? count_tokens(r.input) : 0, session->model->generated.load() - tokens_before};
    metrics.prompt_tokens += usage.prompt_tokens;
    metrics.completion_tokens += usage.completion_tokens;
    const double turn_s = seconds_since(t0);
    metrics.turn_seconds.observe(turn_s);
    mean_turn_s.store(0.8 * mean_turn_s.load() + 0.2 * turn_s);

    if (client_gone) {
      metrics.turn("disconnected");
      metrics.request(route, 499);
      return false;
    }
    std::optional<ApiError> failure;
    if (timed_out)
      failure = ApiError(504, "server_error",
                         "the turn ran past the turn timeout (" + std::to_string(options.turn_timeout.count()) +
                             " s) and was cancelled",
                         "", "turn_timeout");
    else if (shut)
      failure =
          ApiError(503, "server_error", "lal serve shut down during the turn; it was cancelled", "", "shutting_down");
    else if (rt.failed())
      failure = ApiError(500, "server_error", "the pipeline stopped: " + rt.failure());
    else if (!done)
      failure = ApiError(500, "server_error", "the turn did not close after it was cancelled");
    else if (closing.cancelled && !stopper.stopped())
      failure = ApiError(500, "server_error", "the pipeline cancelled the turn");
    metrics.turn(failure ? (timed_out ? "timeout" : shut ? "shutdown" : "error") : "completed");

    json lal_summary = {{"stage", "conclusion"},
                        {"kind", "done"},
                        {"origin", "lal serve"},
                        {"t_ms", closing.turn_done ? closing.t_ms : seconds_since(t0) * 1000.0},
                        {"turn", turn},
                        {"strategy", closing.strategy ? to_string(*closing.strategy) : ""},
                        {"first_output_ms", closing.first_output_ms ? json(*closing.first_output_ms) : json(nullptr)},
                        {"answer_done_ms", closing.answer_done_ms ? json(*closing.answer_done_ms) : json(nullptr)}};
    if (r.stream) {
      if (failure) {
        sse.add_raw(error_body(*failure));
      } else {
        sse.add(chunk_json(id, created_s, options.model_name, json::object(), finish_reason, lal_summary));
        if (r.include_usage) {
          json u = {{"id", id},
                    {"object", "chat.completion.chunk"},
                    {"created", created_s},
                    {"model", options.model_name},
                    {"choices", json::array()},
                    {"usage", usage_json(usage)},
                    {"lal",
                     {{"stage", "conclusion"},
                      {"kind", "usage"},
                      {"origin", "lal serve"},
                      {"t_ms", seconds_since(t0) * 1000.0}}}};
          sse.add(u);
        }
      }
      sse.add_raw("[DONE]");
      metrics.request(route, failure ? failure->status : 200);
      return sse.close(req, options.read_timeout) && req.keep_alive() && !stopping.load();
    }
    if (failure) throw *failure;
    json message = {{"role", "assistant"}, {"content", content}};
    if (!reasoning.empty()) {
      message["reasoning_content"] = reasoning;
      message["reasoning"] = reasoning;
    }
    lal_summary["events"] = std::move(lal_events);
    json body = {
        {"id", id},
        {"object", "chat.completion"},
        {"created", created_s},
        {"model", options.model_name},
        {"choices", json::array({json{
                        {"index", 0}, {"message", message}, {"finish_reason", finish_reason}, {"logprobs", nullptr}}})},
        {"usage", usage_json(usage)},
        {"lal", lal_summary}};
    return send(sock, req, http::status::ok, "application/json", dump(body), route);
  }

  // --- connections ------------------------------------------------------------------------------------------------

  /// After refusing a request whose body is still coming: stop sending, read and drop what the client still sends
  /// (briefly, boundedly) so it can read the answer instead of a connection reset.
  void linger(DeadlineSocket& sock, tcp::socket& socket) {
    beast::error_code ec;
    socket.shutdown(tcp::socket::shutdown_send, ec);
    sock.expires_after(std::chrono::seconds(2));
    char sink[16384];
    for (std::size_t total = 0; total < (16u << 20);) {
      const std::size_t n = sock.read_some(net::buffer(sink), ec);
      if (ec || n == 0) break;
      total += n;
    }
  }

  void serve_connection(tcp::socket socket) {
    beast::error_code ec;
    socket.non_blocking(true, ec);
    socket.set_option(tcp::no_delay(true), ec);
    DeadlineSocket sock(socket, stopping);
    beast::flat_buffer buffer;
    while (!stopping.load()) {
      http::request_parser<http::string_body> parser;
      parser.header_limit(16 * 1024);
      parser.body_limit(options.max_body_bytes);
      sock.expires_after(options.read_timeout);
      http::read_header(sock, buffer, parser, ec);
      if (!ec && parser.get()[http::field::expect] == "100-continue") {
        http::response<http::empty_body> cont{http::status::continue_, parser.get().version()};
        http::write(sock, cont, ec);
      }
      if (!ec && !parser.is_done()) http::read(sock, buffer, parser, ec);
      if (ec == http::error::end_of_stream || ec == net::error::eof || ec == net::error::operation_aborted ||
          ec == net::error::connection_reset)
        break;
      Request req = parser.is_header_done() ? parser.release() : Request{};
      if (ec == http::error::body_limit) {
        req.keep_alive(false);
        send_error(sock, req,
                   ApiError(413, "invalid_request_error",
                            "the request body is larger than " + std::to_string(options.max_body_bytes) + " bytes"),
                   "other");
        linger(sock, socket);
        break;
      }
      if (ec == net::error::timed_out) {
        if (parser.is_header_done() || buffer.size() > 0)
          send_error(sock, req, ApiError(408, "invalid_request_error", "the request did not arrive in time"), "other");
        break;
      }
      if (ec) {
        req.version(11);
        send_error(sock, req, ApiError(400, "invalid_request_error", "bad HTTP request: " + ec.message()), "other");
        break;
      }
      bool keep = false;
      try {
        keep = handle(sock, req);
      } catch (const std::exception& e) {
        spdlog::error("lal serve: {} {}: {}", std::string(req.method_string()), std::string(req.target()), e.what());
        keep = send_error(sock, req, ApiError(500, "server_error", e.what()), "other") && false;
      }
      if (!keep) break;
    }
    socket.shutdown(tcp::socket::shutdown_both, ec);
    socket.close(ec);
  }

  void accept_loop() {
    beast::error_code ec;
    acceptor.non_blocking(true, ec);
    std::thread reaper([this] {
      std::unique_lock<std::mutex> lk(stop_mu);
      while (!stop_cv.wait_for(lk, std::chrono::seconds(5), [&] { return stop_requested; })) {
        lk.unlock();
        end_idle_sessions(Clock::now() - options.session_idle);
        lk.lock();
      }
    });
    while (!stopping.load()) {
      pollfd p{acceptor.native_handle(), POLLIN, 0};
      if (::poll(&p, 1, 200) <= 0) continue;
      tcp::socket socket(io);
      acceptor.accept(socket, ec);
      if (ec) continue;
      {
        std::lock_guard<std::mutex> lk(connections_mu);
        if (connections >= options.max_connections) {
          static const std::string busy =
              "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 5\r\n"
              "Connection: close\r\nContent-Length: 97\r\n\r\n"
              "{\"error\":{\"message\":\"too many "
              "connections\",\"type\":\"server_error\",\"param\":null,\"code\":null}}";
          socket.non_blocking(true, ec);
          socket.write_some(net::buffer(busy), ec);
          socket.close(ec);
          metrics.request("other", 503);
          continue;
        }
        ++connections;
      }
      std::thread([this, s = std::move(socket)]() mutable {
        try {
          serve_connection(std::move(s));
        } catch (const std::exception& e) {
          spdlog::error("lal serve: connection: {}", e.what());
        }
        std::lock_guard<std::mutex> lk(connections_mu);
        --connections;
        connections_cv.notify_all();
      }).detach();
    }
    acceptor.close(ec);
    {
      std::lock_guard<std::mutex> lk(stop_mu);
      stop_requested = true;
    }
    stop_cv.notify_all();
    reaper.join();

    // Drain: queued turns are refused, running ones get the grace period, then are cancelled.
    admission.drain();
    auto wait_connections = [&](std::chrono::seconds limit) {
      std::unique_lock<std::mutex> lk(connections_mu);
      return connections_cv.wait_for(lk, limit, [&] { return connections == 0; });
    };
    if (!wait_connections(options.shutdown_grace)) {
      spdlog::warn("lal serve: cancelling {} running turns after {} s", admission.running(),
                   options.shutdown_grace.count());
      cancelling = true;
      if (!wait_connections(std::chrono::seconds(15)))
        spdlog::warn("lal serve: {} connections still open at exit", connections);
    }
    std::map<std::string, std::shared_ptr<UserSession>> ending;
    {
      std::lock_guard<std::mutex> lk(pool_mu);
      ending.swap(sessions);
    }
    spdlog::info("lal serve: ending {} sessions", ending.size());
    ending.clear();  // each session's runtime stops: memories consolidate
  }
};

Server::Server(ServerOptions options, std::shared_ptr<LanguageModel> model,
               std::function<std::int64_t(const std::string&)> count_tokens)
    : impl_(std::make_unique<Impl>(std::move(options), std::move(model), std::move(count_tokens))) {}

Server::~Server() = default;

void Server::listen() {
  auto& o = impl_->options;
  beast::error_code ec;
  tcp::resolver resolver(impl_->io);
  const auto found = resolver.resolve(o.host, std::to_string(o.port), tcp::resolver::passive, ec);
  if (ec || found.empty())
    throw std::runtime_error("--host '" + o.host + "' is not an address of this machine: " + ec.message());
  const tcp::endpoint endpoint = found.begin()->endpoint();
  auto& a = impl_->acceptor;
  a.open(endpoint.protocol(), ec);
  if (!ec) a.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) a.bind(endpoint, ec);
  if (!ec) a.listen(net::socket_base::max_listen_connections, ec);
  if (ec) throw std::runtime_error("cannot listen on " + o.host + ":" + std::to_string(o.port) + ": " + ec.message());
}

unsigned short Server::port() const { return impl_->acceptor.local_endpoint().port(); }

void Server::run() { impl_->accept_loop(); }

void Server::shutdown() { impl_->stopping = true; }

}  // namespace lal::serve
