// Test support for the memory suite: run a pipeline, publish on its topics and ask its servers over the bus, record
// what modules publish, capture what they log, and give each test its own database directory.
#pragma once

#include <doctest/doctest.h>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <future>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "lal/runtime/runtime.hpp"
#include "pipeline_harness.hpp"

namespace lal::test {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

inline const std::vector<fs::path>& memory_plugin_dirs() {
  static const std::vector<fs::path> dirs = {LAL_BUILD_PLUGIN_DIR, LAL_MEMORY_TEST_PLUGIN_DIR};
  return dirs;
}

/// A fresh, empty directory for one test's database files, removed (permissions restored) at the end.
struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& name) {
    path = fs::temp_directory_path() / ("lal_memory_test_" + name + "_" + std::to_string(::getpid()));
    std::error_code ec;
    fs::permissions(path, fs::perms::owner_all, fs::perm_options::add, ec);
    fs::remove_all(path, ec);
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::permissions(path, fs::perms::owner_all, fs::perm_options::add, ec);
    for (auto& e : fs::recursive_directory_iterator(path, ec))
      fs::permissions(e.path(), fs::perms::owner_all, fs::perm_options::add, ec);
    fs::remove_all(path, ec);
  }
  std::string file(const std::string& name) const { return (path / name).string(); }
};

/// Everything logged through spdlog's default logger while it exists (the host logs modules' ctx.log there).
class LogCapture {
 public:
  LogCapture() : sink_(std::make_shared<Sink>()) { spdlog::default_logger()->sinks().push_back(sink_); }
  ~LogCapture() {
    auto& sinks = spdlog::default_logger()->sinks();
    sinks.erase(std::remove(sinks.begin(), sinks.end(), sink_), sinks.end());
  }
  std::string text() const {
    std::lock_guard<std::mutex> lk(sink_->lines_mutex);
    std::string all;
    for (const auto& l : sink_->lines) all += l + "\n";
    return all;
  }
  bool contains(const std::string& fragment) const { return text().find(fragment) != std::string::npos; }

 private:
  struct Sink : spdlog::sinks::base_sink<std::mutex> {
    std::mutex lines_mutex;
    std::vector<std::string> lines;
    void sink_it_(const spdlog::details::log_msg& msg) override {
      std::lock_guard<std::mutex> lk(lines_mutex);
      lines.emplace_back(msg.payload.data(), msg.payload.size());
    }
    void flush_() override {}
  };
  std::shared_ptr<Sink> sink_;
};

/// Messages published on one topic, in arrival order.
template <class T>
class Recorder {
 public:
  void add(const Delivery<T>& d) {
    std::lock_guard<std::mutex> lk(mu_);
    got_.push_back(d);
  }
  std::vector<Delivery<T>> all() const {
    std::lock_guard<std::mutex> lk(mu_);
    return got_;
  }
  std::vector<Delivery<T>> for_turn(TurnId turn) const {
    std::vector<Delivery<T>> out;
    for (auto& d : all())
      if (d.header.turn == turn) out.push_back(d);
    return out;
  }
  std::size_t size() const { return all().size(); }

 private:
  mutable std::mutex mu_;
  std::vector<Delivery<T>> got_;
};

/// A pipeline plus a bus member of the test's own, to publish, request and record.
class MemoryPipeline {
 public:
  explicit MemoryPipeline(const std::string& yaml) : harness_(yaml, memory_plugin_dirs()) {
    member_.emplace(bus().add_member("test-driver"));
  }
  runtime::Runtime& rt() { return *harness_.rt; }
  runtime::Bus& bus() { return harness_.rt->bus(); }

  template <class T>
  void publish(const std::string& topic, T body, const std::string& user, TurnId turn = 0) {
    MessageHeader h;
    h.user = user;
    h.turn = turn;
    bus().publish(bus().topic(topic, type_name<T>()), std::make_shared<const T>(std::move(body)), h);
  }

  /// Ask the server of `topic` to recall `cue` for `user`; fails the test on an error or after 10 s.
  RecallReply recall(const std::string& topic, const std::string& user, const std::string& cue, int limit = 5) {
    auto done = std::make_shared<std::promise<std::pair<std::shared_ptr<const void>, std::string>>>();
    auto fut = done->get_future();
    MessageHeader h;
    h.user = user;
    RecallRequest req;
    req.cue = cue;
    req.limit = limit;
    bus().request(*member_, bus().topic(topic, type_name<RecallRequest>()), std::make_shared<const RecallRequest>(req),
                  h, 5000ms, [done](std::shared_ptr<const void> rep, std::string err, bool) {
                    done->set_value({std::move(rep), std::move(err)});
                  });
    REQUIRE(fut.wait_for(10s) == std::future_status::ready);
    // Not a structured binding: doctest's macros capture in lambdas, which C++17 clang refuses for bindings.
    const auto reply = fut.get();
    const auto& rep = reply.first;
    REQUIRE_MESSAGE(rep != nullptr, "recall on " << topic << " failed: " << reply.second);
    return *std::static_pointer_cast<const RecallReply>(rep);
  }

  template <class T>
  std::shared_ptr<Recorder<T>> record(const std::string& topic) {
    auto r = std::make_shared<Recorder<T>>();
    bus().subscribe(*member_, bus().topic(topic, type_name<T>()), 1 << 16, OverflowPolicy::block,
                    [r](const ErasedMessage& m) {
                      r->add(Delivery<T>{m.header, std::static_pointer_cast<const T>(m.payload)});
                    });
    return r;
  }

  void idle() { REQUIRE(rt().wait_idle(10s)); }
  void stop() { rt().stop(); }

 private:
  PipelineHarness harness_;
  std::optional<runtime::Member> member_;
};

inline bool has_text(const RecallReply& r, const std::string& fragment) {
  for (const auto& i : r.items)
    if (i.text.find(fragment) != std::string::npos) return true;
  return false;
}

inline std::string dump(const RecallReply& r) {
  std::string s;
  for (const auto& i : r.items)
    s += "  [" + i.tier + "/" + i.kind + " #" + i.id + " score " + std::to_string(i.score) + " act " +
         std::to_string(i.activation) + "] " + i.text + "\n";
  return s.empty() ? "  (nothing)\n" : s;
}

inline Episode episode(const std::string& user_text, const std::string& answer = {}, double importance = 0.5,
                       Strategy strategy = Strategy::deep, double confidence = 0.8) {
  Episode e;
  e.user_text = user_text;
  e.answer = answer;
  e.importance = importance;
  e.strategy = strategy;
  e.confidence = confidence;
  return e;
}

}  // namespace lal::test
