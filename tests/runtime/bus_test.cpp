// The message bus: ordering, overflow policies, request/reply deadlines, failure isolation, idle detection.
#include <doctest/doctest.h>

#include <atomic>
#include <condition_variable>
#include <map>
#include <mutex>
#include <optional>
#include <thread>

#include "lal/runtime/bus.hpp"

using namespace lal;
using namespace lal::runtime;
using namespace std::chrono_literals;

namespace {

struct Num {
  static constexpr const char* kTypeName = "test.Num/1";
  int publisher = 0;
  int value = 0;
};

std::shared_ptr<const Num> num(int publisher, int value) {
  auto n = std::make_shared<Num>();
  n->publisher = publisher;
  n->value = value;
  return n;
}

int value_of(const ErasedMessage& m) { return static_cast<const Num*>(m.payload.get())->value; }

/// A gate a handler waits on, so a test can fill a mailbox while the subscriber is busy.
struct Gate {
  std::mutex m;
  std::condition_variable cv;
  bool open = false;
  std::atomic<bool> entered{false};
  void wait() {
    entered = true;
    std::unique_lock<std::mutex> lk(m);
    cv.wait(lk, [&] { return open; });
  }
  void release() {
    std::lock_guard<std::mutex> lk(m);
    open = true;
    cv.notify_all();
  }
};

}  // namespace

TEST_CASE("per-subscriber FIFO holds under concurrent publishers, nothing lost or duplicated") {
  Bus bus(BusOptions{3, 20us});
  auto topic = bus.topic("t", Num::kTypeName);
  constexpr int kPublishers = 4, kEach = 5000, kSubscribers = 3;
  std::vector<std::map<int, std::vector<int>>> seen(kSubscribers);
  std::vector<std::atomic<int>> concurrent(kSubscribers);
  std::atomic<bool> overlap{false};
  for (int s = 0; s < kSubscribers; ++s) {
    auto member = bus.add_member("sub" + std::to_string(s));
    bus.subscribe(member, topic, 64, OverflowPolicy::block, [&, s](const ErasedMessage& m) {
      if (concurrent[s].fetch_add(1) != 0) overlap = true;  // one member's handlers never overlap
      const auto* n = static_cast<const Num*>(m.payload.get());
      seen[s][n->publisher].push_back(n->value);
      concurrent[s].fetch_sub(1);
    });
  }
  std::vector<std::thread> pubs;
  for (int p = 0; p < kPublishers; ++p)
    pubs.emplace_back([&, p] {
      for (int i = 0; i < kEach; ++i) bus.publish(topic, num(p, i), {});
    });
  for (auto& t : pubs) t.join();
  REQUIRE(bus.wait_idle(10s));
  CHECK_FALSE(overlap);
  for (int s = 0; s < kSubscribers; ++s) {
    REQUIRE(seen[s].size() == kPublishers);
    for (int p = 0; p < kPublishers; ++p) {
      const auto& v = seen[s][p];
      REQUIRE(v.size() == kEach);
      for (int i = 0; i < kEach; ++i) REQUIRE(v[static_cast<std::size_t>(i)] == i);
    }
  }
  CHECK(bus.total_dropped() == 0);
}

TEST_CASE("headers: sequence increases, timestamp is monotonic, turn/user/parent are carried") {
  Bus bus;
  auto topic = bus.topic("t", Num::kTypeName);
  auto member = bus.add_member("sub");
  std::vector<MessageHeader> headers;
  bus.subscribe(member, topic, 16, OverflowPolicy::block, [&](const ErasedMessage& m) { headers.push_back(m.header); });
  MessageHeader h;
  h.turn = 7;
  h.user = "alice";
  h.parent = 3;
  bus.publish(topic, num(0, 1), h);
  bus.publish(topic, num(0, 2), h);
  REQUIRE(bus.wait_idle(5s));
  REQUIRE(headers.size() == 2);
  CHECK(headers[0].sequence > 0);
  CHECK(headers[1].sequence > headers[0].sequence);
  CHECK(headers[1].timestamp_ns >= headers[0].timestamp_ns);
  CHECK(headers[0].turn == 7);
  CHECK(headers[0].user == "alice");
  CHECK(headers[0].parent == 3);
}

TEST_CASE("overflow policies") {
  Bus bus(BusOptions{2, 0us});
  auto topic = bus.topic("t", Num::kTypeName);
  Gate gate;
  std::mutex m;
  std::vector<int> got;
  auto member = bus.add_member("slow");

  SUBCASE("drop_oldest keeps the newest `capacity` messages and counts the rest") {
    bus.subscribe(member, topic, 3, OverflowPolicy::drop_oldest, [&](const ErasedMessage& msg) {
      if (value_of(msg) == 0) gate.wait();
      std::lock_guard<std::mutex> lk(m);
      got.push_back(value_of(msg));
    });
    bus.publish(topic, num(0, 0), {});
    while (!gate.entered) std::this_thread::yield();
    for (int i = 1; i <= 10; ++i) bus.publish(topic, num(0, i), {});
    gate.release();
    REQUIRE(bus.wait_idle(5s));
    CHECK(got == std::vector<int>{0, 8, 9, 10});
    CHECK(bus.total_dropped() == 7);
  }
  SUBCASE("drop_newest keeps the first `capacity` messages and counts the rest") {
    bus.subscribe(member, topic, 3, OverflowPolicy::drop_newest, [&](const ErasedMessage& msg) {
      if (value_of(msg) == 0) gate.wait();
      std::lock_guard<std::mutex> lk(m);
      got.push_back(value_of(msg));
    });
    bus.publish(topic, num(0, 0), {});
    while (!gate.entered) std::this_thread::yield();
    for (int i = 1; i <= 10; ++i) bus.publish(topic, num(0, i), {});
    gate.release();
    REQUIRE(bus.wait_idle(5s));
    CHECK(got == std::vector<int>{0, 1, 2, 3});
    CHECK(bus.total_dropped() == 7);
  }
  SUBCASE("keep_latest delivers only the newest waiting message") {
    bus.subscribe(member, topic, 8, OverflowPolicy::keep_latest, [&](const ErasedMessage& msg) {
      if (value_of(msg) == 0) gate.wait();
      std::lock_guard<std::mutex> lk(m);
      got.push_back(value_of(msg));
    });
    bus.publish(topic, num(0, 0), {});
    while (!gate.entered) std::this_thread::yield();
    for (int i = 1; i <= 10; ++i) bus.publish(topic, num(0, i), {});
    gate.release();
    REQUIRE(bus.wait_idle(5s));
    CHECK(got == std::vector<int>{0, 10});
    CHECK(bus.total_dropped() == 9);
  }
  SUBCASE("block makes the publisher wait and loses nothing") {
    bus.subscribe(member, topic, 2, OverflowPolicy::block, [&](const ErasedMessage& msg) {
      if (value_of(msg) == 0) gate.wait();
      std::lock_guard<std::mutex> lk(m);
      got.push_back(value_of(msg));
    });
    bus.publish(topic, num(0, 0), {});
    while (!gate.entered) std::this_thread::yield();
    std::atomic<int> published{0};
    std::thread publisher([&] {
      for (int i = 1; i <= 10; ++i) {
        bus.publish(topic, num(0, i), {});
        published = i;
      }
    });
    std::this_thread::sleep_for(100ms);
    CHECK(published.load() == 2);  // the mailbox holds 2; the third publish is waiting
    gate.release();
    publisher.join();
    REQUIRE(bus.wait_idle(5s));
    CHECK(got == std::vector<int>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10});
    CHECK(bus.total_dropped() == 0);
    std::uint64_t blocked = 0;
    for (const auto& s : bus.stats()) blocked += s.blocked;
    CHECK(blocked >= 1);
  }
}

TEST_CASE("request/reply: reply, deadline, server failure, nobody serving") {
  Bus bus;
  auto topic = bus.topic("req", Num::kTypeName);
  auto lonely = bus.topic("nobody", Num::kTypeName);
  auto server = bus.add_member("server");
  auto client = bus.add_member("client");
  bus.serve(server, topic, 16, [](const ErasedMessage& m) -> std::shared_ptr<const void> {
    const int v = value_of(m);
    if (v < 0) throw std::runtime_error("negative");
    if (v == 999) std::this_thread::sleep_for(300ms);
    return num(0, v * 2);
  });
  std::mutex mu;
  std::vector<std::tuple<int, std::string, bool>> replies;
  auto record = [&](std::shared_ptr<const void> rep, std::string err, bool timed_out) {
    std::lock_guard<std::mutex> lk(mu);
    replies.emplace_back(rep ? static_cast<const Num*>(rep.get())->value : -1, err, timed_out);
  };
  bus.request(client, topic, num(0, 21), {}, 1000ms, record);
  REQUIRE(bus.wait_idle(5s));
  REQUIRE(replies.size() == 1);
  CHECK(std::get<0>(replies[0]) == 42);
  CHECK(std::get<1>(replies[0]).empty());

  replies.clear();
  const auto t0 = std::chrono::steady_clock::now();
  bus.request(client, topic, num(0, 999), {}, 50ms, record);
  REQUIRE(bus.wait_idle(5s));
  REQUIRE(replies.size() == 1);  // exactly once: the late reply is discarded
  CHECK(std::get<2>(replies[0]));
  CHECK(std::get<1>(replies[0]).find("deadline of 50 ms") != std::string::npos);
  CHECK(std::chrono::steady_clock::now() - t0 >= 50ms);

  replies.clear();
  bus.request(client, topic, num(0, -1), {}, 1000ms, record);
  REQUIRE(bus.wait_idle(5s));
  REQUIRE(replies.size() == 1);
  CHECK(std::get<1>(replies[0]).find("negative") != std::string::npos);
  CHECK_FALSE(std::get<2>(replies[0]));

  replies.clear();
  bus.request(client, lonely, num(0, 1), {}, 1000ms, record);
  REQUIRE(bus.wait_idle(5s));
  REQUIRE(replies.size() == 1);
  CHECK(std::get<1>(replies[0]).find("nobody serves") != std::string::npos);
}

TEST_CASE("a throwing handler is reported with its member and does not stop other subscribers") {
  Bus bus;
  auto topic = bus.topic("t", Num::kTypeName);
  std::vector<std::string> failures;
  std::mutex mu;
  auto bad = bus.add_member("bad", [&](const std::string& member, const std::string& t, const std::string& what) {
    std::lock_guard<std::mutex> lk(mu);
    failures.push_back(member + "|" + t + "|" + what);
  });
  auto good = bus.add_member("good");
  std::atomic<int> good_count{0}, bad_count{0};
  bus.subscribe(bad, topic, 16, OverflowPolicy::block, [&](const ErasedMessage& m) {
    ++bad_count;
    if (value_of(m) % 2) throw std::runtime_error("odd");
  });
  bus.subscribe(good, topic, 16, OverflowPolicy::block, [&](const ErasedMessage&) { ++good_count; });
  for (int i = 0; i < 10; ++i) bus.publish(topic, num(0, i), {});
  REQUIRE(bus.wait_idle(5s));
  CHECK(good_count == 10);
  CHECK(bad_count == 10);  // isolated: it keeps receiving
  CHECK(failures.size() == 5);
  CHECK(failures[0] == "bad|t|odd");
  CHECK(bus.total_failed() == 5);

  bad.disable();
  for (int i = 0; i < 4; ++i) bus.publish(topic, num(0, i), {});
  REQUIRE(bus.wait_idle(5s));
  CHECK(bad_count == 10);  // disabled: nothing more delivered
  CHECK(good_count == 14);
}

TEST_CASE("a topic has one type") {
  Bus bus;
  bus.topic("t", "a.A/1");
  CHECK_THROWS_WITH_AS(bus.topic("t", "b.B/1"), "topic 't' carries a.A/1, not b.B/1", std::invalid_argument);
}

TEST_CASE("handles held past the bus: the bus releases its handlers when it ends, and the handles stay safe to drop") {
  // A runtime's hosts keep Topic and Member handles after the bus that made them is gone (lal serve ends user
  // sessions this way). The bus must let go of every handler (they point into modules destroyed next), and the
  // handles must not touch the bus's destroyed state when they are released later.
  auto sentinel = std::make_shared<int>(0);
  std::optional<Topic> topic;
  std::optional<Member> member;
  std::optional<Member> idle_member;
  {
    Bus bus;
    topic = bus.topic("t", Num::kTypeName);
    member = bus.add_member("m");
    idle_member = bus.add_member("idle");
    bus.subscribe(*member, *topic, 8, OverflowPolicy::block, [sentinel](const ErasedMessage&) { ++*sentinel; });
    bus.publish(*topic, num(0, 1), {});
    CHECK(bus.wait_idle(5s));
    CHECK(*sentinel == 1);
    idle_member->post([sentinel] { ++*sentinel; });
    CHECK(bus.wait_idle(5s));
  }
  CHECK(sentinel.use_count() == 1);  // no handler survives the bus
  topic.reset();
  member.reset();
  idle_member.reset();
  CHECK(*sentinel == 2);
}
