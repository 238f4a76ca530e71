// lal runtime — the pipeline's `resources:`: shared services (a language model today) that the runtime creates
// from the pipeline and offers to modules as services, the same way in `lal run`, `lal chat` and `lal serve`.
//
//   resources:
//     model:                      # the service name modules ask for: ctx.service<lal::LanguageModel>("model")
//       kind: language_model      # which factory builds it; `language_model` when omitted
//       path: default             # the rest is the kind's own config, checked against its declared keys
//       device: auto
//
// WHY A REGISTRY. The runtime never links LibTorch, yet it must create a model. So resource kinds are registered
// by whoever can build them: the `lal` executable registers `language_model` (core/lm) at startup with
// `resource_kinds().add(...)`; a test registers a scripted model the same way. The runtime looks the kind up when a
// pipeline is loaded (validation: unknown kind, unknown or ill-typed key, with file:line:col) and when it starts
// (creation).
//
// SHARING ONE MODEL ACROSS RUNTIMES (`lal serve`: one runtime per user, one model for all):
//
//     auto load = runtime::load_pipeline(file);                 // validated once
//     runtime::ResourceSet shared = runtime::create_resources(load.spec);   // loads the model once
//     for each user:
//       runtime::RuntimeOptions o;  o.resources = shared;        // shared_ptrs: no copy of the model
//       auto rt = std::make_unique<runtime::Runtime>(load.spec, o);         // PipelineSpec is copyable
//       rt->start();                                              // creates only resources not in o.resources
//
// A resource service must therefore be safe to use from several runtimes at once; LanguageModel is (see
// lal/services/language_model.hpp). A resource lives as long as the last runtime or ResourceSet holding it.
// Runtime::stop() waits (up to 10 s) until the generations its modules submitted to a shared model have ended, so a
// stopped runtime leaves no callbacks into its plugins behind; keep one copy of the PipelineSpec (it holds the
// plugin libraries) for as long as you keep the shared resources.
//
// THREADING: register kinds before loading pipelines (at program start); lookups are then read-only and thread-safe.
// create_resources() may take long (a model load) and runs on the calling thread.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "lal/config.hpp"
#include "lal/contract.hpp"

namespace lal::runtime {

struct PipelineSpec;

/// How to build one kind of resource.
struct ResourceKind {
  std::string kind;                      ///< "language_model"
  std::string service_type;              ///< what it is offered as: S::kServiceName ("lal.LanguageModel/2")
  std::vector<std::string> also_serves;  ///< older names it also satisfies ("lal.LanguageModel/1")
  std::string description;               ///< one line, for errors and `lal plugins`
  std::vector<ConfigKeySpec> keys;       ///< accepted config keys (besides `kind`), with defaults
  /// Build the service. `config` holds the declared keys, defaults filled in, each with its source location.
  /// Throw std::runtime_error naming what is wrong and where (config.at(key).where()).
  std::function<std::shared_ptr<void>(const std::string& name, const Config& config)> create;
};

/// The resource kinds this process can build. Thread-safe.
class ResourceKinds {
 public:
  /// Register (or replace) a kind.
  void add(ResourceKind kind);
  /// The kind named `kind`, or null.
  std::shared_ptr<const ResourceKind> find(const std::string& kind) const;
  std::vector<std::string> names() const;

 private:
  mutable std::mutex mutex_;
  std::map<std::string, std::shared_ptr<const ResourceKind>> kinds_;
};

/// The process-wide registry (filled by the host application, read by the pipeline loader and the runtime).
ResourceKinds& resource_kinds();

/// One created resource.
struct Resource {
  std::string name;  ///< the service name ("model")
  std::shared_ptr<const ResourceKind> kind;
  std::shared_ptr<void> service;  ///< a `kind->service_type`
};

/// Created resources by name. Copying shares the services.
using ResourceSet = std::map<std::string, Resource>;

/// Create every resource of `spec` that `existing` does not already hold, and return them together with
/// `existing`. Throws std::runtime_error naming the resource, its kind and the file:line:col of its declaration.
ResourceSet create_resources(const PipelineSpec& spec, const ResourceSet& existing = {},
                             const ResourceKinds& kinds = resource_kinds());

}  // namespace lal::runtime
