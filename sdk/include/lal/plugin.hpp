// lal SDK — the one entry point of a plugin shared library.
//
// A plugin library defines exactly one module type and its contract, and exports them with one macro:
//
//     #include <lal/plugin.hpp>
//     class WorkingMemory : public lal::Module { ... };
//     static lal::PluginDescriptor describe() { ... }
//     LAL_PLUGIN(WorkingMemory, describe)
//
// The macro exports a single symbol, `lal_plugin_entry` (through Boost.DLL's alias mechanism), returning a
// `lal::PluginEntry`. Build plugins with hidden visibility (the CMake helper `lal_add_plugin` does): only the entry
// is visible, so two plugins may use the same internal names without clashing.
//
// How the host uses it (core/runtime/plugin_loader):
//   1. dlopen the library and find `lal_plugin_entry`; a library without it is not a lal plugin.
//   2. read `abi_version` and `toolchain` — the only fields whose layout is frozen forever — and refuse the plugin
//      with a message naming both versions if they differ from the host's. Nothing else is touched before that.
//   3. call `describe()` (any thread, any number of times; returns a reference to a static descriptor).
//   4. for each pipeline module using the plugin: `create()`, then Module::start/stop, then `destroy()`.
//   5. unload the library only after every module it created was destroyed.
#pragma once

#include <boost/config.hpp>
#include <boost/dll/alias.hpp>
#include <cstdint>

#include "lal/abi.hpp"
#include "lal/contract.hpp"
#include "lal/messages.hpp"
#include "lal/module.hpp"
#include "lal/options.hpp"

namespace lal {

struct PluginEntry {
  // --- frozen layout: never reorder or change these two ---
  std::uint32_t abi_version;  ///< LAL_SDK_ABI_VERSION the plugin was compiled with
  const char* toolchain;      ///< lal::toolchain_tag() of the plugin's compiler
  // --- valid only when the two above match the host ---
  const PluginDescriptor& (*describe)();
  Module* (*create)();
  void (*destroy)(Module*);
};

}  // namespace lal

/// Export `ModuleType` (default-constructible, derived from lal::Module) with the contract returned by
/// `describe_fn` (a function returning lal::PluginDescriptor, called once).
#define LAL_PLUGIN(ModuleType, describe_fn)                                                       \
  namespace {                                                                                   \
  const ::lal::PluginDescriptor& lal_plugin_describe_() {                                       \
    static const ::lal::PluginDescriptor descriptor = describe_fn();                            \
    return descriptor;                                                                          \
  }                                                                                             \
  ::lal::Module* lal_plugin_create_() { return new ModuleType(); }                              \
  void lal_plugin_destroy_(::lal::Module* m) { delete m; }                                      \
  }                                                                                             \
  namespace lal_plugin_export {                                                                 \
  const ::lal::PluginEntry* lal_plugin_entry_fn() {                                             \
    static const ::lal::PluginEntry entry{LAL_SDK_ABI_VERSION, ::lal::toolchain_tag(),          \
                                          &lal_plugin_describe_, &lal_plugin_create_,           \
                                          &lal_plugin_destroy_};                                \
    return &entry;                                                                              \
  }                                                                                             \
  }                                                                                             \
  BOOST_DLL_ALIAS(lal_plugin_export::lal_plugin_entry_fn, lal_plugin_entry)
