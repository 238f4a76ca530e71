// lal runtime — finding and loading plugin shared libraries (Boost.DLL).
//
// A plugin named `foo` is the file `libfoo.so` in one of the search-path directories, searched in order. Loading
// checks the library's ABI version and toolchain tag before calling anything else in it (see <lal/plugin.hpp>).
// A LoadedPlugin keeps its library mapped; every module created from it holds a reference, so the library is
// unloaded only after the last module object was destroyed by the plugin's own deleter.
#pragma once

#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "lal/plugin.hpp"

namespace boost::dll {
class shared_library;
}

namespace lal::runtime {

namespace fs = std::filesystem;

class PluginError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct LoadedPlugin {
  std::string name;
  fs::path file;
  std::shared_ptr<boost::dll::shared_library> library;
  const PluginEntry* entry = nullptr;
  const PluginDescriptor* descriptor = nullptr;
};

/// A module object created by a plugin; destroys it through the plugin's deleter and keeps the library alive
/// until then.
class ModuleInstance {
 public:
  explicit ModuleInstance(std::shared_ptr<const LoadedPlugin> plugin);
  ~ModuleInstance();
  ModuleInstance(const ModuleInstance&) = delete;
  ModuleInstance& operator=(const ModuleInstance&) = delete;
  Module& module() { return *module_; }
  const LoadedPlugin& plugin() const { return *plugin_; }

 private:
  std::shared_ptr<const LoadedPlugin> plugin_;
  Module* module_ = nullptr;
};

/// One entry of `discover()`: a loadable plugin, or a library that was refused and why.
struct DiscoveredPlugin {
  fs::path file;
  std::shared_ptr<const LoadedPlugin> plugin;  ///< null when refused
  std::string error;
};

class PluginRegistry {
 public:
  explicit PluginRegistry(std::vector<fs::path> search_path);

  const std::vector<fs::path>& search_path() const { return search_path_; }

  /// Load plugin `name` from the search path (cached). Throws PluginError naming every directory searched, and a
  /// close name when there is one; or the ABI/toolchain mismatch.
  std::shared_ptr<const LoadedPlugin> load(const std::string& name);

  /// Load a library file directly. Throws PluginError (not a lal plugin, ABI mismatch, dlopen error).
  static std::shared_ptr<const LoadedPlugin> load_file(const fs::path& file);

  /// Every lib*.so in the search path, loaded or with the reason it was refused. Earlier directories win.
  std::vector<DiscoveredPlugin> discover();

  /// Plugin names available in the search path (file names, without loading them).
  std::vector<std::string> available_names() const;

  /// The available name closest to `name` (edit distance ≤ 3), if any.
  std::optional<std::string> suggest(const std::string& name) const;

 private:
  std::vector<fs::path> search_path_;
  std::mutex mutex_;
  std::map<std::string, std::shared_ptr<const LoadedPlugin>> cache_;
};

/// The default plugin search path: $LAL_PLUGIN_PATH (colon-separated), then <dir of the lal executable>/../lib/lal/plugins.
std::vector<fs::path> default_plugin_path();

/// Levenshtein distance, for "did you mean" suggestions.
std::size_t edit_distance(const std::string& a, const std::string& b);

/// The closest of `candidates` to `word` within edit distance ≤ max(1, min(3, |word|/3)), if any.
std::optional<std::string> closest(const std::string& word, const std::vector<std::string>& candidates);

}  // namespace lal::runtime
