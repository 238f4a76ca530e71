#include "lal/runtime/runtime.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <future>
#include <iostream>
#include <optional>
#include <set>
#include <stdexcept>
#include <thread>

#include "lal/messages.hpp"

namespace lal::runtime {

namespace {

/// A turn's (or a scope's) cancellation flag. A scope's state points at its turn's, which points at the global one.
struct TurnCancellation : CancellationToken::State {
  std::atomic<bool> flag{false};
  const std::atomic<bool>* everything = nullptr;
  std::shared_ptr<TurnCancellation> turn;  // set for scopes
  // Callbacks (Context::on_cancel) run once, when this turn or scope (or, for a scope, its turn) is cancelled. Each
  // posts to its module's strand.
  std::mutex mutex;
  std::vector<std::function<void()>> callbacks;
  std::vector<std::weak_ptr<TurnCancellation>> scopes;  // of a turn

  bool cancelled() const override {
    return flag.load() || everything->load() || (turn && turn->cancelled());
  }
  void cancel() {
    flag.store(true);
    std::vector<std::function<void()>> run;
    std::vector<std::weak_ptr<TurnCancellation>> children;
    {
      std::lock_guard<std::mutex> lk(mutex);
      run.swap(callbacks);
      children = scopes;
    }
    for (auto& f : run) f();
    for (auto& w : children)
      if (auto c = w.lock()) c->fire();
  }
  /// Run the callbacks (a parent turn was cancelled).
  void fire() {
    std::vector<std::function<void()>> run;
    {
      std::lock_guard<std::mutex> lk(mutex);
      run.swap(callbacks);
    }
    for (auto& f : run) f();
  }
  void add_callback(std::function<void()> f) {
    {
      std::lock_guard<std::mutex> lk(mutex);
      if (!cancelled()) {
        callbacks.push_back(std::move(f));
        return;
      }
    }
    f();
  }
};

spdlog::level::level_enum to_spdlog(LogLevel l) {
  switch (l) {
    case LogLevel::trace: return spdlog::level::trace;
    case LogLevel::debug: return spdlog::level::debug;
    case LogLevel::info: return spdlog::level::info;
    case LogLevel::warn: return spdlog::level::warn;
    case LogLevel::error: return spdlog::level::err;
  }
  return spdlog::level::info;
}

}  // namespace

class ModuleHost;

struct Runtime::Impl {
  PipelineSpec spec;  // first: holds the plugin libraries, destroyed last
  RuntimeOptions options;
  std::unique_ptr<Bus> bus;
  Topic input_topic;

  struct Service {
    std::vector<std::string> types;  // the service type name and the older names it also satisfies
    std::shared_ptr<void> object;
  };
  std::mutex services_mutex;
  std::map<std::string, Service> services;
  ResourceSet resources;

  std::mutex cancel_mutex;
  std::map<std::pair<TurnId, std::string>, std::shared_ptr<TurnCancellation>> turns;
  std::atomic<bool> cancel_everything{false};
  std::atomic<TurnId> next_turn{0};

  std::mutex output_mutex;
  mutable std::mutex failure_mutex;
  std::string failure;
  std::atomic<bool> failed{false};

  std::vector<std::unique_ptr<ModuleHost>> hosts;
  void turn_ended(TurnId turn);
  bool started = false;
  bool stopped = false;

  Impl(PipelineSpec s, RuntimeOptions o)
      : spec(std::move(s)),
        options(std::move(o)),
        bus(std::make_unique<Bus>(options.bus)),
        input_topic(bus->topic(spec.input_topic, Percept::kTypeName)) {
    if (!options.output)
      options.output = [](std::string_view text) {
        std::cout.write(text.data(), static_cast<std::streamsize>(text.size()));
        std::cout.flush();
      };
  }

  std::shared_ptr<TurnCancellation> turn_state(TurnId turn, const std::string& scope = {}) {
    std::lock_guard<std::mutex> lk(cancel_mutex);
    return turn_state_locked(turn, scope);
  }
  std::shared_ptr<TurnCancellation> turn_state_locked(TurnId turn, const std::string& scope) {
    const auto key = std::make_pair(turn, scope);
    if (auto it = turns.find(key); it != turns.end()) return it->second;
    auto s = std::make_shared<TurnCancellation>();
    s->everything = &cancel_everything;
    if (!scope.empty()) {
      s->turn = turn_state_locked(turn, {});
      std::lock_guard<std::mutex> lk(s->turn->mutex);
      s->turn->scopes.push_back(s);
    }
    turns.emplace(key, s);
    // Keep the table bounded: old turns are finished; their tokens stay valid through shared ownership.
    while (turns.size() > 8192 && turns.begin()->first.first < turn) turns.erase(turns.begin());
    return s;
  }

  void set_failure(const std::string& what) {
    std::lock_guard<std::mutex> lk(failure_mutex);
    if (!failed.exchange(true)) failure = what;
    cancel_everything.store(true);
  }
};

/// What outlives a ModuleHost: callbacks posted from other threads (a model's) or timers check `alive` and are
/// dropped once the module is stopping.
struct Lifeline {
  std::mutex mutex;
  bool alive = true;
  std::optional<Member> member;
  std::function<void(const std::string&)> on_failure;  // valid while alive

  void post(std::function<void()> fn, const std::shared_ptr<Lifeline>& self) {
    std::lock_guard<std::mutex> lk(mutex);
    if (!alive) return;
    member->post([self, fn = std::move(fn)] { self->run(fn); });
  }
  /// On the strand: run `fn` unless the module is stopping; an exception goes to the failure policy.
  void run(const std::function<void()>& fn) {
    {
      std::lock_guard<std::mutex> lk(mutex);
      if (!alive) return;
    }
    try {
      fn();
    } catch (const std::exception& e) {
      on_failure(e.what());
    } catch (...) {
      on_failure("unknown exception");
    }
  }
};

struct BusTimer : Timer::State {
  std::function<void()> cancel_fn;
  void cancel() override { cancel_fn(); }
};

class ModuleHost final : public Context {
 public:
  ModuleHost(Runtime::Impl& rt, const ModuleSpec& spec) : rt_(rt), spec_(spec), config_(spec.id, spec.config) {
    member_.emplace(rt_.bus->add_member(spec.id, [this](const std::string&, const std::string& topic,
                                                       const std::string& what) { on_failure(topic, what); }));
    lifeline_ = std::make_shared<Lifeline>();
    lifeline_->member = *member_;
    lifeline_->on_failure = [this](const std::string& what) { on_failure("(callback)", what); };
    for (const auto& w : spec.wires) {
      const PortSpec* p = spec.loaded->descriptor->find_port(w.port);
      if (p) topics_.emplace(w.port, rt_.bus->topic(w.topic, p->type));
    }
  }

  void start() {
    instance_ = std::make_unique<ModuleInstance>(spec_.loaded);
    instance_->module().start(*this);
    started_ = true;
  }

  void stop() {
    if (!started_) return;
    started_ = false;
    {
      std::lock_guard<std::mutex> lk(lifeline_->mutex);
      lifeline_->alive = false;  // posts, timers and model callbacks from now on are dropped
    }
    // No new deliveries, then wait for a running handler to finish: the barrier runs on the module's strand.
    member_->disable();
    auto done = std::make_shared<std::promise<void>>();
    auto fut = done->get_future();
    member_->post([done] { done->set_value(); });
    if (fut.wait_for(std::chrono::seconds(30)) != std::future_status::ready)
      spdlog::warn("module '{}': a handler is still running 30 s after stop was requested", spec_.id);
    try {
      instance_->module().stop();
    } catch (const std::exception& e) {
      spdlog::error("module '{}': stop() threw: {}", spec_.id, e.what());
    }
  }

  /// Not counted as busy: frees the turn's state after the linger (Runtime::Impl::turn_ended).
  void free_turn_later(TurnId turn, std::chrono::milliseconds linger) {
    rt_.bus->post_after(
        *member_, linger, [this, life = lifeline_, turn] { life->run([this, turn] { free_turn(turn); }); }, false);
  }

  /// busy_guard()s of this module still held (Runtime::stop waits for them).
  int outstanding() const { return outstanding_->load(); }

  ModuleStats stats() {
    std::lock_guard<std::mutex> lk(turns_mutex_);
    return ModuleStats{spec_.id, failures_.load(), member_->disabled(), turns_.size()};
  }

  const std::string& module_id() const override { return spec_.id; }
  const Config& config() const override { return config_; }
  void log(LogLevel level, std::string_view text) override {
    spdlog::log(to_spdlog(level), "[{}] {}", spec_.id, text);
  }
  void write_output(std::string_view text) override {
    std::lock_guard<std::mutex> lk(rt_.output_mutex);
    rt_.options.output(text);
  }

 protected:
  bool subscribe_erased(std::string_view port, const char* type, ErasedHandler handler) override {
    const PortSpec& p = declared(port, PortDirection::input, type);
    const WireSpec* w = spec_.wire(p.name);
    if (!w) return unwired(p);
    {
      std::lock_guard<std::mutex> lk(turns_mutex_);
      subscribed_.insert(p.name);
    }
    rt_.bus->subscribe(*member_, topics_.at(p.name), w->capacity.value_or(p.capacity), w->overflow.value_or(p.overflow),
                       [this, name = p.name, h = std::move(handler)](const ErasedMessage& m) {
                         h(m);
                         if (m.header.turn) arrived(name, m);
                       });
    return true;
  }

  std::uint64_t publish_erased(std::string_view port, const char* type, std::shared_ptr<const void> payload,
                               const MessageHeader* cause, bool new_turn) override {
    const PortSpec& p = declared(port, PortDirection::output, type);
    auto it = topics_.find(p.name);
    const MessageHeader h = header_from(cause, new_turn);
    if (std::strcmp(type, TurnDone::kTypeName) == 0 && h.turn) rt_.turn_ended(h.turn);
    if (it == topics_.end()) return 0;
    return rt_.bus->publish(it->second, std::move(payload), h);
  }

  void serve_erased(std::string_view port, const char* type, const char* reply_type, ErasedServer handler) override {
    const PortSpec& p = declared(port, PortDirection::server, type);
    check_reply_type(p, reply_type);
    const WireSpec* w = spec_.wire(p.name);
    if (!w) {
      unwired(p);
      return;
    }
    rt_.bus->serve(*member_, topics_.at(p.name), w->capacity.value_or(p.capacity), std::move(handler));
  }

  void request_erased(std::string_view port, const char* type, const char* reply_type,
                      std::shared_ptr<const void> payload, std::chrono::milliseconds deadline,
                      ErasedReplyHandler on_reply, const MessageHeader* cause) override {
    const PortSpec& p = declared(port, PortDirection::client, type);
    check_reply_type(p, reply_type);
    auto it = topics_.find(p.name);
    if (it == topics_.end()) {
      member_->post([cb = std::move(on_reply), name = p.name] {
        cb(nullptr, "client port '" + name + "' is not wired", false);
      });
      return;
    }
    rt_.bus->request(*member_, it->second, std::move(payload), header_from(cause, false), deadline,
                     std::move(on_reply));
  }

  std::shared_ptr<void> busy_guard() override {
    // Counted per module too: Runtime::stop waits for these (a model generation submitted by this module holds one
    // until its on_done), so that nothing still holds this plugin's callbacks when its library is unloaded.
    outstanding_->fetch_add(1);
    return std::shared_ptr<void>(nullptr, [hold = rt_.bus->hold(), count = outstanding_](void*) mutable {
      hold.reset();  // first: once the count is 0, Runtime::stop may destroy the bus
      count->fetch_sub(1);
    });
  }

  void post(std::function<void()> fn) override { lifeline_->post(std::move(fn), lifeline_); }

  Executor executor() override {
    return [life = lifeline_](std::function<void()> fn) { life->post(std::move(fn), life); };
  }

  Timer post_after(std::chrono::milliseconds delay, std::function<void()> fn) override {
    auto t = std::make_shared<BusTimer>();
    t->cancel_fn = rt_.bus->post_after(
        *member_, delay, [life = lifeline_, fn = std::move(fn)] { life->run(fn); }, true);
    return Timer(t);
  }

  std::shared_ptr<void> turn_state_erased(TurnId turn, const char* key,
                                          std::function<std::shared_ptr<void>()> make) override {
    if (turn == 0) return nullptr;
    std::lock_guard<std::mutex> lk(turns_mutex_);
    TurnSlot* slot = make ? &slot_locked(turn) : find_slot_locked(turn);
    if (!slot) return nullptr;
    auto& state = slot->states[key];
    if (!state && make) state = make();
    return state;
  }

  void await_erased(std::string_view port, const char* type, TurnId turn, std::chrono::milliseconds deadline,
                    ErasedHandler on_value, std::function<void()> on_timeout) override {
    const PortSpec& p = declared(port, PortDirection::input, type);
    if (!spec_.wire(p.name)) {
      unwired(p);  // throws for a required port
      post(std::move(on_timeout));
      return;
    }
    std::lock_guard<std::mutex> lk(turns_mutex_);
    if (!subscribed_.count(p.name))
      throw std::logic_error("module '" + spec_.id + "' awaits port '" + p.name +
                             "' without subscribing to it: call ctx.on or ctx.keep for it in start()");
    TurnSlot& slot = slot_locked(turn);
    if (auto it = slot.latest.find(p.name); it != slot.latest.end()) {
      post([h = std::move(on_value), m = it->second] { h(m); });
      return;
    }
    const std::uint64_t id = ++next_waiter_;
    Timer timeout = post_after(deadline, [this, turn, id, on_timeout = std::move(on_timeout)] {
      {
        std::lock_guard<std::mutex> lk(turns_mutex_);
        TurnSlot* s = find_slot_locked(turn);
        if (!s || !s->waiters.erase(id)) return;  // the value came first
      }
      on_timeout();
    });
    slot.waiters.emplace(id, Waiter{p.name, std::move(on_value), timeout});
  }

  void on_cancel_erased(TurnId turn, const std::string& scope, std::function<void()> fn) override {
    rt_.turn_state(turn, scope)->add_callback([life = lifeline_, fn = std::move(fn)] { life->post(fn, life); });
  }

  CancellationToken cancellation_scoped(TurnId turn, const std::string& scope) override {
    return CancellationToken(rt_.turn_state(turn, scope));
  }
  void cancel_scoped(TurnId turn, const std::string& scope) override {
    rt_.turn_state(turn, scope)->cancel();
    if (scope.empty()) rt_.turn_ended(turn);
  }

  std::shared_ptr<void> find_service(const std::string& name, const char* service_type) override {
    std::lock_guard<std::mutex> lk(rt_.services_mutex);
    auto it = rt_.services.find(name);
    if (it == rt_.services.end()) return nullptr;
    const auto& types = it->second.types;
    if (std::find(types.begin(), types.end(), service_type) == types.end())
      throw std::logic_error("module '" + spec_.id + "' asked for service '" + name + "' as " + service_type +
                             ", but it is a " + types.front());
    return it->second.object;
  }

  void register_service(const std::string& name, const char* service_type, std::shared_ptr<void> svc) override {
    std::lock_guard<std::mutex> lk(rt_.services_mutex);
    rt_.services[name] = {{service_type}, std::move(svc)};
  }

 private:
  const PortSpec& declared(std::string_view port, PortDirection dir, const char* type) const {
    const PortSpec* p = spec_.loaded->descriptor->find_port(std::string(port));
    if (!p || p->direction != dir)
      throw std::logic_error("module '" + spec_.id + "' uses undeclared " + to_string(dir) + " port '" +
                             std::string(port) + "' (declare it in the plugin descriptor)");
    if (p->type != type)
      throw std::logic_error("module '" + spec_.id + "' uses port '" + p->name + "' with type " + type +
                             " but declared " + p->type);
    return *p;
  }
  void check_reply_type(const PortSpec& p, const char* reply_type) const {
    if (p.reply_type != reply_type)
      throw std::logic_error("module '" + spec_.id + "' uses port '" + p.name + "' with reply type " + reply_type +
                             " but declared " + p.reply_type);
  }
  bool unwired(const PortSpec& p) const {
    if (p.optional) return false;
    throw std::logic_error("module '" + spec_.id + "': port '" + p.name + "' is not wired");
  }
  MessageHeader header_from(const MessageHeader* cause, bool new_turn) const {
    MessageHeader h;
    if (cause) {
      h.turn = cause->turn;
      h.user = cause->user;
      h.parent = new_turn ? 0 : cause->sequence;
    }
    return h;
  }
  void on_failure(const std::string& topic, const std::string& what) {
    failures_.fetch_add(1);
    spdlog::error("module '{}' ({}) failed handling a message on '{}': {} [failure_policy: {}]", spec_.id,
                  spec_.plugin, topic, what, to_string(spec_.failure_policy));
    switch (spec_.failure_policy) {
      case FailurePolicy::isolate: break;
      case FailurePolicy::disable: member_->disable(); break;
      case FailurePolicy::fail: rt_.set_failure("module '" + spec_.id + "' failed: " + what); break;
    }
  }

  struct Waiter {
    std::string port;
    ErasedHandler on_value;
    Timer timeout;
  };
  struct TurnSlot {
    std::map<std::string, std::shared_ptr<void>> states;  // turn_state<T>, by T
    std::map<std::string, ErasedMessage> latest;          // by input port: for await
    std::map<std::uint64_t, Waiter> waiters;
    std::chrono::steady_clock::time_point touched;
  };

  // Slots of turns that never end (pipelines without a concluding module) go after this long without use.
  static constexpr std::chrono::minutes kTurnExpiry{10};

  TurnSlot* find_slot_locked(TurnId turn) {
    auto it = turns_.find(turn);
    return it == turns_.end() ? nullptr : &it->second;
  }
  TurnSlot& slot_locked(TurnId turn) {
    const auto now = std::chrono::steady_clock::now();
    if (now - last_sweep_ > std::chrono::seconds(10)) {
      last_sweep_ = now;
      for (auto it = turns_.begin(); it != turns_.end();)
        it = now - it->second.touched > kTurnExpiry && it->second.waiters.empty() ? turns_.erase(it) : std::next(it);
    }
    TurnSlot& s = turns_[turn];
    s.touched = now;
    return s;
  }

  /// On the strand, after the port's handler: keep the message for await, answer who waits for it.
  void arrived(const std::string& port, const ErasedMessage& m) {
    std::vector<Waiter> ready;
    {
      std::lock_guard<std::mutex> lk(turns_mutex_);
      TurnSlot& slot = slot_locked(m.header.turn);
      slot.latest[port] = m;
      for (auto it = slot.waiters.begin(); it != slot.waiters.end();) {
        if (it->second.port == port) {
          ready.push_back(std::move(it->second));
          it = slot.waiters.erase(it);
        } else {
          ++it;
        }
      }
    }
    for (auto& w : ready) {
      w.timeout.cancel();
      w.on_value(m);
    }
  }

  void free_turn(TurnId turn) {
    std::map<std::uint64_t, Waiter> waiters;
    {
      std::lock_guard<std::mutex> lk(turns_mutex_);
      auto it = turns_.find(turn);
      if (it == turns_.end()) return;
      waiters = std::move(it->second.waiters);  // their timeouts still fire and find nothing: cancel them now
      turns_.erase(it);
    }
    for (auto& [id, w] : waiters) w.timeout.cancel();
  }

  Runtime::Impl& rt_;
  const ModuleSpec& spec_;
  Config config_;
  std::optional<Member> member_;
  std::shared_ptr<Lifeline> lifeline_;
  std::shared_ptr<std::atomic<int>> outstanding_ = std::make_shared<std::atomic<int>>(0);
  std::mutex turns_mutex_;
  std::map<TurnId, TurnSlot> turns_;
  std::set<std::string> subscribed_;
  std::uint64_t next_waiter_ = 0;
  std::chrono::steady_clock::time_point last_sweep_{};
  std::unique_ptr<ModuleInstance> instance_;
  std::map<std::string, Topic> topics_;
  std::atomic<std::uint64_t> failures_{0};
  bool started_ = false;
};

void Runtime::Impl::turn_ended(TurnId turn) {
  for (auto& h : hosts) h->free_turn_later(turn, options.turn_linger);
}

Runtime::Runtime(PipelineSpec spec, RuntimeOptions options)
    : impl_(std::make_unique<Impl>(std::move(spec), std::move(options))) {}

Runtime::~Runtime() { stop(); }

void Runtime::register_service(const std::string& name, const std::string& type, std::shared_ptr<void> service) {
  std::lock_guard<std::mutex> lk(impl_->services_mutex);
  impl_->services[name] = {{type}, std::move(service)};
}

void Runtime::start() {
  if (impl_->started) throw std::logic_error("Runtime::start called twice");
  impl_->started = true;
  {
    // Resources given in the options are shared, services registered by the caller stand in for resources of the
    // same name (null placeholders below); everything else the pipeline declares is created now.
    ResourceSet present = impl_->options.resources;
    {
      std::lock_guard<std::mutex> lk(impl_->services_mutex);
      for (const auto& [name, svc] : impl_->services) present.emplace(name, Resource{name, nullptr, nullptr});
    }
    const ResourceSet all = create_resources(impl_->spec, present);
    std::lock_guard<std::mutex> lk(impl_->services_mutex);
    for (const auto& [name, r] : all) {
      if (!r.service) continue;
      std::vector<std::string> types{r.kind->service_type};
      types.insert(types.end(), r.kind->also_serves.begin(), r.kind->also_serves.end());
      impl_->services[name] = {std::move(types), r.service};
      impl_->resources[name] = r;
    }
  }
  for (const auto& m : impl_->spec.modules) {
    if (!m.loaded) throw std::logic_error("module '" + m.id + "' has no loaded plugin (validate the pipeline first)");
    impl_->hosts.push_back(std::make_unique<ModuleHost>(*impl_, m));
  }
  for (auto& h : impl_->hosts) {
    try {
      h->start();
    } catch (const std::exception& e) {
      const std::string id = h->module_id();
      stop();
      throw std::runtime_error("module '" + id + "' failed to start: " + e.what());
    }
  }
}

TurnId Runtime::submit(const std::string& text, const std::string& user) {
  MessageHeader h;
  h.turn = impl_->next_turn.fetch_add(1) + 1;
  h.user = user;
  Percept p;
  p.text = text;
  impl_->bus->publish(impl_->input_topic, std::make_shared<const Percept>(std::move(p)), h);
  return h.turn;
}

void Runtime::observe_erased(const std::string& topic, const char* type, Bus::Handler handler) {
  auto member = impl_->bus->add_member("host:" + topic, [topic](const std::string&, const std::string&,
                                                               const std::string& what) {
    spdlog::error("host observer of '{}' failed: {}", topic, what);
  });
  impl_->bus->subscribe(member, impl_->bus->topic(topic, type), 4096, OverflowPolicy::block, std::move(handler));
}

std::shared_ptr<const void> Runtime::request_erased(const std::string& topic, const char* type,
                                                    std::shared_ptr<const void> payload, const std::string& user,
                                                    std::chrono::milliseconds deadline) {
  auto member = impl_->bus->add_member("host:request");
  auto done = std::make_shared<std::promise<std::pair<std::shared_ptr<const void>, std::string>>>();
  auto fut = done->get_future();
  MessageHeader h;
  h.user = user;
  impl_->bus->request(member, impl_->bus->topic(topic, type), std::move(payload), h, deadline,
                      [done](std::shared_ptr<const void> rep, std::string err, bool) {
                        done->set_value({std::move(rep), std::move(err)});
                      });
  auto [reply, error] = fut.get();
  if (!reply) throw std::runtime_error("request on '" + topic + "' failed: " + error);
  return reply;
}

void Runtime::cancel_turn(TurnId turn) {
  impl_->turn_state(turn)->cancel();
  impl_->turn_ended(turn);
}
void Runtime::cancel_scope(TurnId turn, const std::string& scope) { impl_->turn_state(turn, scope)->cancel(); }
void Runtime::cancel_all() {
  impl_->cancel_everything.store(true);
  std::vector<std::shared_ptr<TurnCancellation>> all;
  {
    std::lock_guard<std::mutex> lk(impl_->cancel_mutex);
    for (auto& [key, state] : impl_->turns)
      if (key.second.empty()) all.push_back(state);
  }
  for (auto& t : all) t->cancel();  // runs on_cancel callbacks (of scopes too)
}

bool Runtime::wait_idle(std::chrono::milliseconds timeout) { return impl_->bus->wait_idle(timeout); }

void Runtime::stop() {
  if (impl_->stopped) return;
  impl_->stopped = true;
  impl_->cancel_everything.store(true);
  for (auto it = impl_->hosts.rbegin(); it != impl_->hosts.rend(); ++it) (*it)->stop();
  // Work the modules handed out (model generations, now cancelled) ends soon and drops the modules' callbacks:
  // wait for it, so no plugin code is still referenced when the libraries go. Bounded: a stuck engine only delays.
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  bool waited = false;
  for (auto& h : impl_->hosts)
    while (h->outstanding() > 0 && std::chrono::steady_clock::now() < give_up) {
      waited = true;
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  // A callback releases its count from inside its own destruction: let that finish before the code goes.
  if (waited) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  impl_->bus->shutdown();
  // Join the pool and release every handler before the module objects (and, later, their libraries) go away.
  impl_->bus.reset();
  impl_->hosts.clear();
}

bool Runtime::failed() const { return impl_->failed.load(); }
std::string Runtime::failure() const {
  std::lock_guard<std::mutex> lk(impl_->failure_mutex);
  return impl_->failure;
}

std::vector<ModuleStats> Runtime::module_stats() const {
  std::vector<ModuleStats> out;
  for (const auto& h : impl_->hosts) out.push_back(h->stats());
  return out;
}

const ResourceSet& Runtime::resources() const { return impl_->resources; }
Bus& Runtime::bus() { return *impl_->bus; }
const PipelineSpec& Runtime::spec() const { return impl_->spec; }

}  // namespace lal::runtime
