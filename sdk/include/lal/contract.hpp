// lal SDK — a plugin's declared contract: what it is, which typed ports it has, which config keys it accepts.
//
// The contract is data, returned by the plugin's `describe()` without constructing a module. `lal plugins`,
// `lal validate` and `lal graph` read it to list, check and draw pipelines without running plugin code, and the host
// refuses at load time any wiring the contract does not allow (unknown port, type mismatch, unknown config key).
//
// Build one with the small fluent helpers:
//
//     lal::PluginDescriptor d{"working_memory", lal::ModuleKind::memory_tier, "0.1.0",
//                             "Working memory: 7±2 chunks, displaced by activation"};
//     d.input<lal::Percept>("percept", "what the user said")
//      .serves<lal::RecallRequest, lal::RecallReply>("recall", "answers recall requests")
//      .config_int("capacity", 7, "chunks held before the least active is displaced");
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "lal/message.hpp"

namespace lal {

/// What role a module plays in a brain pipeline. Purely descriptive for the host (it treats all kinds alike), but
/// shown by `lal plugins` and used by pipelines and docs to group modules.
enum class ModuleKind { brain_region, memory_tier, output_strategy, service, other };

inline const char* to_string(ModuleKind k) {
  switch (k) {
    case ModuleKind::brain_region: return "brain_region";
    case ModuleKind::memory_tier: return "memory_tier";
    case ModuleKind::output_strategy: return "output_strategy";
    case ModuleKind::service: return "service";
    case ModuleKind::other: return "other";
  }
  return "other";
}

/// Direction of a port.
///  * input  — the module subscribes to a topic carrying `type`.
///  * output — the module publishes `type` on a topic.
///  * server — the module answers requests of `type` with replies of `reply_type` (request/reply).
///  * client — the module sends requests of `type` and expects `reply_type` back.
enum class PortDirection { input, output, server, client };

inline const char* to_string(PortDirection d) {
  switch (d) {
    case PortDirection::input: return "input";
    case PortDirection::output: return "output";
    case PortDirection::server: return "server";
    case PortDirection::client: return "client";
  }
  return "input";
}

/// What a subscriber's mailbox does when it is full and another message arrives.
///  * block       — the publisher waits until there is room (back-pressure; nothing is lost). Do not use for a
///                  topic that the subscriber itself publishes to, directly or through others: it can deadlock.
///  * drop_oldest — the oldest queued message is discarded to make room (counted as a drop).
///  * drop_newest — the arriving message is discarded (counted as a drop).
///  * keep_latest — only the newest message is kept; older queued ones are discarded (state-like topics, e.g.
///                  emotion.state, where only the current value matters).
enum class OverflowPolicy { block, drop_oldest, drop_newest, keep_latest };

inline const char* to_string(OverflowPolicy p) {
  switch (p) {
    case OverflowPolicy::block: return "block";
    case OverflowPolicy::drop_oldest: return "drop_oldest";
    case OverflowPolicy::drop_newest: return "drop_newest";
    case OverflowPolicy::keep_latest: return "keep_latest";
  }
  return "block";
}

struct PortSpec {
  std::string name;              ///< port name, unique within the module ("percept", "thought")
  PortDirection direction = PortDirection::input;
  std::string type;              ///< message type name ("lal.Percept/1"); the request type for server/client
  std::string reply_type;        ///< server/client only: the reply type name
  std::string doc;               ///< one line for `lal plugins`
  bool optional = false;         ///< an unwired optional input/client is not an error
  std::size_t capacity = 1024;   ///< mailbox capacity (input/server); a pipeline may override it per wiring
  OverflowPolicy overflow = OverflowPolicy::block;  ///< default policy; a pipeline may override it
};

/// Value types a config key may have. `integer` accepts YAML ints; `number` accepts ints and floats.
enum class ConfigType { boolean, integer, number, string, list, map, any };

inline const char* to_string(ConfigType t) {
  switch (t) {
    case ConfigType::boolean: return "bool";
    case ConfigType::integer: return "int";
    case ConfigType::number: return "number";
    case ConfigType::string: return "string";
    case ConfigType::list: return "list";
    case ConfigType::map: return "map";
    case ConfigType::any: return "any";
  }
  return "any";
}

struct ConfigKeySpec {
  std::string name;
  ConfigType type = ConfigType::any;
  bool required = false;
  std::string default_yaml;  ///< default value as YAML text ("7", "true", "\"ja\""); empty = no default
  std::string doc;
  /// Ranges, checked by the host at load time (and so by `lal validate`). For a list they apply to each element.
  std::optional<double> min, max;      ///< numbers: inclusive bounds
  std::vector<std::string> one_of;     ///< strings: the allowed values (empty = any)
  ConfigType element = ConfigType::any;  ///< lists: the type of each element

  static ConfigKeySpec optional(std::string name, ConfigType type, std::string default_yaml, std::string doc) {
    ConfigKeySpec k;
    k.name = std::move(name);
    k.type = type;
    k.default_yaml = std::move(default_yaml);
    k.doc = std::move(doc);
    return k;
  }
  static ConfigKeySpec mandatory(std::string name, ConfigType type, std::string doc) {
    ConfigKeySpec k = optional(std::move(name), type, {}, std::move(doc));
    k.required = true;
    return k;
  }
};

/// Everything the host needs to know about a plugin before creating it.
struct PluginDescriptor {
  std::string name;          ///< how pipelines refer to it (`plugin: working_memory`); [a-z0-9_]+
  ModuleKind kind = ModuleKind::other;
  std::string version;       ///< the plugin's own version ("0.1.0")
  std::string description;   ///< one line
  std::vector<PortSpec> ports;
  std::vector<ConfigKeySpec> config;

  PluginDescriptor() = default;
  PluginDescriptor(std::string n, ModuleKind k, std::string v, std::string desc)
      : name(std::move(n)), kind(k), version(std::move(v)), description(std::move(desc)) {}

  template <class T>
  PluginDescriptor& input(std::string port, std::string doc = {}, OverflowPolicy policy = OverflowPolicy::block,
                          std::size_t capacity = 1024, bool is_optional = false) {
    return add_port(std::move(port), PortDirection::input, type_name<T>(), {}, std::move(doc), policy, capacity,
                    is_optional);
  }
  template <class T>
  PluginDescriptor& optional_input(std::string port, std::string doc = {},
                                   OverflowPolicy policy = OverflowPolicy::block, std::size_t capacity = 1024) {
    return input<T>(std::move(port), std::move(doc), policy, capacity, true);
  }
  template <class T>
  PluginDescriptor& output(std::string port, std::string doc = {}) {
    return add_port(std::move(port), PortDirection::output, type_name<T>(), {}, std::move(doc),
                    OverflowPolicy::block, 0, false);
  }
  template <class Req, class Rep>
  PluginDescriptor& serves(std::string port, std::string doc = {}, std::size_t capacity = 1024) {
    return add_port(std::move(port), PortDirection::server, type_name<Req>(), type_name<Rep>(), std::move(doc),
                    OverflowPolicy::block, capacity, false);
  }
  template <class Req, class Rep>
  PluginDescriptor& requests(std::string port, std::string doc = {}, bool is_optional = false) {
    return add_port(std::move(port), PortDirection::client, type_name<Req>(), type_name<Rep>(), std::move(doc),
                    OverflowPolicy::block, 0, is_optional);
  }

  /// Every field of the options struct T (see lal/options.hpp): the way to declare config, once.
  template <class T>
  PluginDescriptor& options();

  PluginDescriptor& config_key(std::string key, ConfigType type, std::string default_yaml, std::string doc,
                               bool required = false) {
    ConfigKeySpec k = ConfigKeySpec::optional(std::move(key), type, std::move(default_yaml), std::move(doc));
    k.required = required;
    config.push_back(std::move(k));
    return *this;
  }
  PluginDescriptor& config_bool(std::string key, bool def, std::string doc) {
    return config_key(std::move(key), ConfigType::boolean, def ? "true" : "false", std::move(doc));
  }
  PluginDescriptor& config_int(std::string key, long long def, std::string doc) {
    return config_key(std::move(key), ConfigType::integer, std::to_string(def), std::move(doc));
  }
  PluginDescriptor& config_number(std::string key, double def, std::string doc) {
    return config_key(std::move(key), ConfigType::number, std::to_string(def), std::move(doc));
  }
  PluginDescriptor& config_string(std::string key, std::string def, std::string doc) {
    return config_key(std::move(key), ConfigType::string, quote(def), std::move(doc));
  }
  PluginDescriptor& config_required(std::string key, ConfigType type, std::string doc) {
    return config_key(std::move(key), type, {}, std::move(doc), true);
  }

  const PortSpec* find_port(const std::string& port) const {
    for (const auto& p : ports)
      if (p.name == port) return &p;
    return nullptr;
  }
  const ConfigKeySpec* find_config(const std::string& key) const {
    for (const auto& c : config)
      if (c.name == key) return &c;
    return nullptr;
  }

 private:
  PluginDescriptor& add_port(std::string port, PortDirection dir, const char* type, const char* reply,
                             std::string doc, OverflowPolicy policy, std::size_t capacity, bool is_optional) {
    PortSpec p;
    p.name = std::move(port);
    p.direction = dir;
    p.type = type;
    p.reply_type = reply ? reply : "";
    p.doc = std::move(doc);
    p.optional = is_optional;
    p.capacity = capacity;
    p.overflow = policy;
    ports.push_back(std::move(p));
    return *this;
  }
  static std::string quote(const std::string& s) {
    std::string out = "\"";
    for (char c : s) {
      if (c == '"' || c == '\\') out += '\\';
      out += c;
    }
    return out + "\"";
  }
};

}  // namespace lal
