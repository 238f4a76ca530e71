// libFuzzer target: pipeline YAML parsing and validation (lal validate's path), against the real plugins of the
// build (LAL_FUZZ_PLUGIN_DIR; the environment variable of that name points elsewhere, e.g. where a campaign on
// another machine unpacked them: tests/fuzz/stage_campaign.sh). Contract: load_pipeline_text never throws; every
// problem is a diagnostic with a location. A crash, a leak, undefined behaviour, an exception or unbounded time/memory
// (the alias bomb) is a finding.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
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
const std::filesystem::path& plugin_dir() {
  static const std::filesystem::path dir = [] {
    const char* moved = std::getenv("LAL_FUZZ_PLUGIN_DIR");
    return std::filesystem::path(moved && *moved ? moved : LAL_FUZZ_PLUGIN_DIR);
  }();
  return dir;
}

/// The plugins the corpus names, loaded once and kept: each input's registry then finds them already mapped
/// (dlopen of a loaded library is a reference count), so an execution costs parsing and validation, not file I/O.
void keep_plugins_loaded() {
  static lal::runtime::PluginRegistry registry({plugin_dir()});
  static const auto kept = [] {
    std::vector<std::shared_ptr<const lal::runtime::LoadedPlugin>> v;
    try {
      for (const char* name : {"working_memory", "first_impression", "transcript"}) v.push_back(registry.load(name));
    } catch (const lal::runtime::PluginError& e) {  // a setup problem, not a finding: say so and stop
      std::fprintf(stderr, "fuzz_pipeline: %s (point LAL_FUZZ_PLUGIN_DIR at the build's lib/lal/plugins)\n", e.what());
      std::_Exit(2);
    }
    return v;
  }();
  (void)kept;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  keep_plugins_loaded();
  const std::string yaml(reinterpret_cast<const char*>(data), size);
  const auto load = lal::runtime::load_pipeline_text(yaml, "fuzz.yaml", {plugin_dir()});
  for (const auto& e : load.errors)
    if (e.message.empty()) __builtin_trap();                     // every refusal says why
  if (load.ok() && load.spec.modules.empty()) __builtin_trap();  // a valid pipeline has modules
  return 0;
}
