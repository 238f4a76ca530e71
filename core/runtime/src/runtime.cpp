#include "lal/runtime/runtime.hpp"

#include <spdlog/spdlog.h>

#include <condition_variable>
#include <future>
#include <iostream>
#include <stdexcept>

#include "lal/messages.hpp"

namespace lal::runtime {

namespace {

/// A turn's (or a scope's) cancellation flag. A scope's state points at its turn's, which points at the global one.
struct TurnCancellation : CancellationToken::State {
  std::atomic<bool> flag{false};
  const std::atomic<bool>* everything = nullptr;
  std::shared_ptr<const TurnCancellation> turn;  // set for scopes
  bool cancelled() const override {
    return flag.load() || everything->load() || (turn && turn->cancelled());
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

  std::mutex services_mutex;
  std::map<std::string, std::pair<std::string, std::shared_ptr<void>>> services;

  std::mutex cancel_mutex;
  std::map<std::pair<TurnId, std::string>, std::shared_ptr<TurnCancellation>> turns;
  std::atomic<bool> cancel_everything{false};
  std::atomic<TurnId> next_turn{0};

  std::mutex output_mutex;
  mutable std::mutex failure_mutex;
  std::string failure;
  std::atomic<bool> failed{false};

  std::vector<std::unique_ptr<ModuleHost>> hosts;
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
    if (!scope.empty()) s->turn = turn_state_locked(turn, {});
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

class ModuleHost final : public Context {
 public:
  ModuleHost(Runtime::Impl& rt, const ModuleSpec& spec) : rt_(rt), spec_(spec), config_(spec.id, spec.config) {
    member_.emplace(rt_.bus->add_member(spec.id, [this](const std::string&, const std::string& topic,
                                                       const std::string& what) { on_failure(topic, what); }));
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

  ModuleStats stats() const { return ModuleStats{spec_.id, failures_.load(), member_->disabled()}; }

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
    rt_.bus->subscribe(*member_, topics_.at(p.name), w->capacity.value_or(p.capacity),
                       w->overflow.value_or(p.overflow), std::move(handler));
    return true;
  }

  std::uint64_t publish_erased(std::string_view port, const char* type, std::shared_ptr<const void> payload,
                               const MessageHeader* cause, bool new_turn) override {
    const PortSpec& p = declared(port, PortDirection::output, type);
    auto it = topics_.find(p.name);
    if (it == topics_.end()) return 0;
    return rt_.bus->publish(it->second, std::move(payload), header_from(cause, new_turn));
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

  std::shared_ptr<void> busy_guard() override { return rt_.bus->hold(); }

  CancellationToken cancellation_scoped(TurnId turn, const std::string& scope) override {
    return CancellationToken(rt_.turn_state(turn, scope));
  }
  void cancel_scoped(TurnId turn, const std::string& scope) override {
    rt_.turn_state(turn, scope)->flag.store(true);
  }

  std::shared_ptr<void> find_service(const std::string& name, const char* service_type) override {
    std::lock_guard<std::mutex> lk(rt_.services_mutex);
    auto it = rt_.services.find(name);
    if (it == rt_.services.end()) return nullptr;
    if (it->second.first != service_type)
      throw std::logic_error("module '" + spec_.id + "' asked for service '" + name + "' as " + service_type +
                             ", but it is a " + it->second.first);
    return it->second.second;
  }

  void register_service(const std::string& name, const char* service_type, std::shared_ptr<void> svc) override {
    std::lock_guard<std::mutex> lk(rt_.services_mutex);
    rt_.services[name] = {service_type, std::move(svc)};
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

  Runtime::Impl& rt_;
  const ModuleSpec& spec_;
  Config config_;
  std::optional<Member> member_;
  std::unique_ptr<ModuleInstance> instance_;
  std::map<std::string, Topic> topics_;
  std::atomic<std::uint64_t> failures_{0};
  bool started_ = false;
};

Runtime::Runtime(PipelineSpec spec, RuntimeOptions options)
    : impl_(std::make_unique<Impl>(std::move(spec), std::move(options))) {}

Runtime::~Runtime() { stop(); }

void Runtime::register_service(const std::string& name, const std::string& type, std::shared_ptr<void> service) {
  std::lock_guard<std::mutex> lk(impl_->services_mutex);
  impl_->services[name] = {type, std::move(service)};
}

void Runtime::start() {
  if (impl_->started) throw std::logic_error("Runtime::start called twice");
  impl_->started = true;
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

void Runtime::cancel_turn(TurnId turn) { impl_->turn_state(turn)->flag.store(true); }
void Runtime::cancel_scope(TurnId turn, const std::string& scope) { impl_->turn_state(turn, scope)->flag.store(true); }
void Runtime::cancel_all() { impl_->cancel_everything.store(true); }

bool Runtime::wait_idle(std::chrono::milliseconds timeout) { return impl_->bus->wait_idle(timeout); }

void Runtime::stop() {
  if (impl_->stopped) return;
  impl_->stopped = true;
  impl_->cancel_everything.store(true);
  for (auto it = impl_->hosts.rbegin(); it != impl_->hosts.rend(); ++it) (*it)->stop();
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

Bus& Runtime::bus() { return *impl_->bus; }
const PipelineSpec& Runtime::spec() const { return impl_->spec; }

}  // namespace lal::runtime
