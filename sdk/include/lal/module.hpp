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
// THREADING: every handler of a module (ctx.on, ctx.serve, request replies) runs on that module's strand: never two
// at once for the same module, so a module needs no locks for state touched only by its handlers. Messages on one
// input port arrive in publish order (FIFO per subscriber). Handlers of *different* modules run concurrently on the
// bus's thread pool, so long work (a language-model generation) in a handler only delays that module.
// A module may start its own threads; it must join them in stop(). Context methods are thread-safe.
//
// ERRORS: an exception escaping a handler is caught by the host, logged with the module id and counted; then the
// module's `failure_policy` from the pipeline applies: `isolate` (default: keep delivering), `disable` (deliver
// nothing more to this module) or `fail` (stop the whole pipeline with an error). It never takes the host down.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
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
  template <class S>
  std::shared_ptr<S> service(const std::string& name) {
    return std::static_pointer_cast<S>(find_service(name, S::kServiceName));
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
