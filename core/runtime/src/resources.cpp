#include "lal/runtime/resources.hpp"

#include <stdexcept>

#include "lal/runtime/pipeline.hpp"

namespace lal::runtime {

void ResourceKinds::add(ResourceKind kind) {
  if (kind.kind.empty() || !kind.create) throw std::invalid_argument("a resource kind needs a name and a factory");
  std::lock_guard<std::mutex> lk(mutex_);
  auto name = kind.kind;
  kinds_[name] = std::make_shared<const ResourceKind>(std::move(kind));
}

std::shared_ptr<const ResourceKind> ResourceKinds::find(const std::string& kind) const {
  std::lock_guard<std::mutex> lk(mutex_);
  auto it = kinds_.find(kind);
  return it == kinds_.end() ? nullptr : it->second;
}

std::vector<std::string> ResourceKinds::names() const {
  std::lock_guard<std::mutex> lk(mutex_);
  std::vector<std::string> out;
  for (const auto& [name, _] : kinds_) out.push_back(name);
  return out;
}

ResourceKinds& resource_kinds() {
  static ResourceKinds kinds;
  return kinds;
}

ResourceSet create_resources(const PipelineSpec& spec, const ResourceSet& existing, const ResourceKinds& kinds) {
  ResourceSet out = existing;
  for (const auto& [name, decl] : spec.resources) {
    if (out.count(name)) continue;
    // load_pipeline checked the declaration and wrote its kind back; a hand-built spec may not have.
    if (!decl.is_map() || !decl.as_map().count("kind") || !decl.as_map().at("kind").is_string())
      throw std::runtime_error(decl.where().str() + ": resource '" + name + "' was not validated (no `kind`)");
    const std::string kind_name = decl.as_map().at("kind").as_string();
    auto kind = kinds.find(kind_name);
    if (!kind)
      throw std::runtime_error(decl.where().str() + ": resource '" + name + "': no factory for kind '" + kind_name +
                               "' in this program");
    ConfigValue::Map values = decl.as_map();
    values.erase("kind");
    std::shared_ptr<void> service;
    try {
      service = kind->create(name, Config("resource " + name, std::move(values)));
    } catch (const std::exception& e) {
      throw std::runtime_error(decl.where().str() + ": resource '" + name + "' (" + kind_name + "): " + e.what());
    }
    if (!service)
      throw std::runtime_error(decl.where().str() + ": resource '" + name + "' (" + kind_name + ") was not created");
    out[name] = Resource{name, kind, std::move(service)};
  }
  return out;
}

}  // namespace lal::runtime
