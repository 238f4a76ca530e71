// lal runtime — runs a validated pipeline: creates each module from its plugin, wires its ports to bus topics,
// starts them in declaration order, feeds user input, applies failure policies, and stops them in reverse order.
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "lal/runtime/bus.hpp"
#include "lal/runtime/pipeline.hpp"
#include "lal/runtime/resources.hpp"

namespace lal::runtime {

struct RuntimeOptions {
  BusOptions bus;
  /// Where modules' write_output() goes. Default: stdout, flushed per call.
  std::function<void(std::string_view)> output;
  /// Resources already created (runtime::create_resources), used instead of creating the pipeline's own: this is
  /// how several runtimes share one model (see lal/runtime/resources.hpp). Resources of the pipeline missing here
  /// are created by start() from the registered kinds.
  ResourceSet resources;
  /// How long a module's turn_state (and the messages kept for await) outlive the turn's TurnDone or cancellation,
  /// so that late messages of the turn (an appraisal after the answer) still find it.
  std::chrono::milliseconds turn_linger{2000};
};

/// Per-module counters, for `lal run --stats` and tests.
struct ModuleStats {
  std::string id;
  std::uint64_t failures = 0;
  bool disabled = false;
  /// Turns whose state (turn_state, messages kept for await, pending awaits) the runtime holds for this module;
  /// back to 0 a turn_linger after every turn has ended.
  std::size_t turn_slots = 0;
};

class Runtime {
 public:
  /// `spec` must come from a load without errors.
  Runtime(PipelineSpec spec, RuntimeOptions options = {});
  ~Runtime();
  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;

  /// Offer a service to modules (call before start()). `type` is S::kServiceName.
  void register_service(const std::string& name, const std::string& type, std::shared_ptr<void> service);
  template <class S>
  void register_service(const std::string& name, std::shared_ptr<S> service) {
    register_service(name, S::kServiceName, std::move(service));
  }

  /// Create the pipeline's resources that are neither in RuntimeOptions::resources nor registered as services
  /// (register_service wins: tests offer a scripted model that way), offer them all as services, then create and
  /// start every module. Throws std::runtime_error naming the module when one fails to start (modules
  /// already started are stopped again).
  void start();

  /// Watch `topic` from the host (the CLI's /emotion, timing in `lal bench chat`). The handler runs on a bus
  /// thread, one call at a time per observer. Call before or after start(). Throws if the topic has another type.
  template <class T>
  void observe(const std::string& topic, std::function<void(const Delivery<T>&)> handler) {
    observe_erased(topic, type_name<T>(), [h = std::move(handler)](const ErasedMessage& m) {
      h(Delivery<T>{m.header, std::static_pointer_cast<const T>(m.payload)});
    });
  }

  /// Ask whoever serves `topic` from the host and wait for the reply (the CLI's /memory). Returns the reply or
  /// throws std::runtime_error with the error (deadline, server failure, nobody serving). Not from a handler.
  template <class Req, class Rep>
  std::shared_ptr<const Rep> request(const std::string& topic, Req body, const std::string& user,
                                     std::chrono::milliseconds deadline) {
    return std::static_pointer_cast<const Rep>(request_erased(topic, type_name<Req>(),
                                                              std::make_shared<const Req>(std::move(body)), user,
                                                              deadline));
  }

  /// Publish `text` as a new turn for `user` on the pipeline's input topic. Returns the turn id.
  TurnId submit(const std::string& text, const std::string& user = "default");

  void cancel_turn(TurnId turn);
  /// Cancel one scope of a turn (lal::Context::cancel_scope).
  void cancel_scope(TurnId turn, const std::string& scope);
  void cancel_all();

  /// Wait until the bus is idle (every message handled, no request outstanding).
  bool wait_idle(std::chrono::milliseconds timeout = std::chrono::hours(24));

  /// Stop modules in reverse order and shut the bus down. Idempotent.
  void stop();

  /// True once a module with failure_policy `fail` failed; failure() says which and why.
  bool failed() const;
  std::string failure() const;

  std::vector<ModuleStats> module_stats() const;
  /// The resources in use (valid after start()): shared with RuntimeOptions::resources.
  const ResourceSet& resources() const;
  Bus& bus();
  const PipelineSpec& spec() const;

  struct Impl;

 private:
  void observe_erased(const std::string& topic, const char* type, Bus::Handler handler);
  std::shared_ptr<const void> request_erased(const std::string& topic, const char* type,
                                             std::shared_ptr<const void> payload, const std::string& user,
                                             std::chrono::milliseconds deadline);
  std::unique_ptr<Impl> impl_;
};

}  // namespace lal::runtime
