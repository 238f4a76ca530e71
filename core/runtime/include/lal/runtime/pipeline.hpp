// lal runtime — pipelines declared in YAML: parsing, validation and the resulting specification.
//
//   name: hello                       # optional
//   description: ...                  # optional
//   plugin_path: [plugins]            # optional; relative to this file; searched before the default path
//   input: turn.input                 # topic where user lines are published as lal.Percept/1 (default turn.input)
//   resources: {...}                  # optional; shared services the runtime creates (lal/runtime/resources.hpp)
//   modules:
//     memory:                         # module id (unique)
//       plugin: working_memory        # libworking_memory.so on the plugin path
//       config: {capacity: 7}         # checked against the plugin's config schema
//       inputs: {percept: turn.input, recall: memory.recall}       # input and server ports → topics
//       outputs: {thought: thought.stream}                         # output and client ports → topics
//       failure_policy: isolate       # isolate (default) | disable | fail
//
//   outputs:                          # optional: the output slot, interchangeable output strategies; exactly one
//     text: {plugin: think_aloud, inputs: {...}}   # runs, as module `output` (declared like any module)
//     jsonl: {plugin: jsonl, inputs: {...}}
//   output: text                      # which one runs (default: the first); `lal chat --output jsonl` overrides it
//
// A wiring value is a topic name, or a map {topic: T, capacity: N, overflow: block|drop_oldest|drop_newest|
// keep_latest, feedback: true}. `feedback: true` marks a deliberate back edge that cycle detection accepts.
//
// Validation collects *every* error, each with file:line:col, before refusing: YAML syntax, unknown keys, unknown
// plugin (and where it looked), unknown or ill-typed config keys, unknown ports, an input nobody produces, a
// producer/consumer type mismatch (naming both modules and both types), request/reply type mismatch, cycles.
#pragma once

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "lal/config.hpp"
#include "lal/contract.hpp"
#include "lal/runtime/plugin_loader.hpp"

namespace lal::runtime {

struct Diagnostic {
  SourceLocation where;
  std::string message;
  /// "file:line:col: message"
  std::string str() const { return where.str() + ": " + message; }
};

enum class FailurePolicy { isolate, disable, fail };
const char* to_string(FailurePolicy p);

struct WireSpec {
  std::string port;
  std::string topic;
  SourceLocation where;
  std::optional<std::size_t> capacity;
  std::optional<OverflowPolicy> overflow;
  bool feedback = false;
  bool in_outputs = false;  ///< written under `outputs:` (else `inputs:`)
};

struct ModuleSpec {
  std::string id;
  SourceLocation where;
  std::string plugin;
  SourceLocation plugin_where;
  ConfigValue::Map config;  ///< as written, plus declared defaults once validated
  std::vector<WireSpec> wires;
  FailurePolicy failure_policy = FailurePolicy::isolate;
  std::shared_ptr<const LoadedPlugin> loaded;  ///< null if the plugin could not be loaded

  const WireSpec* wire(const std::string& port) const {
    for (const auto& w : wires)
      if (w.port == port) return &w;
    return nullptr;
  }
};

struct PipelineSpec {
  fs::path file;
  std::string name;
  std::string description;
  std::string input_topic = "turn.input";
  /// `resources:` by service name, each a map with `kind` and the kind's config (defaults filled in once validated).
  ConfigValue::Map resources;
  std::vector<ModuleSpec> modules;  ///< the chosen output (if the pipeline has an output slot) is the one named `output`
  std::vector<std::string> output_choices;  ///< the names under `outputs:`, in file order
  std::string output_choice;                ///< the one that runs
  SourceLocation output_where;
  std::shared_ptr<PluginRegistry> registry;
};

struct PipelineLoad {
  PipelineSpec spec;
  std::vector<Diagnostic> errors;
  std::vector<Diagnostic> warnings;
  bool ok() const { return errors.empty(); }
};

/// A value set on top of the file before validation: `path` is dotted ("modules.left_brain.config.max_tokens",
/// "resources.model.path", "output"), `yaml` the value as YAML text ("jsonl", "true", "{a: 1}"). Missing maps are
/// created. `modules.*.config.KEY` sets KEY on every module whose plugin declares it (`lal chat --seed` does this).
struct Override {
  std::string path;
  std::string yaml;
};

/// Parse and validate `file`. Plugins are looked up in `extra_plugin_dirs`, then the file's `plugin_path`
/// (relative to the file), then `default_plugin_path()`. Never throws for bad input: problems are diagnostics.
PipelineLoad load_pipeline(const fs::path& file, const std::vector<fs::path>& extra_plugin_dirs = {},
                           const std::vector<Override>& overrides = {});

/// The same, from YAML text (for tests); `file` names it in diagnostics and anchors relative plugin paths.
PipelineLoad load_pipeline_text(const std::string& yaml, const fs::path& file,
                                const std::vector<fs::path>& extra_plugin_dirs = {},
                                const std::vector<Override>& overrides = {});

/// Render the wired pipeline as Graphviz DOT or Mermaid, with message types on the edges.
std::string render_graph(const PipelineSpec& spec, const std::string& format);

}  // namespace lal::runtime
