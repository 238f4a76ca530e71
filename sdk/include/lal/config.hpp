// lal SDK — a module's configuration, as typed values with their source location.
//
// The host parses the pipeline YAML, checks every key against the plugin's declared schema (unknown keys, wrong
// types, missing required keys are load-time errors with file:line:col), fills in declared defaults, and hands the
// module a `Config`. A module therefore normally reads keys it declared with `get<T>()` and never sees bad input.
// Reading an undeclared key, or asking for the wrong type, throws `lal::ConfigError` whose message names the module,
// the key, the expected and actual types and where in which file the value came from.
//
// Lifetime: the Config outlives the module (owned by the host). Thread safety: immutable, read from any thread.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <variant>
#include <vector>

namespace lal {

/// Where a value came from (1-based line and column, as editors show them). `file` empty = not from a file.
struct SourceLocation {
  std::string file;
  int line = 0;
  int column = 0;

  std::string str() const {
    if (file.empty()) return "<built-in>";
    return file + ":" + std::to_string(line) + ":" + std::to_string(column);
  }
};

class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// One config value: null, bool, int, float, string, list or map, with the place it was written.
class ConfigValue {
 public:
  using List = std::vector<ConfigValue>;
  using Map = std::map<std::string, ConfigValue>;
  using Storage = std::variant<std::monostate, bool, std::int64_t, double, std::string, List, Map>;

  ConfigValue() = default;
  ConfigValue(Storage v, SourceLocation where = {}) : value_(std::move(v)), where_(std::move(where)) {}

  bool is_null() const { return std::holds_alternative<std::monostate>(value_); }
  bool is_bool() const { return std::holds_alternative<bool>(value_); }
  bool is_int() const { return std::holds_alternative<std::int64_t>(value_); }
  bool is_number() const { return is_int() || std::holds_alternative<double>(value_); }
  bool is_string() const { return std::holds_alternative<std::string>(value_); }
  bool is_list() const { return std::holds_alternative<List>(value_); }
  bool is_map() const { return std::holds_alternative<Map>(value_); }

  /// "null", "bool", "int", "number", "string", "list" or "map".
  const char* type_str() const {
    static const char* names[] = {"null", "bool", "int", "number", "string", "list", "map"};
    return names[value_.index()];
  }

  const SourceLocation& where() const { return where_; }
  const Storage& storage() const { return value_; }

  bool as_bool() const { return expect<bool>("bool"); }
  std::int64_t as_int() const { return expect<std::int64_t>("int"); }
  double as_number() const {
    if (is_int()) return static_cast<double>(std::get<std::int64_t>(value_));
    return expect<double>("number");
  }
  const std::string& as_string() const { return expect<std::string>("string"); }
  const List& as_list() const { return expect<List>("list"); }
  const Map& as_map() const { return expect<Map>("map"); }

 private:
  template <class T>
  const T& expect(const char* wanted) const {
    if (auto* p = std::get_if<T>(&value_)) return *p;
    throw ConfigError(where_.str() + ": expected " + wanted + ", found " + type_str());
  }

  Storage value_;
  SourceLocation where_;
};

/// A module's configuration: a map from key to value. Defaults declared in the plugin's contract are filled in.
class Config {
 public:
  Config() = default;
  Config(std::string owner, ConfigValue::Map values) : owner_(std::move(owner)), values_(std::move(values)) {}

  bool has(const std::string& key) const { return values_.count(key) != 0; }
  const ConfigValue::Map& values() const { return values_; }

  /// The raw value of `key`; throws ConfigError if absent.
  const ConfigValue& at(const std::string& key) const {
    auto it = values_.find(key);
    if (it == values_.end())
      throw ConfigError("module '" + owner_ + "': config key '" + key +
                        "' is not set and has no default (declare it in the plugin descriptor)");
    return it->second;
  }

  /// Typed access: T is bool, int, long, std::int64_t, double, float, std::string,
  /// std::vector<std::string>, std::vector<double> or ConfigValue.
  template <class T>
  T get(const std::string& key) const {
    const ConfigValue& v = at(key);
    try {
      return convert<T>(v);
    } catch (const ConfigError& e) {
      throw ConfigError("module '" + owner_ + "': config key '" + key + "': " + e.what());
    }
  }

  /// Like get<T>, but `fallback` when the key is absent.
  template <class T>
  T get_or(const std::string& key, T fallback) const {
    return has(key) ? get<T>(key) : fallback;
  }

 private:
  template <class T>
  static T convert(const ConfigValue& v) {
    if constexpr (std::is_same_v<T, ConfigValue>) {
      return v;
    } else if constexpr (std::is_same_v<T, bool>) {
      return v.as_bool();
    } else if constexpr (std::is_integral_v<T>) {
      return static_cast<T>(v.as_int());
    } else if constexpr (std::is_floating_point_v<T>) {
      return static_cast<T>(v.as_number());
    } else if constexpr (std::is_same_v<T, std::string>) {
      return v.as_string();
    } else if constexpr (std::is_same_v<T, std::vector<std::string>>) {
      std::vector<std::string> out;
      for (const auto& e : v.as_list()) out.push_back(e.as_string());
      return out;
    } else if constexpr (std::is_same_v<T, std::vector<double>>) {
      std::vector<double> out;
      for (const auto& e : v.as_list()) out.push_back(e.as_number());
      return out;
    } else {
      static_assert(sizeof(T) == 0, "unsupported type for Config::get");
    }
  }

  std::string owner_;
  ConfigValue::Map values_;
};

}  // namespace lal
