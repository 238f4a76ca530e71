// lal bench memory — encode and recall latency of the memory tiers, as the plugins themselves (loaded from the
// plugin path) handle them.
//
// Two ways of measuring, both reported:
//   * handler: the long_term / working_memory module runs against a minimal in-process Context and the benchmark
//     calls its episode handler and its recall server directly — the tier's own cost (SQLite, features, ranking),
//     without the bus;
//   * bus: the same database served by a running pipeline, asked over the bus as the hippocampus asks — adds the
//     request/reply hops (see `lal bench bus` for those alone).
// Recall rehearses what it returns, so each measured recall includes its write transaction.
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <future>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>

#include "command.hpp"
#include "lal/runtime/pipeline.hpp"
#include "lal/runtime/plugin_loader.hpp"
#include "lal/runtime/runtime.hpp"

namespace lal::cli {
namespace {

namespace fs = std::filesystem;

/// Just enough of a host to start one module and call its handlers from the benchmark's thread.
class BenchContext final : public Context {
 public:
  BenchContext(std::string id, Config config) : id_(std::move(id)), config_(std::move(config)) {}
  const std::string& module_id() const override { return id_; }
  const Config& config() const override { return config_; }
  void log(LogLevel level, std::string_view text) override {
    if (level >= LogLevel::warn) std::cerr << "[" << id_ << "] " << text << "\n";
  }
  void write_output(std::string_view) override {}

  template <class T>
  void deliver(const std::string& port, T body, const std::string& user) {
    ErasedMessage m;
    m.header.user = user;
    m.header.sequence = ++sequence_;
    m.header.timestamp_ns = monotonic_ns();
    m.type = type_name<T>();
    m.payload = std::make_shared<const T>(std::move(body));
    subscribers_.at(port)(m);
  }
  template <class Req, class Rep>
  std::shared_ptr<const Rep> ask(const std::string& port, Req body, const std::string& user) {
    ErasedMessage m;
    m.header.user = user;
    m.header.sequence = ++sequence_;
    m.header.timestamp_ns = monotonic_ns();
    m.type = type_name<Req>();
    m.payload = std::make_shared<const Req>(std::move(body));
    return std::static_pointer_cast<const Rep>(servers_.at(port)(m));
  }

 protected:
  bool subscribe_erased(std::string_view port, const char*, ErasedHandler handler) override {
    subscribers_[std::string(port)] = std::move(handler);
    return true;
  }
  std::uint64_t publish_erased(std::string_view, const char*, std::shared_ptr<const void>, const MessageHeader*,
                               bool) override {
    return ++sequence_;  // nobody listens in the benchmark
  }
  void serve_erased(std::string_view port, const char*, const char*, ErasedServer handler) override {
    servers_[std::string(port)] = std::move(handler);
  }
  void request_erased(std::string_view port, const char*, const char*, std::shared_ptr<const void>,
                      std::chrono::milliseconds, ErasedReplyHandler on_reply, const MessageHeader*) override {
    on_reply(nullptr, "port '" + std::string(port) + "' is not wired in the benchmark", false);
  }
  CancellationToken cancellation_scoped(TurnId, const std::string&) override { return {}; }
  void cancel_scoped(TurnId, const std::string&) override {}
  // The benchmark's thread is the module's only "strand": posted work runs at once; waiting is not offered.
  void post(std::function<void()> fn) override { fn(); }
  Executor executor() override {
    return [](std::function<void()> fn) { fn(); };
  }
  Timer post_after(std::chrono::milliseconds, std::function<void()>) override {
    throw std::logic_error("the memory benchmark's host has no timers");
  }
  std::shared_ptr<void> turn_state_erased(TurnId, const char*, std::function<std::shared_ptr<void>()>) override {
    throw std::logic_error("the memory benchmark's host keeps no turn state");
  }
  void await_erased(std::string_view, const char*, TurnId, std::chrono::milliseconds, ErasedHandler,
                    std::function<void()>) override {
    throw std::logic_error("the memory benchmark's host cannot await");
  }
  void on_cancel_erased(TurnId, const std::string&, std::function<void()>) override {}
  std::shared_ptr<void> busy_guard() override { return nullptr; }
  std::shared_ptr<void> find_service(const std::string&, const char*) override { return nullptr; }
  void register_service(const std::string&, const char*, std::shared_ptr<void>) override {}

 private:
  std::string id_;
  Config config_;
  std::uint64_t sequence_ = 0;
  std::map<std::string, ErasedHandler> subscribers_;
  std::map<std::string, ErasedServer> servers_;
};

struct Stats {
  double p50_us = 0, p99_us = 0, mean_us = 0, max_us = 0;
  std::size_t n = 0;
};

Stats stats(std::vector<double> us) {
  Stats s;
  s.n = us.size();
  if (us.empty()) return s;
  std::sort(us.begin(), us.end());
  auto at = [&](double q) {
    return us[std::min(us.size() - 1, static_cast<std::size_t>(q * static_cast<double>(us.size())))];
  };
  s.p50_us = at(0.50);
  s.p99_us = at(0.99);
  s.max_us = us.back();
  double sum = 0;
  for (double v : us) sum += v;
  s.mean_us = sum / static_cast<double>(us.size());
  return s;
}

nlohmann::json to_json(const Stats& s) {
  return {{"n", s.n}, {"p50_us", s.p50_us}, {"p99_us", s.p99_us}, {"mean_us", s.mean_us}, {"max_us", s.max_us}};
}

double micros_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();
}

/// Deterministic synthetic memories: everyday Japanese and English sentences with enough shared words that a cue
/// matches tens to hundreds of memories, and some self-statements so semantic facts are extracted too.
class Corpus {
 public:
  explicit Corpus(unsigned seed) : rng_(seed) {}
  std::string sentence() {
    static const char* places[] = {"東京", "大阪", "京都",  "札幌",  "福岡",  "名古屋", "横浜",  "神戸",
                                   "仙台", "広島", "Osaka", "Tokyo", "Kyoto", "Paris",  "London"};
    static const char* foods[] = {"ラーメン", "寿司", "カレー", "うどん", "そば",   "天ぷら", "焼き鳥",
                                  "パン",     "ピザ", "餃子",   "pasta",  "coffee", "tea"};
    static const char* events[] = {"会議",   "旅行", "誕生日", "試験", "引っ越し", "映画",
                                   "買い物", "散歩", "読書",   "料理", "meeting",  "concert"};
    static const char* days[] = {"月曜日", "火曜日", "水曜日", "木曜日", "金曜日", "週末", "昨日", "明日", "来週"};
    auto pick = [&](const auto& arr) {
      return arr[std::uniform_int_distribution<std::size_t>(0, std::size(arr) - 1)(rng_)];
    };
    switch (std::uniform_int_distribution<int>(0, 5)(rng_)) {
      case 0: return std::string(pick(days)) + "は" + pick(places) + "で" + pick(foods) + "を食べた";
      case 1: return std::string(pick(days)) + "の" + pick(events) + "は" + pick(places) + "で";
      case 2: return std::string("私は") + pick(foods) + "が好きです。" + pick(events) + "の話をしよう";
      case 3: return std::string(pick(events)) + "の前に" + pick(foods) + "を買う予定 #" + std::to_string(counter_++);
      case 4: return std::string("I had ") + pick(foods) + " in " + pick(places) + " on the " + pick(events) + " day";
      default: return std::string(pick(places)) + "の" + pick(events) + "はどうだった？ " + std::to_string(counter_++);
    }
  }

 private:
  std::mt19937 rng_;
  int counter_ = 0;
};

runtime::PipelineLoad load(const std::string& yaml, const std::vector<fs::path>& dirs) {
  auto l = runtime::load_pipeline_text(yaml, "<bench memory>", dirs);
  if (!l.ok()) {
    std::string msg = "cannot load the benchmark pipeline:\n";
    for (const auto& e : l.errors) msg += "  " + e.str() + "\n";
    throw std::runtime_error(msg);
  }
  return l;
}

int bench_memory_command(const std::vector<std::string>& args) {
  po::options_description desc("Options");
  add_common_options(desc);
  desc.add_options()("json", "print one JSON object instead of a table")(
      "items", po::value<std::size_t>()->default_value(10000), "memories stored for the one user")(
      "recalls", po::value<std::size_t>()->default_value(1000), "recalls measured per way")(
      "db", po::value<std::string>(), "database file (default: a fresh temporary file, removed afterwards)")(
      "synchronous", po::value<std::string>()->default_value("normal"), "long_term `synchronous`: normal or full")(
      "plugin_path", po::value<std::vector<std::string>>()->composing(), "extra plugin directory (repeatable)");
  po::variables_map vm;
  if (!parse_command_line("bench memory", "[--json] [--items N] [--recalls N] [--db FILE]", args, desc, {}, vm))
    return 0;
  const std::size_t items = vm["items"].as<std::size_t>(), recalls = vm["recalls"].as<std::size_t>();
  if (items == 0 || recalls == 0) throw UsageError("--items and --recalls must be positive");
  const std::string sync = vm["synchronous"].as<std::string>();
  if (sync != "normal" && sync != "full") throw UsageError("--synchronous must be normal or full");
  std::vector<fs::path> dirs;
  if (vm.count("plugin_path"))
    for (const auto& d : vm["plugin_path"].as<std::vector<std::string>>()) dirs.emplace_back(d);
  for (const auto& d : runtime::default_plugin_path()) dirs.push_back(d);

  const bool temporary = !vm.count("db");
  const fs::path db = temporary ? fs::temp_directory_path() / ("lal_bench_memory_" + std::to_string(::getpid()) + ".db")
                                : fs::path(vm["db"].as<std::string>());
  if (temporary) {
    for (const char* suffix : {"", "-wal", "-shm"}) fs::remove(db.string() + suffix);
  }
  const std::string user = "bench";
  const std::string yaml = R"(modules:
  long_term:
    plugin: long_term
    config: {path: ")" + db.string() +
                           R"(", synchronous: )" + sync + R"(}
    inputs: {recall: memory.long.recall}
  working:
    plugin: working_memory
    inputs: {percept: turn.input, recall: memory.working.recall}
)";
  nlohmann::json out;
  out["items"] = items;
  out["recalls"] = recalls;
  out["synchronous"] = sync;
  out["hardware_threads"] = std::thread::hardware_concurrency();

  // 1. long_term, handler level: encode `items` episodes, then recall.
  std::vector<std::string> cues;
  {
    auto l = load(yaml, dirs);
    const auto& spec = l.spec.modules[0];
    runtime::ModuleInstance instance(spec.loaded);
    BenchContext ctx(spec.id, Config(spec.id, spec.config));
    instance.module().start(ctx);
    Corpus corpus(42);
    std::vector<double> encode_us;
    encode_us.reserve(items);
    for (std::size_t i = 0; i < items; ++i) {
      Episode ep;
      ep.user_text = corpus.sentence();
      ep.answer = "了解しました。";
      ep.strategy = Strategy::deep;
      ep.confidence = 0.8;
      const auto t0 = std::chrono::steady_clock::now();
      ctx.deliver("episode", std::move(ep), user);
      encode_us.push_back(micros_since(t0));
    }
    Corpus cue_corpus(7);
    for (std::size_t i = 0; i < recalls; ++i) cues.push_back(cue_corpus.sentence());
    std::vector<double> recall_us;
    std::size_t returned = 0;
    for (const auto& cue : cues) {
      RecallRequest req;
      req.cue = cue;
      req.limit = 5;
      const auto t0 = std::chrono::steady_clock::now();
      auto rep = ctx.ask<RecallRequest, RecallReply>("recall", req, user);
      recall_us.push_back(micros_since(t0));
      returned += rep->items.size();
    }
    instance.module().stop();
    out["long_term"]["encode"] = to_json(stats(encode_us));
    out["long_term"]["recall_handler"] = to_json(stats(recall_us));
    out["long_term"]["mean_items_returned"] = static_cast<double>(returned) / static_cast<double>(recalls);
    std::error_code ec;
    out["long_term"]["db_bytes"] = fs::file_size(db, ec);
  }

  // 2. long_term and working memory over the bus, in a running pipeline on the same file (a fresh process view:
  //    the first recall loads the user's index from disk, reported separately).
  {
    auto l = load(yaml, dirs);
    runtime::Runtime rt(std::move(l.spec));
    rt.start();
    auto& bus = rt.bus();
    auto member = bus.add_member("bench");
    auto ask = [&](const std::string& topic, const std::string& cue) {
      std::promise<double> done;
      auto fut = done.get_future();
      MessageHeader h;
      h.user = user;
      RecallRequest req;
      req.cue = cue;
      req.limit = 5;
      const auto t0 = std::chrono::steady_clock::now();
      bus.request(
          member, bus.topic(topic, type_name<RecallRequest>()), std::make_shared<const RecallRequest>(req), h,
          std::chrono::seconds(30), [&](std::shared_ptr<const void> rep, std::string err, bool) {
            if (rep)
              done.set_value(micros_since(t0));
            else
              done.set_exception(std::make_exception_ptr(std::runtime_error("recall on " + topic + " failed: " + err)));
          });
      return fut.get();
    };
    out["long_term"]["first_recall_ms"] = ask("memory.long.recall", cues[0]) / 1000.0;
    std::vector<double> bus_us;
    for (const auto& cue : cues) bus_us.push_back(ask("memory.long.recall", cue));
    out["long_term"]["recall_bus"] = to_json(stats(bus_us));

    Corpus corpus(3);
    std::vector<double> wm_encode_us, wm_recall_us;
    for (std::size_t i = 0; i < recalls; ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      rt.submit(corpus.sentence(), user);
      rt.wait_idle();
      wm_encode_us.push_back(micros_since(t0));
      wm_recall_us.push_back(ask("memory.working.recall", cues[i]));
    }
    out["working_memory"]["encode_bus_until_idle"] = to_json(stats(wm_encode_us));
    out["working_memory"]["recall_bus"] = to_json(stats(wm_recall_us));
    rt.stop();
  }
  if (temporary)
    for (const char* suffix : {"", "-wal", "-shm"}) fs::remove(db.string() + suffix);

  if (vm.count("json")) {
    std::cout << out.dump() << "\n";
    return 0;
  }
  auto row = [](const char* what, const nlohmann::json& s) {
    char line[200];
    std::snprintf(line, sizeof line, "%-42s %10.1f %10.1f %10.1f\n", what, s["p50_us"].get<double>(),
                  s["p99_us"].get<double>(), s["mean_us"].get<double>());
    std::cout << line;
  };
  std::cout << items << " memories for one user, " << recalls << " recalls, synchronous=" << sync << "\n";
  std::cout << "                                              p50 µs     p99 µs    mean µs\n";
  row("long_term encode (handler)", out["long_term"]["encode"]);
  row("long_term recall (handler, with rehearsal)", out["long_term"]["recall_handler"]);
  row("long_term recall (over the bus)", out["long_term"]["recall_bus"]);
  row("working_memory percept (submit → idle)", out["working_memory"]["encode_bus_until_idle"]);
  row("working_memory recall (over the bus)", out["working_memory"]["recall_bus"]);
  std::cout << "long_term first recall after start (loads the user's index): "
            << out["long_term"]["first_recall_ms"].get<double>() << " ms; database "
            << out["long_term"]["db_bytes"].get<std::uintmax_t>() / 1024 << " KiB; "
            << out["long_term"]["mean_items_returned"].get<double>() << " items per recall\n";
  return 0;
}

}  // namespace

LAL_COMMAND("bench memory", "memory tiers: long_term encode/recall latency with N stored items, working memory recall",
            bench_memory_command);

}  // namespace lal::cli
