// lal SDK — a plugin's typed options, declared once: name, type, default, doc and range of every config key.
//
// Write the options as a plain struct whose member initialisers ARE the defaults, and list its fields once:
//
//     struct InsightOptions {
//       std::int64_t window_tokens = 6;
//       double entropy_drop_ratio = 0.35;
//       Language language = Language::ja;
//       static void declare(lal::Options<InsightOptions>& o) {
//         o.field("window_tokens", &InsightOptions::window_tokens, "tokens in each window").min(1);
//         o.field("entropy_drop_ratio", &InsightOptions::entropy_drop_ratio, "after ≤ ratio × before").range(0, 1);
//         o.field("language", &InsightOptions::language, "ja or en")
//             .choices({{"ja", Language::ja}, {"en", Language::en}});
//       }
//     };
//
// From that one declaration:
//   * describe():  `d.options<InsightOptions>()` adds every key to the contract (type, default, doc, range), so
//                  `lal plugins`, `lal plugins --markdown` (each plugin README's config table) and `lal validate`
//                  (type and range checks with file:line:col) know them without running plugin code;
//   * start():     `auto o = ctx.options<InsightOptions>()` returns the struct filled from the validated config.
//
// Field types: bool, any integer, float/double, std::string, std::vector<std::string>, std::vector<double>,
// std::vector<std::int64_t>, an enum (with .choices), or a struct with its own static declare() (.nested: its keys
// join this plugin's, with the defaults of *this* struct's member, so regions can share a settings struct with
// their own defaults). Ranges: .min(x), .max(x), .range(lo, hi) for numbers (and list elements), .one_of({...}) for
// strings (and list elements).
//
// Thread safety: declare() runs at describe() and at options() time; both are pure. No state is kept.
#pragma once

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <limits>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "lal/config.hpp"
#include "lal/contract.hpp"
#include "lal/module.hpp"

namespace lal {

namespace options_detail {

/// Shortest decimal text that reads back as the same double ("0.35", not "0.350000").
inline std::string number_text(double v) {
  if (v > -1e15 && v < 1e15 && v == static_cast<double>(static_cast<long long>(v)))
    return std::to_string(static_cast<long long>(v)) + ".0";  // 600.0, not 6e+02
  for (int precision = 1; precision <= 17; ++precision) {
    std::ostringstream os;
    os.precision(precision);
    os << v;
    if (std::stod(os.str()) == v) {
      std::string s = os.str();
      if (s.find_first_of(".eE") == std::string::npos && s.find("inf") == std::string::npos &&
          s.find("nan") == std::string::npos)
        s += ".0";  // stays a float in YAML
      return s;
    }
  }
  return std::to_string(v);
}

inline std::string quote(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

template <class M>
struct Kind;  // ConfigType, YAML text and reading of a member type M
template <>
struct Kind<bool> {
  static constexpr ConfigType type = ConfigType::boolean;
  static std::string yaml(bool v) { return v ? "true" : "false"; }
  static bool read(const ConfigValue& v) { return v.as_bool(); }
};
template <>
struct Kind<std::string> {
  static constexpr ConfigType type = ConfigType::string;
  static std::string yaml(const std::string& v) { return quote(v); }
  static std::string read(const ConfigValue& v) { return v.as_string(); }
};
template <class E>
struct ListKind {
  static constexpr ConfigType type = ConfigType::list;
  static std::string yaml(const std::vector<E>& v) {
    std::string s = "[";
    for (std::size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + Kind<E>::yaml(v[i]);
    return s + "]";
  }
  static std::vector<E> read(const ConfigValue& v) {
    std::vector<E> out;
    for (const auto& e : v.as_list()) out.push_back(Kind<E>::read(e));
    return out;
  }
};
template <>
struct Kind<std::vector<std::string>> : ListKind<std::string> {
  static constexpr ConfigType element = ConfigType::string;
};
template <>
struct Kind<std::vector<double>> : ListKind<double> {
  static constexpr ConfigType element = ConfigType::number;
};
template <>
struct Kind<std::vector<std::int64_t>> : ListKind<std::int64_t> {
  static constexpr ConfigType element = ConfigType::integer;
};
template <class M>
struct Kind {
  static_assert(std::is_arithmetic_v<M>,
                "option fields: bool, integers, floating point, std::string, lists, enums "
                "(with .choices) or structs with declare() (with .nested)");
  static constexpr ConfigType type = std::is_integral_v<M> ? ConfigType::integer : ConfigType::number;
  static std::string yaml(M v) {
    if constexpr (std::is_integral_v<M>)
      return std::to_string(v);
    else
      return number_text(static_cast<double>(v));
  }
  static M read(const ConfigValue& v) {
    if constexpr (std::is_integral_v<M>)
      return static_cast<M>(v.as_int());
    else
      return static_cast<M>(v.as_number());
  }
};

template <class M, class = void>
struct ElementOf {
  static constexpr ConfigType value = ConfigType::any;
};
template <class M>
struct ElementOf<M, std::void_t<decltype(Kind<M>::element)>> {
  static constexpr ConfigType value = Kind<M>::element;
};

}  // namespace options_detail

/// The declared fields of options struct T (see the file comment).
template <class T>
class Options {
 public:
  struct Field {
    ConfigKeySpec spec;                                  ///< default_yaml is filled from T{} by specs()
    std::function<std::string(const T&)> default_yaml;   ///< the default, as YAML, from a T
    std::function<void(T&, const ConfigValue&)> assign;  ///< read a validated value into a T
  };

  /// Chainable refinements of the field just declared.
  class FieldRef {
   public:
    FieldRef(Options& o, std::size_t i) : o_(o), i_(i) {}
    FieldRef& min(double v) {
      spec().min = v;
      return *this;
    }
    FieldRef& max(double v) {
      spec().max = v;
      return *this;
    }
    FieldRef& range(double lo, double hi) { return min(lo).max(hi); }
    FieldRef& one_of(std::vector<std::string> values) {
      spec().one_of = std::move(values);
      return *this;
    }
    FieldRef& required() {
      spec().required = true;
      return *this;
    }

   private:
    ConfigKeySpec& spec() { return o_.fields_[i_].spec; }
    Options& o_;
    std::size_t i_;
  };

  /// An enum field: its YAML values are the names given here.
  template <class E>
  class EnumRef {
   public:
    EnumRef(Options& o, std::size_t i, E T::*member) : o_(o), i_(i), member_(member) {}
    EnumRef& choices(std::vector<std::pair<std::string, E>> names) {
      auto& f = o_.fields_[i_];
      for (const auto& n : names) f.spec.one_of.push_back(n.first);
      E T::*m = member_;
      f.default_yaml = [names, m](const T& t) {
        for (const auto& n : names)
          if (n.second == t.*m) return options_detail::quote(n.first);
        return std::string();
      };
      f.assign = [names, m](T& t, const ConfigValue& v) {
        for (const auto& n : names)
          if (n.first == v.as_string()) {
            t.*m = n.second;
            return;
          }
        throw ConfigError(v.where().str() + ": '" + v.as_string() + "' is not one of the declared choices");
      };
      return *this;
    }

   private:
    Options& o_;
    std::size_t i_;
    E T::*member_;
  };

  template <class M>
  auto field(std::string name, M T::*member, std::string doc) {
    Field f;
    f.spec.name = std::move(name);
    f.spec.doc = std::move(doc);
    if constexpr (std::is_enum_v<M>) {
      f.spec.type = ConfigType::string;
      fields_.push_back(std::move(f));  // choices() fills in the conversions
      return EnumRef<M>(*this, fields_.size() - 1, member);
    } else {
      using K = options_detail::Kind<M>;
      f.spec.type = K::type;
      f.spec.element = options_detail::ElementOf<M>::value;
      f.default_yaml = [member](const T& t) { return K::yaml(t.*member); };
      f.assign = [member](T& t, const ConfigValue& v) { t.*member = K::read(v); };
      fields_.push_back(std::move(f));
      return FieldRef(*this, fields_.size() - 1);
    }
  }

  /// The fields of a member struct M (with static void declare(Options<M>&)), as keys of T.
  template <class M>
  void nested(M T::*member) {
    Options<M> inner;
    M::declare(inner);
    for (auto& f : inner.fields()) {
      Field g;
      g.spec = f.spec;
      g.default_yaml = [member, d = f.default_yaml](const T& t) { return d(t.*member); };
      g.assign = [member, a = f.assign](T& t, const ConfigValue& v) { a(t.*member, v); };
      fields_.push_back(std::move(g));
    }
  }

  const std::vector<Field>& fields() const { return fields_; }

  /// The config schema: every field with its default taken from a default-constructed T.
  std::vector<ConfigKeySpec> specs() const {
    const T defaults{};
    std::vector<ConfigKeySpec> out;
    for (const auto& f : fields_) {
      ConfigKeySpec s = f.spec;
      if (!f.default_yaml) throw std::logic_error("option '" + s.name + "': an enum field needs .choices(...)");
      if (!s.required) s.default_yaml = f.default_yaml(defaults);
      out.push_back(std::move(s));
    }
    return out;
  }

  /// T filled from a validated config (every declared key present: defaults were filled in by the host).
  T read(const Config& config) const {
    T t{};
    for (const auto& f : fields_) {
      if (!config.has(f.spec.name)) continue;
      try {
        f.assign(t, config.at(f.spec.name));
      } catch (const ConfigError& e) {
        throw ConfigError("config key '" + f.spec.name + "': " + e.what());
      }
    }
    return t;
  }

 private:
  std::vector<Field> fields_;
};

/// The declared options of T (T::declare).
template <class T>
Options<T> declared_options() {
  Options<T> o;
  T::declare(o);
  return o;
}

template <class T>
PluginDescriptor& PluginDescriptor::options() {
  for (auto& spec : declared_options<T>().specs()) config.push_back(std::move(spec));
  return *this;
}

template <class T>
T Context::options() const {
  return declared_options<T>().read(config());
}

}  // namespace lal
