// lal SDK — the module contract: what the host calls, on which thread, and what a module may do.
//
// LIFECYCLE (all calls come from the host's control thread, never concurrently with each other):
//
//   1. create()            the plugin's factory builds the object. Do nothing expensive, touch no bus.
//   2. start(ctx)          read config, look up services, subscribe to inputs (ctx.on / ctx.serve), keep `ctx`.
//                          Throwing here fails the pipeline load with the module id and the message.
//   3. ... messages flow ...
//   4. stop()              stop background work, flush what must not be lost (e.g. commit a database). After stop()
//                          returns no handler of this module is running or will run again.
//   5. destroy             the plugin's own deleter frees the object (inside the plugin's library, so allocation
//                          and deallocation match). The library stays loaded until after this.
//
// THREADING: every handler of a module (ctx.on, ctx.serve, request replies, ctx.post / post_after / every timers,
// ctx.await values and timeouts, ctx.on_cancel callbacks, and the callbacks of LanguageModel::submit on a model
// obtained through ctx.service) runs on that module's strand: never two at once for the same module, so a module
// needs no locks and no threads. Messages on one input port arrive in publish order (FIFO per subscriber). Handlers
// of *different* modules run concurrently on the bus's thread pool. Do not block in a handler: wait for another
// module's message with ctx.await, for time with ctx.post_after, for the model with LanguageModel::submit.
// Context methods are thread-safe.
//
// TURNS. ctx.turn_state<T>(turn) is the module's state for one turn, created on first use and freed by the runtime
// a short linger (RuntimeOptions::turn_linger, 2 s) after the turn's lal.TurnDone/2 is published or the turn is
// cancelled; so a module keeps no map keyed by turn and needs no cap on it.
//
// BUSY. `lal run`/`lal chat` wait until the pipeline is idle before reading the next line. The SDK counts as busy
// every message queued or in a handler, every pending ctx.post / post_after timer (until it ran or was cancelled),
// every ctx.await not yet answered, and every LanguageModel::submit not yet done. A module never counts itself.
//
// ERRORS: an exception escaping a handler is caught by the host, logged with the module id and counted; then the
// module's `failure_policy` from the pipeline applies: `isolate` (default: keep delivering), `disable` (deliver
// nothing more to this module) or `fail` (stop the whole pipeline with an error). It never takes the host down.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <type_traits>
#include <typeinfo>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

#include "lal/config.hpp"
#include "lal/message.hpp"

namespace lal {

enum class LogLevel { trace, debug, info, warn, error };

/// Shared flag for a cancelled turn. Cheap to copy; all copies see the same state. Thread-safe.
class CancellationToken {
 public:
  struct State {
    virtual ~State() = default;
    virtual bool cancelled() const = 0;
  };
  CancellationToken() = default;
  explicit CancellationToken(std::shared_ptr<const State> s) : state_(std::move(s)) {}

  /// True once the turn (or the whole pipeline) was cancelled. Poll it between units of work (tokens, steps).
  bool cancelled() const { return state_ && state_->cancelled(); }
  explicit operator bool() const { return cancelled(); }

 private:
  std::shared_ptr<const State> state_;
};

/// Runs a function on some module's strand (Context::executor()). Thread-safe; drops the function once the module
/// is stopped.
using Executor = std::function<void(std::function<void()>)>;

/// A scheduled callback (Context::post_after, Context::every). Cheap to copy; all copies control the same timer.
/// Dropping every copy does *not* cancel it. Thread-safe.
class Timer {
 public:
  struct State {
    virtual ~State() = default;
    virtual void cancel() = 0;
  };
  Timer() = default;
  explicit Timer(std::shared_ptr<State> s) : state_(std::move(s)) {}
  /// The callback will not run (unless it already started); its busy count is released. Idempotent.
  void cancel() {
    if (state_) state_->cancel();
  }

 private:
  std::shared_ptr<State> state_;
};

/// Thrown by blocking requests whose deadline passed, and delivered to async requesters as the error.
class DeadlineExceeded : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// The outcome of a request: a reply, or an error message (deadline passed, server threw, nobody serves the topic).
template <class Rep>
struct Reply {
  std::shared_ptr<const Rep> value;  ///< null on error
  std::string error;                 ///< empty on success
  bool timed_out = false;

  explicit operator bool() const { return value != nullptr; }
  const Rep& operator*() const { return *value; }
  const Rep* operator->() const { return value.get(); }
};

/// The type-erased envelope the host moves around. Plugins use the typed wrappers in Context instead.
struct ErasedMessage {
  MessageHeader header;
  const char* type = nullptr;  ///< the payload's type name (points into the publishing plugin's descriptor/code)
  std::shared_ptr<const void> payload;
};

/// The module's window onto the host. Owned by the host; valid from start() until stop() returns.
class Context {
 public:
  virtual ~Context() = default;

  /// The module's id in the pipeline ("intuition"), unique per pipeline.
  virtual const std::string& module_id() const = 0;
  /// The module's validated configuration, defaults filled in.
  virtual const Config& config() const = 0;
  /// The config as the plugin's options struct T (declared once with T::declare, see lal/options.hpp).
  template <class T>
  T options() const;
  /// Log through the host's logger (stderr), prefixed with the module id.
  virtual void log(LogLevel level, std::string_view text) = 0;

  /// Write user-visible text to the host's output (stdout for `lal run`/`lal chat`; a buffer in tests). Output
  /// strategies use this; other modules publish messages instead. Writes from one call are never interleaved.
  virtual void write_output(std::string_view text) = 0;

  /// The token of `turn`: becomes cancelled when anyone calls cancel_turn(turn) or the pipeline stops.
  CancellationToken cancellation(TurnId turn) { return cancellation_scoped(turn, {}); }
  /// The token of one *scope* of a turn ("analysis", "insight"): cancelled by cancel_scope(turn, scope), and also
  /// whenever the whole turn is cancelled. Lets the frontal lobe stop deep thinking it no longer needs while the
  /// rest of the turn (the answer it is composing) goes on.
  CancellationToken cancellation(TurnId turn, const std::string& scope) { return cancellation_scoped(turn, scope); }
  /// Cancel a turn for every module (the user pressed Ctrl-C, the pipeline stops).
  void cancel_turn(TurnId turn) { cancel_scoped(turn, {}); }
  /// Cancel one scope of a turn (see cancellation(turn, scope)).
  void cancel_scope(TurnId turn, const std::string& scope) { cancel_scoped(turn, scope); }

  /// While the returned guard is alive, the pipeline counts as busy: `lal run`, `lal chat` and Runtime::wait_idle()
  /// wait for it. Take one for work that continues outside a handler (a module's own worker thread) and drop it when
  /// that work has published its last message. Cheap; thread-safe; may outlive stop() harmlessly.
  virtual std::shared_ptr<void> busy_guard() = 0;

  /// A shared service registered by the host or another plugin under `name` ("model", "memory"), or null.
  /// `S::kServiceName` is checked against what was registered, so a wrong type is refused, not reinterpreted.
  /// A service type with `static std::shared_ptr<S> bind_to_module(std::shared_ptr<S>, Context&)` (LanguageModel)
  /// is returned bound to this module: its asynchronous callbacks then run on this module's strand.
  template <class S>
  std::shared_ptr<S> service(const std::string& name) {
    auto s = std::static_pointer_cast<S>(find_service(name, S::kServiceName));
    if constexpr (BindsToModule<S>::value) {
      if (s) return S::bind_to_module(std::move(s), *this);
    }
    return s;
  }

  // ---- time and turns, all on this module's strand ----

  /// Run `fn` on this module's strand soon (after the running handler). Busy until it ran. From any thread; after
  /// stop() began, `fn` is dropped unrun.
  virtual void post(std::function<void()> fn) = 0;
  /// A callable that does what post() does and stays safe to call after the module (and this Context) is gone —
  /// then it drops `fn`. Hand it to code that may outlive the module (a model's callback thread).
  virtual Executor executor() = 0;
  /// Run `fn` on this module's strand after `delay`. Busy until it ran or was cancelled through the returned Timer.
  virtual Timer post_after(std::chrono::milliseconds delay, std::function<void()> fn) = 0;
  /// Run `fn` on the strand every `period` until the returned Timer is cancelled (or the module stops). A periodic
  /// timer counts as busy only while a run is due *and* the previous one finished; cancel it when its work is done.
  Timer every(std::chrono::milliseconds period, std::function<void()> fn) {
    auto state = std::make_shared<Every>();
    state->fn = std::move(fn);
    state->period = period;
    state->ctx = this;
    state->schedule(state);
    return Timer(state);
  }

  /// This module's state of type T for `turn`, default-constructed on first use (T needs no locking: use it on the
  /// strand). Freed a short linger after the turn's TurnDone is published or the turn is cancelled (see TURNS).
  /// Returns a shared_ptr so an in-flight callback may keep it alive; null only for turn 0.
  template <class T>
  std::shared_ptr<T> turn_state(TurnId turn) {
    return std::static_pointer_cast<T>(
        turn_state_erased(turn, typeid(T).name(), [] { return std::static_pointer_cast<void>(std::make_shared<T>()); }));
  }
  /// Whether this module already has a turn_state<T>(turn) (does not create one).
  template <class T>
  bool has_turn_state(TurnId turn) {
    return turn_state_erased(turn, typeid(T).name(), nullptr) != nullptr;
  }

  /// Wait, without blocking, for the message of `turn` on input port `port` (declared, and subscribed in start()
  /// with ctx.on or ctx.keep): `on_value` runs on the strand with it — at once (posted) if it already arrived —
  /// or `on_timeout` runs once `deadline` passed without it, or right away when the port is optional and unwired.
  /// Exactly one of the two runs, unless the module stops first. Busy until then. The latest message of each turn
  /// on each subscribed port is kept (turn-scoped) for this.
  template <class T>
  void await(std::string_view port, TurnId turn, std::chrono::milliseconds deadline,
             std::function<void(const Delivery<T>&)> on_value, std::function<void()> on_timeout) {
    await_erased(port, type_name<T>(), turn, deadline,
                 [h = std::move(on_value)](const ErasedMessage& m) {
                   h(Delivery<T>{m.header, std::static_pointer_cast<const T>(m.payload)});
                 },
                 std::move(on_timeout));
  }
  /// Subscribe to `port` only so that ctx.await can see it (no handler). Returns false for an unwired optional port.
  template <class T>
  bool keep(std::string_view port) {
    return subscribe_erased(port, type_name<T>(), [](const ErasedMessage&) {});
  }

  /// Run `fn` on the strand when `turn` (or, with a scope, that scope of it) is cancelled; at once (posted) if it
  /// already is. Runs at most once; not at all if the turn ends uncancelled and its state is freed.
  void on_cancel(TurnId turn, std::function<void()> fn) { on_cancel_erased(turn, {}, std::move(fn)); }
  void on_cancel(TurnId turn, const std::string& scope, std::function<void()> fn) {
    on_cancel_erased(turn, scope, std::move(fn));
  }
  /// Offer a service to the modules started after this one (and to the host). Usually called in start().
  template <class S>
  void provide_service(const std::string& name, std::shared_ptr<S> svc) {
    register_service(name, S::kServiceName, std::move(svc));
  }

  /// Subscribe `handler` to the topic wired to input port `port`. Call in start(). Throws if the port is not
  /// declared as an input of type T (or, when optional and unwired, does nothing and returns false).
  template <class T>
  bool on(std::string_view port, std::function<void(const Delivery<T>&)> handler) {
    return subscribe_erased(port, type_name<T>(), [h = std::move(handler)](const ErasedMessage& m) {
      h(Delivery<T>{m.header, std::static_pointer_cast<const T>(m.payload)});
    });
  }

  /// Publish on the topic wired to output port `port`. `cause` (optional) is the message being reacted to: its
  /// turn and user are inherited and its sequence becomes the causal parent. Returns the new message's sequence,
  /// or 0 when the port is unwired. May block only if a subscriber uses the `block` policy and is full.
  template <class T>
  std::uint64_t publish(std::string_view port, T body, const MessageHeader* cause = nullptr) {
    return publish_erased(port, type_name<T>(), std::make_shared<const T>(std::move(body)), cause);
  }
  /// Publish as the start of a new turn for `user` (used by input adapters, rarely by modules).
  template <class T>
  std::uint64_t publish_new_turn(std::string_view port, T body, TurnId turn, const std::string& user) {
    MessageHeader h;
    h.turn = turn;
    h.user = user;
    return publish_erased(port, type_name<T>(), std::make_shared<const T>(std::move(body)), &h, true);
  }

  /// Answer requests arriving on server port `port`. The handler runs on this module's strand and returns the
  /// reply; if it throws, the requester receives the exception's message as the error.
  template <class Req, class Rep>
  void serve(std::string_view port, std::function<Rep(const Delivery<Req>&)> handler) {
    serve_erased(port, type_name<Req>(), type_name<Rep>(),
                 [h = std::move(handler)](const ErasedMessage& m) -> std::shared_ptr<const void> {
                   return std::make_shared<const Rep>(h(Delivery<Req>{m.header, std::static_pointer_cast<const Req>(m.payload)}));
                 });
  }

  /// Send a request on client port `port`; `on_reply` runs on this module's strand exactly once: with the reply,
  /// or with an error when the deadline passes first, the server throws, or nobody serves the topic.
  template <class Req, class Rep>
  void request(std::string_view port, Req body, std::chrono::milliseconds deadline,
               std::function<void(Reply<Rep>)> on_reply, const MessageHeader* cause = nullptr) {
    request_erased(port, type_name<Req>(), type_name<Rep>(), std::make_shared<const Req>(std::move(body)), deadline,
                   [cb = std::move(on_reply)](std::shared_ptr<const void> rep, std::string err, bool timed_out) {
                     cb(Reply<Rep>{std::static_pointer_cast<const Rep>(rep), std::move(err), timed_out});
                   },
                   cause);
  }

 protected:
  using ErasedHandler = std::function<void(const ErasedMessage&)>;
  using ErasedServer = std::function<std::shared_ptr<const void>(const ErasedMessage&)>;
  using ErasedReplyHandler = std::function<void(std::shared_ptr<const void>, std::string, bool)>;

  virtual bool subscribe_erased(std::string_view port, const char* type, ErasedHandler handler) = 0;
  virtual std::uint64_t publish_erased(std::string_view port, const char* type, std::shared_ptr<const void> payload,
                                       const MessageHeader* cause, bool new_turn = false) = 0;
  virtual void serve_erased(std::string_view port, const char* type, const char* reply_type,
                            ErasedServer handler) = 0;
  virtual void request_erased(std::string_view port, const char* type, const char* reply_type,
                              std::shared_ptr<const void> payload, std::chrono::milliseconds deadline,
                              ErasedReplyHandler on_reply, const MessageHeader* cause) = 0;
  virtual CancellationToken cancellation_scoped(TurnId turn, const std::string& scope) = 0;
  virtual void cancel_scoped(TurnId turn, const std::string& scope) = 0;
  virtual std::shared_ptr<void> find_service(const std::string& name, const char* service_type) = 0;
  virtual void register_service(const std::string& name, const char* service_type, std::shared_ptr<void> svc) = 0;
  /// `make` null: look up only.
  virtual std::shared_ptr<void> turn_state_erased(TurnId turn, const char* key,
                                                  std::function<std::shared_ptr<void>()> make) = 0;
  virtual void await_erased(std::string_view port, const char* type, TurnId turn, std::chrono::milliseconds deadline,
                            ErasedHandler on_value, std::function<void()> on_timeout) = 0;
  virtual void on_cancel_erased(TurnId turn, const std::string& scope, std::function<void()> fn) = 0;

 private:
  template <class S, class = void>
  struct BindsToModule : std::false_type {};
  template <class S>
  struct BindsToModule<S, std::void_t<decltype(S::bind_to_module(std::declval<std::shared_ptr<S>>(),
                                                                    std::declval<Context&>()))>> : std::true_type {};

  // every(): reschedules itself after each run until cancelled.
  struct Every : Timer::State {
    std::function<void()> fn;
    std::chrono::milliseconds period{0};
    Context* ctx = nullptr;
    std::mutex mutex;
    bool cancelled = false;
    Timer next;
    void schedule(const std::shared_ptr<Every>& self) {
      std::lock_guard<std::mutex> lk(mutex);
      if (cancelled) return;
      next = ctx->post_after(period, [s = self] {  // the pending timer owns the state until it runs
        std::function<void()> run;
        {
          std::lock_guard<std::mutex> lk(s->mutex);
          if (s->cancelled) return;
          run = s->fn;  // a copy: fn may cancel its own timer, which releases s->fn while this runs
        }
        run();
        s->schedule(s);
      });
    }
    void cancel() override {
      std::function<void()> released;  // destroyed after the lock is let go
      std::lock_guard<std::mutex> lk(mutex);
      cancelled = true;
      next.cancel();
      // A callback that holds its own Timer (to cancel itself) would keep this state alive through fn forever.
      released = std::move(fn);
    }
  };
};

/// Base class of every module a plugin creates.
class Module {
 public:
  virtual ~Module() = default;
  /// See LIFECYCLE above. `ctx` stays valid until stop() returns.
  virtual void start(Context& ctx) = 0;
  /// See LIFECYCLE above. Default: nothing to stop.
  virtual void stop() {}
};

}  // namespace lal
