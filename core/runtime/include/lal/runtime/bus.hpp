// lal runtime — the typed message bus.
//
// Topics have a name and one message type (checked by name, e.g. "lal.Percept/1"). Subscribers belong to a
// *member* (one per pipeline module); all of a member's handlers run on the member's Asio strand, so they never run
// concurrently with each other, while different members run in parallel on the bus's thread pool.
//
// Each subscription owns a bounded mailbox with an overflow policy (see lal::OverflowPolicy). Publishing appends to
// every subscriber's mailbox and schedules a drain on the subscriber's strand only if none is pending, so a burst
// costs one strand post, not one per message. Messages from one publisher thread reach each subscriber in the order
// they were published (FIFO per subscriber). Every drop is counted per subscription.
//
// Thread safety: every public member function may be called from any thread, including from handlers.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "lal/contract.hpp"
#include "lal/module.hpp"

namespace lal::runtime {

struct BusOptions {
  std::size_t threads = 2;  ///< worker threads in the pool
  /// How long an idle worker keeps polling for new work before it sleeps. Spinning trades CPU for latency: a
  /// sleeping worker needs a futex wake-up (several µs) before it can run a handler.
  std::chrono::microseconds spin{50};
};

struct SubscriptionStats {
  std::string member;
  std::string topic;
  std::uint64_t delivered = 0;  ///< handler invocations completed
  std::uint64_t dropped = 0;    ///< messages discarded by the overflow policy
  std::uint64_t failed = 0;     ///< handler invocations that threw
  std::uint64_t blocked = 0;    ///< publishes that had to wait for room (policy `block`)
  std::size_t queued = 0;       ///< messages waiting now
  std::size_t high_water = 0;   ///< most messages ever waiting at once
};

/// Called (on the member's strand) when one of its handlers throws. `what` is the exception message.
using FailureCallback = std::function<void(const std::string& member, const std::string& topic, const std::string& what)>;

class Bus;

/// A topic resolved once, for fast repeated publishing.
class Topic {
 public:
  const std::string& name() const;
  const std::string& type() const;

 private:
  friend class Bus;
  struct State;
  explicit Topic(std::shared_ptr<State> s) : state_(std::move(s)) {}
  std::shared_ptr<State> state_;
};

/// A member of the bus: one strand, any number of subscriptions. Obtained from Bus::add_member.
class Member {
 public:
  struct State;
  const std::string& name() const;
  /// Stop delivering to this member: queued messages are dropped (counted), later ones are not queued.
  void disable();
  bool disabled() const;
  /// Run `fn` on this member's strand (used to deliver request replies and deadlines where the requester lives).
  void post(std::function<void()> fn);

 private:
  friend class Bus;
  explicit Member(std::shared_ptr<State> s) : state_(std::move(s)) {}
  std::shared_ptr<State> state_;
};

class Bus {
 public:
  using Handler = std::function<void(const ErasedMessage&)>;
  using ServerHandler = std::function<std::shared_ptr<const void>(const ErasedMessage&)>;
  using ReplyCallback = std::function<void(std::shared_ptr<const void> reply, std::string error, bool timed_out)>;

  explicit Bus(BusOptions options = {});
  /// Stops the pool: pending deliveries are discarded, running handlers finish first.
  ~Bus();
  Bus(const Bus&) = delete;
  Bus& operator=(const Bus&) = delete;

  /// The topic `name` carrying `type`; created on first use. Throws std::invalid_argument if it exists with
  /// another type (naming both types).
  Topic topic(const std::string& name, const std::string& type);

  Member add_member(const std::string& name, FailureCallback on_failure = {});

  /// Subscribe a handler of `member` to `topic` with a bounded mailbox.
  void subscribe(const Member& member, const Topic& topic, std::size_t capacity, OverflowPolicy policy,
                 Handler handler);

  /// Serve requests published on `topic`: the handler's return value (or exception) is the reply.
  void serve(const Member& member, const Topic& topic, std::size_t capacity, ServerHandler handler);

  /// Publish `payload` (of the topic's type). The header's turn/user/parent are taken from `header`; sequence and
  /// timestamp are assigned here. Returns the sequence number.
  std::uint64_t publish(const Topic& topic, std::shared_ptr<const void> payload, MessageHeader header);

  /// Send a request on `topic` for `requester`. `on_reply` runs once on the requester's strand: with the first
  /// server's reply, or with an error if the deadline passes, the server throws or nobody serves the topic.
  void request(const Member& requester, const Topic& topic, std::shared_ptr<const void> payload, MessageHeader header,
               std::chrono::milliseconds deadline, ReplyCallback on_reply);

  /// Block until no message is queued or being handled and no request is outstanding, or until `timeout`.
  /// Returns true when idle. Do not call from a handler.
  bool wait_idle(std::chrono::milliseconds timeout = std::chrono::hours(24));

  /// Run `fn` on `member`'s strand after `delay`. With `busy`, counts as busy until it ran or was cancelled.
  /// Returns the cancel function (thread-safe, idempotent): `fn` then does not run. After shutdown nothing runs.
  std::function<void()> post_after(const Member& member, std::chrono::milliseconds delay, std::function<void()> fn,
                                   bool busy);

  /// Count as busy (for wait_idle) until the returned guard is destroyed. Thread-safe.
  std::shared_ptr<void> hold();

  /// Stop accepting work; wake blocked publishers. Idempotent. Handlers already running complete.
  void shutdown();

  std::vector<SubscriptionStats> stats() const;
  std::uint64_t total_dropped() const;
  std::uint64_t total_failed() const;

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace lal::runtime
