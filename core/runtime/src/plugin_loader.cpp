#include "lal/runtime/plugin_loader.hpp"

#include <boost/dll/runtime_symbol_info.hpp>
#include <boost/dll/shared_library.hpp>
#include <dlfcn.h>
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <sstream>

namespace lal::runtime {

namespace {

std::string plugin_name_of(const fs::path& file) {
  std::string stem = file.stem().string();
  if (stem.rfind("lib", 0) == 0) stem = stem.substr(3);
  return stem;
}

bool looks_like_plugin_file(const fs::path& p) {
  const std::string name = p.filename().string();
  return name.rfind("lib", 0) == 0 && p.extension() == ".so";
}

}  // namespace

ModuleInstance::ModuleInstance(std::shared_ptr<const LoadedPlugin> plugin) : plugin_(std::move(plugin)) {
  module_ = plugin_->entry->create();
  if (!module_) throw PluginError("plugin '" + plugin_->name + "' (" + plugin_->file.string() + ") created no module");
}

ModuleInstance::~ModuleInstance() {
  if (module_) plugin_->entry->destroy(module_);
}

PluginRegistry::PluginRegistry(std::vector<fs::path> search_path) {
  for (auto& p : search_path) {
    std::error_code ec;
    fs::path canon = fs::weakly_canonical(p, ec);
    if (ec) canon = p;
    if (std::find(search_path_.begin(), search_path_.end(), canon) == search_path_.end())
      search_path_.push_back(std::move(canon));
  }
}

std::shared_ptr<const LoadedPlugin> PluginRegistry::load_file(const fs::path& file) {
  auto lib = std::make_shared<boost::dll::shared_library>();
  boost::dll::fs::error_code ec;
  lib->load(boost::dll::fs::path(file.string()), boost::dll::load_mode::rtld_now | boost::dll::load_mode::rtld_local,
            ec);
  if (ec || !lib->is_loaded()) {
    // Boost.DLL keeps only an error code; ask the dynamic loader once more for its own explanation.
    std::string detail = ec.message();
    if (void* h = dlopen(file.c_str(), RTLD_NOW | RTLD_LOCAL)) {
      dlclose(h);
    } else if (const char* why = dlerror()) {
      detail = why;
    }
    throw PluginError(file.string() + ": cannot load library: " + detail);
  }
  if (!lib->has("lal_plugin_entry"))
    throw PluginError(file.string() + ": not a lal plugin (no lal_plugin_entry symbol; export it with LAL_PLUGIN)");
  auto entry_fn = lib->get_alias<const PluginEntry*()>("lal_plugin_entry");
  const PluginEntry* entry = entry_fn();
  if (!entry) throw PluginError(file.string() + ": lal_plugin_entry returned null");
  // Only the frozen fields may be read before these checks pass.
  if (entry->abi_version != LAL_SDK_ABI_VERSION)
    throw PluginError(file.string() + ": plugin built for lal SDK ABI " + std::to_string(entry->abi_version) +
                      ", but this host speaks ABI " + std::to_string(LAL_SDK_ABI_VERSION) +
                      "; rebuild the plugin against this lal SDK");
  if (!entry->toolchain || std::strcmp(entry->toolchain, toolchain_tag()) != 0)
    throw PluginError(file.string() + ": plugin built with C++ runtime '" +
                      std::string(entry->toolchain ? entry->toolchain : "?") + "', host uses '" + toolchain_tag() +
                      "'; rebuild the plugin with a compatible compiler");
  auto loaded = std::make_shared<LoadedPlugin>();
  loaded->file = file;
  loaded->library = std::move(lib);
  loaded->entry = entry;
  loaded->descriptor = &entry->describe();
  loaded->name = loaded->descriptor->name;
  if (loaded->name != plugin_name_of(file))
    throw PluginError(file.string() + ": plugin describes itself as '" + loaded->name +
                      "' but the file is named for '" + plugin_name_of(file) +
                      "'; name the library lib<name>.so");
  return loaded;
}

std::shared_ptr<const LoadedPlugin> PluginRegistry::load(const std::string& name) {
  std::lock_guard<std::mutex> lk(mutex_);
  if (auto it = cache_.find(name); it != cache_.end()) return it->second;
  for (const auto& dir : search_path_) {
    const fs::path file = dir / ("lib" + name + ".so");
    std::error_code ec;
    if (fs::is_regular_file(file, ec)) {
      auto loaded = load_file(file);
      cache_[name] = loaded;
      return loaded;
    }
  }
  std::ostringstream msg;
  msg << "unknown plugin '" << name << "'";
  if (auto s = closest(name, available_names())) msg << " (did you mean '" << *s << "'?)";
  msg << "; looked for lib" << name << ".so in:";
  if (search_path_.empty()) msg << " (empty search path)";
  for (const auto& dir : search_path_) msg << " " << dir.string();
  throw PluginError(msg.str());
}

std::vector<std::string> PluginRegistry::available_names() const {
  std::vector<std::string> names;
  for (const auto& dir : search_path_) {
    std::error_code ec;
    for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec))
      if (looks_like_plugin_file(it->path())) names.push_back(plugin_name_of(it->path()));
  }
  std::sort(names.begin(), names.end());
  names.erase(std::unique(names.begin(), names.end()), names.end());
  return names;
}

std::optional<std::string> PluginRegistry::suggest(const std::string& name) const {
  return closest(name, available_names());
}

std::vector<DiscoveredPlugin> PluginRegistry::discover() {
  std::vector<DiscoveredPlugin> out;
  std::vector<std::string> seen;
  for (const auto& dir : search_path_) {
    std::error_code ec;
    std::vector<fs::path> files;
    for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec))
      if (looks_like_plugin_file(it->path())) files.push_back(it->path());
    std::sort(files.begin(), files.end());
    for (const auto& f : files) {
      const std::string name = plugin_name_of(f);
      if (std::find(seen.begin(), seen.end(), name) != seen.end()) continue;  // shadowed by an earlier directory
      seen.push_back(name);
      DiscoveredPlugin d;
      d.file = f;
      try {
        d.plugin = load(name);
      } catch (const std::exception& e) {
        d.error = e.what();
      }
      out.push_back(std::move(d));
    }
  }
  return out;
}

std::vector<fs::path> default_plugin_path() {
  std::vector<fs::path> path;
  if (const char* env = std::getenv("LAL_PLUGIN_PATH")) {
    std::stringstream ss(env);
    std::string item;
    while (std::getline(ss, item, ':'))
      if (!item.empty()) path.emplace_back(item);
  }
  boost::dll::fs::error_code ec;
  const auto exe = boost::dll::program_location(ec);
  if (!ec) path.push_back(fs::path(exe.parent_path().string()) / ".." / "lib" / "lal" / "plugins");
  for (auto& p : path) {
    std::error_code e2;
    auto canon = fs::weakly_canonical(p, e2);
    if (!e2) p = canon;
  }
  return path;
}

std::size_t edit_distance(const std::string& a, const std::string& b) {
  // Optimal string alignment distance: insertions, deletions, substitutions and adjacent transpositions ("nmae").
  // Three rolling rows (the transposition looks two rows back): memory O(|b|), not a |a|×|b| matrix.
  std::vector<std::size_t> before(b.size() + 1), prev(b.size() + 1), cur(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) cur[j] = std::min(cur[j], before[j - 2] + 1);
    }
    std::swap(before, prev);
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

std::optional<std::string> closest(const std::string& word, const std::vector<std::string>& candidates) {
  const std::size_t limit = std::max<std::size_t>(1, std::min<std::size_t>(3, word.size() / 3));
  std::optional<std::string> best;
  std::size_t best_d = limit + 1;
  for (const auto& c : candidates) {
    // The distance is at least the difference in length: a candidate that far off cannot be suggested, and a long
    // unknown word (pasted text, a fuzzed key) costs nothing against a list of short keys.
    const std::size_t length_gap = c.size() > word.size() ? c.size() - word.size() : word.size() - c.size();
    if (length_gap >= best_d) continue;
    const std::size_t d = edit_distance(word, c);
    if (d < best_d) {
      best_d = d;
      best = c;
    }
  }
  return best;
}

}  // namespace lal::runtime
