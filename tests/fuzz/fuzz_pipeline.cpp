// libFuzzer target: pipeline YAML parsing and validation (lal validate's path), against the real plugins of the
// build (LAL_FUZZ_PLUGIN_DIR). Contract: load_pipeline_text never throws; every problem is a diagnostic with a
// location. A crash, a leak, undefined behaviour, an exception or unbounded time/memory (the alias bomb) is a finding.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "lal/runtime/pipeline.hpp"

/// Plugins stay mapped for the life of the fuzzer. libFuzzer registers the coverage counters of every instrumented
/// library when it is loaded and reads them after every input; a plugin unloaded by dlclose() leaves it reading
/// unmapped memory (a SEGV inside libFuzzer, not in lal). Boost.DLL is compiled into this program, so its calls
/// bind to this definition.
extern "C" int dlclose(void*) { return 0; }

namespace {
/// The plugins the corpus names, loaded once and kept: each input's registry then finds them already mapped
/// (dlopen of a loaded library is a reference count), so an execution costs parsing and validation, not file I/O.
void keep_plugins_loaded() {
  static lal::runtime::PluginRegistry registry({LAL_FUZZ_PLUGIN_DIR});
  static const auto kept = [] {
    std::vector<std::shared_ptr<const lal::runtime::LoadedPlugin>> v;
    for (const char* name : {"working_memory", "first_impression", "transcript"}) v.push_back(registry.load(name));
    return v;
  }();
  (void)kept;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  keep_plugins_loaded();
  const std::string yaml(reinterpret_cast<const char*>(data), size);
  const auto load = lal::runtime::load_pipeline_text(yaml, "fuzz.yaml", {LAL_FUZZ_PLUGIN_DIR});
  for (const auto& e : load.errors)
    if (e.message.empty()) __builtin_trap();                     // every refusal says why
  if (load.ok() && load.spec.modules.empty()) __builtin_trap();  // a valid pipeline has modules
  return 0;
}
