#include "lal/runtime/bus.hpp"

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <unordered_map>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define LAL_CPU_RELAX() _mm_pause()
#else
#define LAL_CPU_RELAX() std::this_thread::yield()
#endif

namespace asio = boost::asio;

namespace lal::runtime {

namespace {
constexpr std::size_t kDrainBatch = 64;   // messages taken from a mailbox under one lock
constexpr std::size_t kTurnLimit = 1024;  // messages handled per strand turn before yielding to other members
constexpr std::chrono::nanoseconds kLinger{3000};  // how long a drain waits for the next message before yielding

/// A mailbox lock. Its critical sections are a few dozen instructions, and on contention a futex sleep (what
/// std::mutex does) costs far more than waiting them out; after a short spin it yields the CPU.
class SpinLock {
 public:
  void lock() {
    for (int spins = 0; flag_.exchange(true, std::memory_order_acquire); ++spins) {
      while (flag_.load(std::memory_order_relaxed)) {
        if (++spins < 64)
          LAL_CPU_RELAX();
        else
          std::this_thread::yield();
      }
    }
  }
  bool try_lock() { return !flag_.exchange(true, std::memory_order_acquire); }
  void unlock() { flag_.store(false, std::memory_order_release); }

 private:
  std::atomic<bool> flag_{false};
};
}

struct ReplySlot;

struct Item {
  ErasedMessage msg;
  std::shared_ptr<ReplySlot> reply;  // set for requests delivered to a server
};

/// The bus's io_context, owned jointly by the bus and every member: a member's strand must not outlive the
/// context it was made from (its destructor unregisters from the context's strand service), and members can be
/// released after the bus (a host may hold a Topic or Member past Bus::~Bus). ~Bus destroys the handlers still
/// queued (`discard_pending`), which would otherwise hold members, and so the context, in a cycle.
class IoContext : public asio::io_context {
 public:
  void discard_pending() { shutdown(); }
};

struct Member::State {
  std::string name;
  std::shared_ptr<IoContext> io;  // before `strand`: destroyed after it
  asio::strand<asio::io_context::executor_type> strand;
  FailureCallback on_failure;
  std::atomic<bool> disabled{false};
  Bus::Impl* bus = nullptr;
  std::vector<std::weak_ptr<struct Subscription>> subscriptions;  // guarded by Bus::Impl::registry_mutex

  State(std::string n, std::shared_ptr<IoContext> context, FailureCallback f, Bus::Impl* b)
      : name(std::move(n)),
        io(std::move(context)),
        strand(asio::make_strand(*io)),
        on_failure(std::move(f)),
        bus(b) {}
};

struct ReplySlot {
  std::atomic<bool> done{false};
  Bus::ReplyCallback callback;
  std::shared_ptr<Member::State> requester;
  std::unique_ptr<asio::steady_timer> timer;  // touched only on the requester's strand
};

struct Subscription : std::enable_shared_from_this<Subscription> {
  std::shared_ptr<Member::State> member;
  std::string topic;
  std::size_t capacity = 1;
  OverflowPolicy policy = OverflowPolicy::block;
  Bus::Handler handler;              // plain subscriber
  Bus::ServerHandler server;         // request server
  Bus::Impl* bus = nullptr;

  SpinLock mutex;
  std::condition_variable_any not_full;  // publishers waiting under the `block` policy
  std::deque<Item> queue;
  std::vector<Item> batch;  // drain's working set, only touched on the member's strand
  bool scheduled = false;
  std::atomic<std::size_t> queued{0};  // queue.size(), readable without the lock (drain's linger)
  std::atomic<int> waiting{0};         // publishers blocked on not_full
  std::size_t high_water = 0;

  std::atomic<std::uint64_t> delivered{0}, dropped{0}, failed{0}, blocked{0};

  void enqueue(const ErasedMessage& msg, const std::shared_ptr<ReplySlot>& reply);
  void drain();
  bool linger();  ///< spin briefly; true when a message arrived meanwhile
  void deliver(Item& item);
  void drop_all();
};

struct Topic::State {
  std::string name;
  std::string type;
  std::mutex mutex;  // guards writes of `subscribers`
  std::shared_ptr<const std::vector<std::shared_ptr<Subscription>>> subscribers =
      std::make_shared<const std::vector<std::shared_ptr<Subscription>>>();

  std::shared_ptr<const std::vector<std::shared_ptr<Subscription>>> snapshot() const {
    return std::atomic_load(&subscribers);
  }
  void add(std::shared_ptr<Subscription> s) {
    std::lock_guard<std::mutex> lk(mutex);
    auto next = std::make_shared<std::vector<std::shared_ptr<Subscription>>>(*snapshot());
    next->push_back(std::move(s));
    std::atomic_store(&subscribers, std::shared_ptr<const std::vector<std::shared_ptr<Subscription>>>(next));
  }
};

struct Bus::Impl {
  BusOptions options;
  std::shared_ptr<IoContext> io_owner = std::make_shared<IoContext>();
  IoContext& io = *io_owner;
  asio::executor_work_guard<asio::io_context::executor_type> guard{io.get_executor()};
  std::vector<std::thread> workers;
  std::atomic<bool> stopping{false};
  std::atomic<std::uint64_t> sequence{0};

  // Deliveries queued or running, plus outstanding requests; wait_idle() waits for 0.
  std::atomic<std::int64_t> pending{0};
  std::mutex idle_mutex;
  std::condition_variable idle_cv;

  mutable std::mutex registry_mutex;
  std::unordered_map<std::string, std::shared_ptr<Topic::State>> topics;
  std::vector<std::shared_ptr<Member::State>> members;
  std::vector<std::shared_ptr<Subscription>> subscriptions;

  void add_pending(std::int64_t n) { pending.fetch_add(n, std::memory_order_relaxed); }
  void done_pending(std::int64_t n) {
    if (pending.fetch_sub(n, std::memory_order_acq_rel) == n) {
      std::lock_guard<std::mutex> lk(idle_mutex);
      idle_cv.notify_all();
    }
  }

  // Bumped after every drain we post; idle workers watch it instead of polling Asio's queue, whose mutex the
  // publisher needs too.
  std::atomic<std::uint64_t> posts{0};
  // Drains posted but not yet started. A drain lingers for its next message only while nobody else waits for a
  // worker: lingering must not delay other members.
  std::atomic<int> waiting_drains{0};
  // Drains running now. An idle worker does not spin while one runs: the running drain already lingers for the
  // next message, and a second spinning thread would only take the CPU from the publisher.
  std::atomic<int> running_drains{0};
  // At most one idle worker spins at a time; the others sleep. Spinning workers beyond one only steal the CPU
  // from publishers and handlers (this matters on small machines).
  std::atomic<int> spinners{0};

  void worker_loop() {
    // Spin briefly before sleeping: a sleeping thread costs a futex wake-up (several µs) per burst.
    while (!io.stopped()) {
      std::uint64_t seen = posts.load(std::memory_order_acquire);
      if (io.poll_one() > 0) continue;
      int expected = 0;
      const bool may_spin = running_drains.load(std::memory_order_relaxed) == 0 &&
                            spinners.compare_exchange_strong(expected, 1);
      const auto until = std::chrono::steady_clock::now() + (may_spin ? options.spin : std::chrono::microseconds(0));
      bool worked = false;
      while (!worked && std::chrono::steady_clock::now() < until) {
        for (int i = 0; i < 16; ++i) {
          LAL_CPU_RELAX();
          const std::uint64_t now = posts.load(std::memory_order_acquire);
          if (now != seen) {
            seen = now;
            worked = io.poll_one() > 0;
            if (worked) break;
          }
        }
      }
      if (may_spin) spinners.store(0);
      if (!worked) io.run_one_for(std::chrono::milliseconds(100));
    }
  }

  void complete(const std::shared_ptr<ReplySlot>& slot, std::shared_ptr<const void> reply, std::string error,
                bool timed_out) {
    auto requester = slot->requester;
    asio::post(requester->strand, [this, slot, reply = std::move(reply), error = std::move(error), timed_out]() {
      if (slot->done.exchange(true)) return;
      if (slot->timer) slot->timer->cancel();
      try {
        slot->callback(reply, error, timed_out);
      } catch (const std::exception& e) {
        if (slot->requester->on_failure) slot->requester->on_failure(slot->requester->name, "(reply)", e.what());
      }
      done_pending(1);
    });
  }
};

void Subscription::enqueue(const ErasedMessage& msg, const std::shared_ptr<ReplySlot>& reply) {
  if (member->disabled.load(std::memory_order_relaxed) || bus->stopping.load(std::memory_order_relaxed)) {
    dropped.fetch_add(1, std::memory_order_relaxed);
    if (reply) bus->complete(reply, nullptr, "module '" + member->name + "' is disabled or stopping", false);
    return;
  }
  std::unique_lock<SpinLock> lk(mutex);
  std::int64_t discarded = 0;
  if (policy == OverflowPolicy::keep_latest) {
    discarded = static_cast<std::int64_t>(queue.size());
    queue.clear();
  } else if (queue.size() >= capacity) {
    switch (policy) {
      case OverflowPolicy::block:
        // A handler publishing to its own member's mailbox cannot wait for itself: let the queue grow instead.
        if (!member->strand.running_in_this_thread()) {
          blocked.fetch_add(1, std::memory_order_relaxed);
          waiting.fetch_add(1, std::memory_order_acq_rel);
          not_full.wait(lk, [&] {
            return queue.size() < capacity || bus->stopping.load() || member->disabled.load();
          });
          waiting.fetch_sub(1, std::memory_order_acq_rel);
          if (bus->stopping.load() || member->disabled.load()) {
            dropped.fetch_add(1, std::memory_order_relaxed);
            return;
          }
        }
        break;
      case OverflowPolicy::drop_oldest:
        if (queue.front().reply)
          bus->complete(queue.front().reply, nullptr, "request dropped: mailbox of '" + member->name + "' full",
                        false);
        queue.pop_front();
        discarded = 1;
        break;
      case OverflowPolicy::drop_newest:
        dropped.fetch_add(1, std::memory_order_relaxed);
        if (reply)
          bus->complete(reply, nullptr, "request dropped: mailbox of '" + member->name + "' full", false);
        return;
      case OverflowPolicy::keep_latest:
        break;
    }
  }
  if (discarded) {
    dropped.fetch_add(static_cast<std::uint64_t>(discarded), std::memory_order_relaxed);
    bus->done_pending(discarded);
  }
  queue.push_back(Item{msg, reply});
  queued.store(queue.size(), std::memory_order_relaxed);
  bus->add_pending(1);
  if (queue.size() > high_water) high_water = queue.size();
  if (!scheduled) {
    scheduled = true;
    lk.unlock();
    bus->waiting_drains.fetch_add(1, std::memory_order_relaxed);
    asio::post(member->strand, [self = shared_from_this()] { self->drain(); });
    bus->posts.fetch_add(1, std::memory_order_release);
  }
}

void Subscription::drain() {
  // One strand turn handles up to kTurnLimit messages, in batches taken under one lock each: the publisher and this
  // consumer meet on the lock once per batch, not once per message. When the queue runs dry the drain lingers for
  // a moment before giving the strand up: in a steady stream the next message usually arrives within that time,
  // and catching it here saves the strand post (and often the thread wake-up) that a new drain would cost.
  // `batch` is touched only here, on the member's strand.
  bus->waiting_drains.fetch_sub(1, std::memory_order_relaxed);
  bus->running_drains.fetch_add(1, std::memory_order_relaxed);
  struct Running {
    Bus::Impl* bus;
    ~Running() { bus->running_drains.fetch_sub(1, std::memory_order_relaxed); }
  } running{bus};
  std::size_t handled = 0;
  for (;;) {
    {
      std::lock_guard<SpinLock> lk(mutex);
      const std::size_t n = std::min<std::size_t>(queue.size(), kDrainBatch);
      for (std::size_t i = 0; i < n; ++i) {
        batch.push_back(std::move(queue.front()));
        queue.pop_front();
      }
      queued.store(queue.size(), std::memory_order_relaxed);
    }
    if (batch.empty()) {
      if (handled < kTurnLimit && linger()) continue;
      std::lock_guard<SpinLock> lk(mutex);
      if (!queue.empty()) continue;  // arrived just now: the publisher saw scheduled == true and posted nothing
      scheduled = false;
      return;
    }
    if (policy == OverflowPolicy::block && waiting.load(std::memory_order_acquire) > 0) not_full.notify_all();
    const auto count = static_cast<std::int64_t>(batch.size());
    for (Item& item : batch) deliver(item);
    batch.clear();
    bus->done_pending(count);
    handled += static_cast<std::size_t>(count);
    if (handled >= kTurnLimit) break;
  }
  // Turn used up: go to the back of the strand so other work on this member (and the pool) gets a turn.
  bus->waiting_drains.fetch_add(1, std::memory_order_relaxed);
  asio::post(member->strand, [self = shared_from_this()] { self->drain(); });
  bus->posts.fetch_add(1, std::memory_order_release);
}

bool Subscription::linger() {
  const auto until = std::chrono::steady_clock::now() + kLinger;
  do {
    for (int i = 0; i < 8; ++i) {
      LAL_CPU_RELAX();
      if (queued.load(std::memory_order_relaxed) > 0) return true;
    }
    if (bus->waiting_drains.load(std::memory_order_relaxed) > 0) return false;  // others need this worker
  } while (std::chrono::steady_clock::now() < until);
  return false;
}

void Subscription::deliver(Item& item) {
  if (member->disabled.load(std::memory_order_relaxed)) {
    dropped.fetch_add(1, std::memory_order_relaxed);
    if (item.reply) bus->complete(item.reply, nullptr, "module '" + member->name + "' is disabled", false);
    return;
  }
  try {
    if (item.reply && server) {
      bus->complete(item.reply, server(item.msg), {}, false);
    } else if (handler) {
      handler(item.msg);
    }
  } catch (const std::exception& e) {
    failed.fetch_add(1, std::memory_order_relaxed);
    if (item.reply) bus->complete(item.reply, nullptr, "module '" + member->name + "' failed: " + e.what(), false);
    if (member->on_failure) member->on_failure(member->name, topic, e.what());
  } catch (...) {
    failed.fetch_add(1, std::memory_order_relaxed);
    if (item.reply) bus->complete(item.reply, nullptr, "module '" + member->name + "' failed", false);
    if (member->on_failure) member->on_failure(member->name, topic, "unknown exception");
  }
  delivered.fetch_add(1, std::memory_order_relaxed);
}

void Subscription::drop_all() {
  std::deque<Item> gone;
  {
    std::lock_guard<SpinLock> lk(mutex);
    gone.swap(queue);
    queued.store(0, std::memory_order_relaxed);
  }
  not_full.notify_all();
  for (auto& item : gone)
    if (item.reply) bus->complete(item.reply, nullptr, "module '" + member->name + "' is disabled", false);
  if (!gone.empty()) {
    dropped.fetch_add(gone.size(), std::memory_order_relaxed);
    bus->done_pending(static_cast<std::int64_t>(gone.size()));
  }
}

const std::string& Topic::name() const { return state_->name; }
const std::string& Topic::type() const { return state_->type; }

const std::string& Member::name() const { return state_->name; }
bool Member::disabled() const { return state_->disabled.load(); }
void Member::disable() {
  state_->disabled.store(true);
  std::vector<std::shared_ptr<Subscription>> subs;
  {
    std::lock_guard<std::mutex> lk(state_->bus->registry_mutex);
    for (auto& w : state_->subscriptions)
      if (auto s = w.lock()) subs.push_back(std::move(s));
  }
  for (auto& s : subs) s->drop_all();
}
void Member::post(std::function<void()> fn) {
  auto* bus = state_->bus;
  bus->add_pending(1);
  asio::post(state_->strand, [bus, fn = std::move(fn)] {
    try {
      fn();
    } catch (...) {
    }
    bus->done_pending(1);
  });
}

Bus::Bus(BusOptions options) : impl_(std::make_shared<Impl>()) {
  impl_->options = options;
  const std::size_t n = options.threads == 0 ? 1 : options.threads;
  for (std::size_t i = 0; i < n; ++i) impl_->workers.emplace_back([impl = impl_.get()] { impl->worker_loop(); });
}

Bus::~Bus() {
  shutdown();
  for (auto& t : impl_->workers)
    if (t.joinable()) t.join();
  // Nothing runs any more. Destroy the deliveries and replies still queued, then every handler: they may refer to
  // modules that are destroyed after the bus, and whoever still holds a Topic or Member must not keep them alive.
  impl_->io.discard_pending();
  std::vector<std::shared_ptr<Subscription>> subs;
  std::vector<std::shared_ptr<Topic::State>> topics;
  {
    std::lock_guard<std::mutex> lk(impl_->registry_mutex);
    subs.swap(impl_->subscriptions);
    for (auto& [name, topic] : impl_->topics) topics.push_back(topic);
    impl_->topics.clear();
    impl_->members.clear();
  }
  for (auto& t : topics) {
    std::lock_guard<std::mutex> lk(t->mutex);
    std::atomic_store(&t->subscribers, std::make_shared<const std::vector<std::shared_ptr<Subscription>>>());
  }
  for (auto& s : subs) {
    std::deque<Item> gone;
    {
      std::lock_guard<SpinLock> lk(s->mutex);
      gone.swap(s->queue);
    }
    s->handler = nullptr;
    s->server = nullptr;
  }
}

void Bus::shutdown() {
  if (impl_->stopping.exchange(true)) return;
  std::vector<std::shared_ptr<Subscription>> subs;
  {
    std::lock_guard<std::mutex> lk(impl_->registry_mutex);
    subs = impl_->subscriptions;
  }
  for (auto& s : subs) {
    std::lock_guard<SpinLock> lk(s->mutex);
    s->not_full.notify_all();
  }
  impl_->guard.reset();
  impl_->io.stop();
  std::lock_guard<std::mutex> lk(impl_->idle_mutex);
  impl_->idle_cv.notify_all();
}

Topic Bus::topic(const std::string& name, const std::string& type) {
  std::lock_guard<std::mutex> lk(impl_->registry_mutex);
  auto it = impl_->topics.find(name);
  if (it != impl_->topics.end()) {
    if (it->second->type != type)
      throw std::invalid_argument("topic '" + name + "' carries " + it->second->type + ", not " + type);
    return Topic(it->second);
  }
  auto state = std::make_shared<Topic::State>();
  state->name = name;
  state->type = type;
  impl_->topics.emplace(name, state);
  return Topic(state);
}

Member Bus::add_member(const std::string& name, FailureCallback on_failure) {
  auto state = std::make_shared<Member::State>(name, impl_->io_owner, std::move(on_failure), impl_.get());
  std::lock_guard<std::mutex> lk(impl_->registry_mutex);
  impl_->members.push_back(state);
  return Member(state);
}

namespace {
std::shared_ptr<Subscription> make_subscription(Bus::Impl& bus, const std::shared_ptr<Member::State>& mstate,
                                                const Topic& topic, std::size_t capacity, OverflowPolicy policy) {
  auto sub = std::make_shared<Subscription>();
  sub->member = mstate;
  sub->topic = topic.name();
  sub->capacity = capacity == 0 ? 1 : capacity;
  sub->policy = policy;
  sub->bus = &bus;
  return sub;
}
}  // namespace

void Bus::subscribe(const Member& member, const Topic& topic, std::size_t capacity, OverflowPolicy policy,
                    Handler handler) {
  auto sub = make_subscription(*impl_, member.state_, topic, capacity, policy);
  sub->handler = std::move(handler);
  {
    std::lock_guard<std::mutex> lk(impl_->registry_mutex);
    impl_->subscriptions.push_back(sub);
    member.state_->subscriptions.push_back(sub);
  }
  topic.state_->add(std::move(sub));
}

void Bus::serve(const Member& member, const Topic& topic, std::size_t capacity, ServerHandler handler) {
  auto sub = make_subscription(*impl_, member.state_, topic, capacity, OverflowPolicy::block);
  sub->server = std::move(handler);
  {
    std::lock_guard<std::mutex> lk(impl_->registry_mutex);
    impl_->subscriptions.push_back(sub);
    member.state_->subscriptions.push_back(sub);
  }
  topic.state_->add(std::move(sub));
}

std::uint64_t Bus::publish(const Topic& topic, std::shared_ptr<const void> payload, MessageHeader header) {
  if (impl_->stopping.load(std::memory_order_relaxed)) return 0;
  ErasedMessage msg;
  msg.header = std::move(header);
  msg.header.sequence = impl_->sequence.fetch_add(1, std::memory_order_relaxed) + 1;
  msg.header.timestamp_ns = monotonic_ns();
  msg.type = topic.state_->type.c_str();
  msg.payload = std::move(payload);
  auto subs = topic.state_->snapshot();
  for (const auto& s : *subs) s->enqueue(msg, nullptr);
  return msg.header.sequence;
}

void Bus::request(const Member& requester, const Topic& topic, std::shared_ptr<const void> payload,
                  MessageHeader header, std::chrono::milliseconds deadline, ReplyCallback on_reply) {
  auto slot = std::make_shared<ReplySlot>();
  slot->callback = std::move(on_reply);
  slot->requester = requester.state_;
  impl_->add_pending(1);  // released when the slot completes (reply, error or deadline)
  if (impl_->stopping.load()) {
    impl_->complete(slot, nullptr, "bus is shutting down", false);
    return;
  }
  auto subs = topic.state_->snapshot();
  bool served = false;
  for (const auto& s : *subs) served = served || static_cast<bool>(s->server);
  if (!served) {
    impl_->complete(slot, nullptr, "nobody serves topic '" + topic.name() + "'", false);
    return;
  }
  ErasedMessage msg;
  msg.header = std::move(header);
  msg.header.sequence = impl_->sequence.fetch_add(1, std::memory_order_relaxed) + 1;
  msg.header.timestamp_ns = monotonic_ns();
  msg.type = topic.state_->type.c_str();
  msg.payload = std::move(payload);
  // Arm the deadline on the requester's strand (timers are not thread-safe), then deliver.
  Impl* impl = impl_.get();
  asio::post(requester.state_->strand, [impl, slot, subs, msg, deadline, topic_name = topic.name()] {
    slot->timer = std::make_unique<asio::steady_timer>(slot->requester->strand, deadline);
    slot->timer->async_wait([impl, slot, deadline, topic_name](const boost::system::error_code& ec) {
      if (ec) return;  // cancelled: the reply came first
      if (slot->done.exchange(true)) return;
      try {
        slot->callback(nullptr,
                       "deadline of " + std::to_string(deadline.count()) + " ms exceeded waiting for a reply on '" +
                           topic_name + "'",
                       true);
      } catch (const std::exception& e) {
        if (slot->requester->on_failure) slot->requester->on_failure(slot->requester->name, topic_name, e.what());
      }
      impl->done_pending(1);
    });
    for (const auto& s : *subs) s->enqueue(msg, s->server ? slot : nullptr);
  });
}

std::function<void()> Bus::post_after(const Member& member, std::chrono::milliseconds delay, std::function<void()> fn,
                                      bool busy) {
  struct Pending {
    std::atomic<bool> finished{false};  // ran or cancelled: whoever sets it releases the busy count, once
    std::function<void()> fn;
    std::shared_ptr<void> busy;
  };
  auto pending = std::make_shared<Pending>();
  pending->fn = std::move(fn);
  if (busy) pending->busy = hold();
  auto state = member.state_;
  auto timer = std::make_shared<asio::steady_timer>(state->strand, delay);
  timer->async_wait([pending, timer](const boost::system::error_code& ec) {
    if (ec || pending->finished.exchange(true)) return;  // cancelled: the function is freed with the timer
    auto f = std::move(pending->fn);
    auto busy = std::move(pending->busy);
    if (f) f();  // busy until it ran (it may schedule the next timer: never idle in between)
  });
  // The cancel function holds the pending callback weakly: only the timer's handler owns it. A callback that owns
  // its own Timer (Context::every: state -> Timer -> this function -> callback -> state) would otherwise be a cycle
  // that outlives the bus (found by LeakSanitizer).
  return [weak = std::weak_ptr<Pending>(pending)] {
    if (const auto pending = weak.lock())
      if (!pending->finished.exchange(true)) pending->busy.reset();
  };
}

std::shared_ptr<void> Bus::hold() {
  impl_->add_pending(1);
  std::weak_ptr<Impl> weak = impl_;
  return std::shared_ptr<void>(nullptr, [weak](void*) {
    if (auto impl = weak.lock()) impl->done_pending(1);
  });
}

bool Bus::wait_idle(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lk(impl_->idle_mutex);
  return impl_->idle_cv.wait_for(lk, timeout, [&] {
    return impl_->pending.load(std::memory_order_acquire) == 0 || impl_->stopping.load();
  }) && impl_->pending.load() == 0;
}

std::vector<SubscriptionStats> Bus::stats() const {
  std::vector<SubscriptionStats> out;
  std::lock_guard<std::mutex> lk(impl_->registry_mutex);
  for (const auto& s : impl_->subscriptions) {
    SubscriptionStats st;
    st.member = s->member->name;
    st.topic = s->topic;
    st.delivered = s->delivered.load();
    st.dropped = s->dropped.load();
    st.failed = s->failed.load();
    st.blocked = s->blocked.load();
    std::lock_guard<SpinLock> qlk(s->mutex);
    st.queued = s->queue.size();
    st.high_water = s->high_water;
    out.push_back(std::move(st));
  }
  return out;
}

std::uint64_t Bus::total_dropped() const {
  std::uint64_t n = 0;
  for (const auto& s : stats()) n += s.dropped;
  return n;
}

std::uint64_t Bus::total_failed() const {
  std::uint64_t n = 0;
  for (const auto& s : stats()) n += s.failed;
  return n;
}

}  // namespace lal::runtime
