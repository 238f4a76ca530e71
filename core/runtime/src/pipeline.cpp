#include "lal/runtime/pipeline.hpp"

#include <yaml-cpp/depthguard.h>
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>

#include "lal/checks/input_limits.hpp"
#include "lal/messages.hpp"
#include "lal/runtime/resources.hpp"

namespace lal::runtime {

const char* to_string(FailurePolicy p) {
  switch (p) {
    case FailurePolicy::isolate: return "isolate";
    case FailurePolicy::disable: return "disable";
    case FailurePolicy::fail: return "fail";
  }
  return "isolate";
}

namespace {

std::string join(const std::vector<std::string>& items, const std::string& sep = ", ") {
  std::string out;
  for (const auto& i : items) out += (out.empty() ? "" : sep) + i;
  return out;
}

class Validator {
 public:
  Validator(PipelineLoad& out, std::string file) : out_(out), file_(std::move(file)) {}

  SourceLocation at(const YAML::Node& n) const {
    const YAML::Mark m = n.Mark();
    if (m.line < 0) return SourceLocation{file_, 1, 1};
    return SourceLocation{file_, m.line + 1, m.column + 1};
  }
  SourceLocation at(const YAML::Mark& m) const { return SourceLocation{file_, m.line + 1, m.column + 1}; }
  void error(const SourceLocation& where, std::string msg) { out_.errors.push_back({where, std::move(msg)}); }
  void warn(const SourceLocation& where, std::string msg) { out_.warnings.push_back({where, std::move(msg)}); }

  /// Convert YAML to a ConfigValue with YAML 1.2 core-schema scalar typing (quoted scalars are strings).
  /// Aliases are expanded, so the values produced are counted against limits::yaml_nodes (a "billion laughs" of
  /// nested aliases stops there) and nesting against limits::yaml_depth; past either, one error and null values.
  ConfigValue to_value(const YAML::Node& n, std::uint64_t depth = 0) {
    const SourceLocation where = at(n);
    if (over_budget_) return ConfigValue({}, where);
    if (++values_ > max_values_) {
      over_budget_ = true;
      error(where, "more than " + std::to_string(max_values_) + " values once aliases are expanded: over " +
                       checks::limits::yaml_nodes.describe());
      return ConfigValue({}, where);
    }
    if (depth > max_depth_) {
      over_budget_ = true;
      error(where, "values nested more than " + std::to_string(max_depth_) + " levels deep: over " +
                       checks::limits::yaml_depth.describe());
      return ConfigValue({}, where);
    }
    switch (n.Type()) {
      case YAML::NodeType::Null:
      case YAML::NodeType::Undefined: return ConfigValue({}, where);
      case YAML::NodeType::Sequence: {
        ConfigValue::List list;
        for (const auto& e : n) list.push_back(to_value(e, depth + 1));
        return ConfigValue(std::move(list), where);
      }
      case YAML::NodeType::Map: {
        check_duplicate_keys(n);
        ConfigValue::Map map;
        for (const auto& kv : n) {
          if (!kv.first.IsScalar()) {
            error(at(kv.first), "a map key must be a plain string, not a list or a map");
            continue;
          }
          map.emplace(kv.first.Scalar(), to_value(kv.second, depth + 1));
        }
        return ConfigValue(std::move(map), where);
      }
      case YAML::NodeType::Scalar: break;
    }
    const std::string& s = n.Scalar();
    if (n.Tag() == "!") return ConfigValue(s, where);  // quoted: always a string
    if (s == "true" || s == "True" || s == "TRUE") return ConfigValue(true, where);
    if (s == "false" || s == "False" || s == "FALSE") return ConfigValue(false, where);
    if (s.empty() || s == "~" || s == "null" || s == "Null" || s == "NULL") return ConfigValue({}, where);
    {
      errno = 0;
      char* end = nullptr;
      const long long v = std::strtoll(s.c_str(), &end, 0);
      if (errno == 0 && end && *end == '\0' && s.find_first_of(".eE") == std::string::npos)
        return ConfigValue(static_cast<std::int64_t>(v), where);
    }
    {
      errno = 0;
      char* end = nullptr;
      const double v = std::strtod(s.c_str(), &end);
      if (errno == 0 && end && *end == '\0' && s.find_first_of("0123456789") != std::string::npos)
        return ConfigValue(v, where);
      if (s == ".inf" || s == ".Inf") return ConfigValue(HUGE_VAL, where);
    }
    return ConfigValue(s, where);
  }

  /// A key written twice in one map: YAML forbids it, yaml-cpp keeps both and lookups see only the first.
  void check_duplicate_keys(const YAML::Node& map) {
    if (!map.IsMap()) return;
    std::map<std::string, YAML::Mark> first;
    for (const auto& kv : map) {
      if (!kv.first.IsScalar()) continue;
      const auto [it, fresh] = first.emplace(kv.first.Scalar(), kv.first.Mark());
      if (!fresh)
        error(at(kv.first), "key '" + kv.first.Scalar() + "' is written twice in one map; the first is at " +
                                at(it->second).str() + " (YAML keys must be unique: keep one)");
    }
  }

  void check_keys(const YAML::Node& map, const std::vector<std::string>& allowed, const std::string& what) {
    check_duplicate_keys(map);
    for (const auto& kv : map) {
      const std::string key = kv.first.Scalar();
      if (std::find(allowed.begin(), allowed.end(), key) != allowed.end()) continue;
      std::string msg = "unknown key '" + key + "' in " + what;
      if (auto s = closest(key, allowed)) msg += " (did you mean '" + *s + "'?)";
      msg += "; allowed: " + join(allowed);
      error(at(kv.first), msg);
    }
  }

  std::optional<std::string> scalar(const YAML::Node& n, const std::string& what) {
    if (!n.IsScalar()) {
      error(at(n), what + " must be a string");
      return std::nullopt;
    }
    return n.Scalar();
  }

  PipelineLoad& out_;
  std::string file_;
  std::uint64_t values_ = 0;
  bool over_budget_ = false;
  const std::uint64_t max_values_ = checks::limits::yaml_nodes.value();
  const std::uint64_t max_depth_ = checks::limits::yaml_depth.value();
};

/// How many values a YAML document expands to once its aliases are expanded, counted from the parser's events
/// without building anything: each anchored node's expanded size is remembered, and an alias adds that size. So a
/// "billion laughs" is measured in time linear in the text, where expanding it (Validator::to_value) costs time in
/// the number of values up to the limit. Counts what to_value counts: every value, map keys not included; an alias
/// inside the node it names (a cycle) counts as over the limit.
class ExpandedSize : public YAML::EventHandler {
 public:
  explicit ExpandedSize(std::uint64_t limit) : limit_(limit) {}

  /// Where the count first passed the limit (the node being read then), if it did.
  const std::optional<YAML::Mark>& over_at() const { return over_at_; }

  void OnDocumentStart(const YAML::Mark&) override {}
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark& mark, YAML::anchor_t anchor) override { leaf(mark, anchor); }
  void OnScalar(const YAML::Mark& mark, const std::string&, YAML::anchor_t anchor, const std::string&) override {
    leaf(mark, anchor);
  }
  void OnAlias(const YAML::Mark& mark, YAML::anchor_t anchor) override {
    last_mark_ = mark;
    const auto it = sizes_.find(anchor);
    add(it == sizes_.end() ? 1 : it->second);
  }
  void OnSequenceStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t anchor,
                       YAML::EmitterStyle::value) override {
    open(mark, anchor, false);
  }
  void OnSequenceEnd() override { close(); }
  void OnMapStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t anchor,
                  YAML::EmitterStyle::value) override {
    open(mark, anchor, true);
  }
  void OnMapEnd() override { close(); }

 private:
  struct Open {
    std::uint64_t size;  // this node and its values so far (saturates past the limit)
    YAML::anchor_t anchor;
    bool is_map;
    bool key_next;  // in a map: the next node is a key
  };

  void leaf(const YAML::Mark& mark, YAML::anchor_t anchor) {
    last_mark_ = mark;
    if (anchor != YAML::NullAnchor) sizes_[anchor] = 1;
    add(1);
  }
  void open(const YAML::Mark& mark, YAML::anchor_t anchor, bool is_map) {
    last_mark_ = mark;
    // An alias to a node still open refers to itself (`&a [*a]`): it expands without end.
    if (anchor != YAML::NullAnchor) sizes_[anchor] = limit_ + 1;
    stack_.push_back({1, anchor, is_map, true});
  }
  void close() {
    const Open done = stack_.back();
    stack_.pop_back();
    if (done.anchor != YAML::NullAnchor) sizes_[done.anchor] = done.size;
    add(done.size);
  }
  /// A finished node of `size` values joins the collection it is in (a map's keys do not count).
  void add(std::uint64_t size) {
    std::uint64_t* into = &document_;
    if (!stack_.empty()) {
      Open& parent = stack_.back();
      const bool is_key = parent.is_map && parent.key_next;
      if (parent.is_map) parent.key_next = !parent.key_next;
      if (is_key) return;
      into = &parent.size;
    }
    *into = std::min(*into + size, limit_ + 1);  // sizes never exceed limit + 1: no overflow
    if (*into > limit_ && !over_at_) over_at_ = last_mark_;
  }

  const std::uint64_t limit_;
  std::uint64_t document_ = 0;
  std::vector<Open> stack_;
  std::map<YAML::anchor_t, std::uint64_t> sizes_;
  YAML::Mark last_mark_;
  std::optional<YAML::Mark> over_at_;
};

bool type_matches(ConfigType t, const ConfigValue& v) {
  switch (t) {
    case ConfigType::boolean: return v.is_bool();
    case ConfigType::integer: return v.is_int();
    case ConfigType::number: return v.is_number();
    case ConfigType::string: return v.is_string();
    case ConfigType::list: return v.is_list();
    case ConfigType::map: return v.is_map();
    case ConfigType::any: return true;
  }
  return true;
}

std::optional<OverflowPolicy> parse_overflow(const std::string& s) {
  for (auto p :
       {OverflowPolicy::block, OverflowPolicy::drop_oldest, OverflowPolicy::drop_newest, OverflowPolicy::keep_latest})
    if (s == to_string(p)) return p;
  return std::nullopt;
}

void parse_wires(Validator& v, const YAML::Node& section, bool in_outputs, ModuleSpec& m) {
  if (!section) return;
  const std::string where_name = std::string(in_outputs ? "outputs" : "inputs") + " of module '" + m.id + "'";
  if (!section.IsMap()) {
    v.error(v.at(section), where_name + " must be a map from port name to topic");
    return;
  }
  v.check_duplicate_keys(section);
  for (const auto& kv : section) {
    WireSpec w;
    w.port = kv.first.Scalar();
    w.where = v.at(kv.first);
    w.in_outputs = in_outputs;
    const YAML::Node& val = kv.second;
    if (val.IsScalar()) {
      w.topic = val.Scalar();
    } else if (val.IsMap()) {
      v.check_keys(val, {"topic", "capacity", "overflow", "feedback"}, "wiring of port '" + w.port + "'");
      if (!val["topic"]) {
        v.error(v.at(val), "wiring of port '" + w.port + "' of module '" + m.id + "' needs a `topic`");
        continue;
      }
      if (auto t = v.scalar(val["topic"], "topic")) w.topic = *t;
      if (val["capacity"]) {
        const ConfigValue c = v.to_value(val["capacity"]);
        if (!c.is_int() || c.as_int() < 1)
          v.error(v.at(val["capacity"]), "capacity of port '" + w.port + "' must be a positive integer");
        else
          w.capacity = static_cast<std::size_t>(c.as_int());
      }
      if (val["overflow"]) {
        auto p = val["overflow"].IsScalar() ? parse_overflow(val["overflow"].Scalar()) : std::nullopt;
        if (!p)
          v.error(v.at(val["overflow"]),
                  "overflow of port '" + w.port + "' must be block, drop_oldest, drop_newest or keep_latest");
        else
          w.overflow = p;
      }
      if (val["feedback"]) {
        const ConfigValue f = v.to_value(val["feedback"]);
        if (!f.is_bool())
          v.error(v.at(val["feedback"]), "feedback must be true or false");
        else
          w.feedback = f.as_bool();
      }
    } else {
      v.error(v.at(val), "port '" + w.port + "' of module '" + m.id + "' must be wired to a topic name");
      continue;
    }
    if (w.topic.empty()) {
      v.error(v.at(val), "port '" + w.port + "' of module '" + m.id + "' is wired to an empty topic name");
      continue;
    }
    if (m.wire(w.port)) {
      v.error(w.where, "port '" + w.port + "' of module '" + m.id + "' is wired twice");
      continue;
    }
    m.wires.push_back(std::move(w));
  }
}

std::string number_text(double x) {
  std::ostringstream os;
  os << x;
  return os.str();
}

/// The declared range of a number, or the allowed values of a string (ConfigKeySpec::min/max/one_of).
void check_range(Validator& v, const ConfigKeySpec& spec, const ConfigValue& value, const std::string& what) {
  if (value.is_number()) {
    const double x = value.as_number();
    if ((spec.min && x < *spec.min) || (spec.max && x > *spec.max)) {
      std::string range = spec.min && spec.max ? "in [" + number_text(*spec.min) + ", " + number_text(*spec.max) + "]"
                          : spec.min           ? "≥ " + number_text(*spec.min)
                                               : "≤ " + number_text(*spec.max);
      v.error(value.where(), what + " must be " + range + ", found " + number_text(x));
    }
  } else if (value.is_string() && !spec.one_of.empty()) {
    const auto& allowed = spec.one_of;
    if (std::find(allowed.begin(), allowed.end(), value.as_string()) == allowed.end()) {
      std::string msg = what + " must be one of " + join(allowed) + ", found '" + value.as_string() + "'";
      if (auto s = closest(value.as_string(), allowed)) msg += " (did you mean '" + *s + "'?)";
      v.error(value.where(), msg);
    }
  }
}

/// A plugin's declared default for `spec`, as a value located at "<default of WHAT>"; nullopt when it does not
/// parse. Parsed once per process: a pipeline load would otherwise parse every default of every module again (the
/// defaults are the plugins' own constant text, so the same text always gives the same value).
std::optional<ConfigValue> parsed_default(Validator& v, const std::string& what, const ConfigKeySpec& spec) {
  static std::mutex mutex;
  static std::map<std::pair<std::string, std::string>, ConfigValue> parsed;
  const auto key = std::make_pair(what, spec.default_yaml);
  {
    std::lock_guard<std::mutex> lock(mutex);
    if (const auto it = parsed.find(key); it != parsed.end()) return it->second;
  }
  YAML::Node node;
  try {
    node = YAML::Load(spec.default_yaml);
  } catch (const YAML::Exception&) {
    return std::nullopt;
  }
  const std::size_t errors = v.out_.errors.size();
  Validator defaults(v.out_, "<default of " + what + ">");
  ConfigValue value = defaults.to_value(node);
  if (v.out_.errors.size() == errors) {  // over a limit is reported in this load, and not remembered
    std::lock_guard<std::mutex> lock(mutex);
    parsed.emplace(key, value);
  }
  return value;
}

/// Check `values` (written under `node`) against the declared `keys` of `owner` ("module 'x'", "resource 'model'")
/// and fill in the declared defaults. `what` names the declaring thing ("plugin 'long_term'") for messages.
void check_config_map(Validator& v, const std::string& owner, const std::string& what,
                      const std::vector<ConfigKeySpec>& keys, ConfigValue::Map& values, const YAML::Node& node,
                      const SourceLocation& owner_where, const std::vector<std::string>& ignored = {}) {
  auto find = [&](const std::string& key) -> const ConfigKeySpec* {
    for (const auto& k : keys)
      if (k.name == key) return &k;
    return nullptr;
  };
  std::vector<std::string> accepted;
  for (const auto& c : keys) accepted.push_back(c.name);
  for (auto& [key, value] : values) {
    if (std::find(ignored.begin(), ignored.end(), key) != ignored.end()) continue;
    const ConfigKeySpec* spec = find(key);
    SourceLocation key_where = value.where();
    if (node && node.IsMap())
      for (const auto& kv : node)
        if (kv.first.Scalar() == key) key_where = v.at(kv.first);
    if (!spec) {
      std::string msg = owner + ": unknown config key '" + key + "' for " + what;
      if (auto s = closest(key, accepted)) msg += " (did you mean '" + *s + "'?)";
      msg += accepted.empty() ? "; it takes no config" : "; accepted: " + join(accepted);
      v.error(key_where, msg);
      continue;
    }
    if (!type_matches(spec->type, value)) {
      v.error(value.where(),
              owner + ": config key '" + key + "' must be " + to_string(spec->type) + ", found " + value.type_str());
      continue;
    }
    if (value.is_list()) {
      std::size_t i = 0;
      for (const auto& e : value.as_list()) {
        const std::string what = owner + ": config key '" + key + "' element " + std::to_string(i++);
        if (!type_matches(spec->element, e))
          v.error(e.where(), what + " must be " + to_string(spec->element) + ", found " + e.type_str());
        else
          check_range(v, *spec, e, what);
      }
    } else {
      check_range(v, *spec, value, owner + ": config key '" + key + "'");
    }
  }
  for (const auto& spec : keys) {
    if (values.count(spec.name)) continue;
    if (spec.required) {
      v.error(owner_where, owner + ": required config key '" + spec.name + "' (" + to_string(spec.type) +
                               ") is missing" + (spec.doc.empty() ? "" : " — " + spec.doc));
    } else if (!spec.default_yaml.empty()) {
      if (auto value = parsed_default(v, what, spec))
        values[spec.name] = std::move(*value);
      else
        v.error(owner_where, what + " declares an unparsable default for '" + spec.name + "': " + spec.default_yaml);
    }
  }
}

void check_config(Validator& v, ModuleSpec& m, const YAML::Node& config_node) {
  const PluginDescriptor& d = *m.loaded->descriptor;
  check_config_map(v, "module '" + m.id + "'", "plugin '" + d.name + "'", d.config, m.config, config_node,
                   m.plugin_where);
}

/// Set every value of `from` in `into`, descending into maps present in both (overrides of the chosen output).
void merge_into(YAML::Node into, const YAML::Node& from) {
  for (const auto& kv : from) {
    const std::string key = kv.first.Scalar();
    YAML::Node target = into[key];
    if (target && target.IsMap() && kv.second.IsMap())
      merge_into(target, kv.second);
    else
      into[key] = kv.second;
  }
}

/// `resources:`: each entry a map with an optional `kind` (default language_model) naming a registered kind, and
/// that kind's keys. Defaults are filled in and `kind` is written back, so the runtime creates what was checked.
void check_resources(Validator& v, ConfigValue::Map& resources, const YAML::Node& node) {
  for (auto& [name, decl] : resources) {
    const YAML::Node decl_node = node[name];
    if (!decl.is_map()) {
      v.error(decl.where(), "resource '" + name + "' must be a map (its `kind` and the kind's config)");
      continue;
    }
    ConfigValue::Map values = decl.as_map();
    std::string kind = "language_model";
    if (auto it = values.find("kind"); it != values.end()) {
      if (!it->second.is_string()) {
        v.error(it->second.where(), "resource '" + name + "': kind must be a string");
        continue;
      }
      kind = it->second.as_string();
    }
    const auto k = resource_kinds().find(kind);
    if (!k) {
      const auto known = resource_kinds().names();
      std::string msg = "resource '" + name + "' has kind '" + kind + "', which this lal cannot create";
      if (auto s = closest(kind, known)) msg += " (did you mean '" + *s + "'?)";
      msg += known.empty() ? "; it knows no resource kinds (a build without LibTorch has no language_model)"
                           : "; known kinds: " + join(known);
      v.error(decl.where(), msg);
      continue;
    }
    check_config_map(v, "resource '" + name + "'", "resource kind '" + kind + "'", k->keys, values, decl_node,
                     decl.where(), {"kind"});
    values["kind"] = ConfigValue(kind, values.count("kind") ? values.at("kind").where() : decl.where());
    decl = ConfigValue(std::move(values), decl.where());
  }
}

void check_ports(Validator& v, const ModuleSpec& m) {
  const PluginDescriptor& d = *m.loaded->descriptor;
  std::vector<std::string> port_names;
  for (const auto& p : d.ports) port_names.push_back(p.name);
  for (const auto& w : m.wires) {
    const PortSpec* p = d.find_port(w.port);
    if (!p) {
      std::string msg = "module '" + m.id + "' (plugin '" + d.name + "') has no port '" + w.port + "'";
      if (auto s = closest(w.port, port_names)) msg += " (did you mean '" + *s + "'?)";
      msg += port_names.empty() ? "; it has no ports" : "; its ports: " + join(port_names);
      v.error(w.where, msg);
      continue;
    }
    const bool belongs_in_outputs = p->direction == PortDirection::output || p->direction == PortDirection::client;
    if (belongs_in_outputs != w.in_outputs) {
      const std::string dir = to_string(p->direction);
      const bool vowel = dir[0] == 'i' || dir[0] == 'o';  // "an input", "an output", "a server", "a client"
      v.error(w.where, "port '" + w.port + "' of module '" + m.id + "' is " + (vowel ? "an " : "a ") + dir +
                           " port: it belongs under `" + (belongs_in_outputs ? "outputs" : "inputs") +
                           ":`, not under `" + (belongs_in_outputs ? "inputs" : "outputs") + ":`");
    }
  }
  for (const auto& p : d.ports) {
    if (p.optional || m.wire(p.name)) continue;
    // Every port kind the runtime refuses to start unwired (inputs, servers, clients; an unwired output is fine).
    if (p.direction != PortDirection::output)
      v.error(m.where, "module '" + m.id + "': required " + to_string(p.direction) + " port '" + p.name + "' (" +
                           p.type + ") is not wired");
  }
}

struct Endpoint {
  const ModuleSpec* module;  // null for the pipeline input
  const WireSpec* wire;
  const PortSpec* port;
  std::string name() const {
    return module ? "module '" + module->id + "' (port '" + port->name + "')" : "the pipeline input";
  }
};

void check_topics(Validator& v, const PipelineSpec& spec, const SourceLocation& input_where) {
  std::map<std::string, std::vector<Endpoint>> producers, consumers, servers, clients;
  static const PortSpec input_port{"input", PortDirection::output, Percept::kTypeName, "", "", false,
                                   0,       OverflowPolicy::block};
  producers[spec.input_topic].push_back({nullptr, nullptr, &input_port});
  for (const auto& m : spec.modules) {
    if (!m.loaded) continue;
    for (const auto& w : m.wires) {
      const PortSpec* p = m.loaded->descriptor->find_port(w.port);
      if (!p) continue;
      switch (p->direction) {
        case PortDirection::output: producers[w.topic].push_back({&m, &w, p}); break;
        case PortDirection::input: consumers[w.topic].push_back({&m, &w, p}); break;
        case PortDirection::server: servers[w.topic].push_back({&m, &w, p}); break;
        case PortDirection::client: clients[w.topic].push_back({&m, &w, p}); break;
      }
    }
  }
  // Every topic carries one type.
  for (const auto& [topic, list] : producers)
    for (std::size_t i = 1; i < list.size(); ++i)
      if (list[i].port->type != list[0].port->type)
        v.error(list[i].wire ? list[i].wire->where : input_where,
                "type conflict on topic '" + topic + "': " + list[i].name() + " produces " + list[i].port->type +
                    " but " + list[0].name() + " produces " + list[0].port->type);
  for (const auto& [topic, list] : consumers) {
    for (const auto& c : list) {
      auto it = producers.find(topic);
      if (it == producers.end()) {
        if (servers.count(topic) || clients.count(topic)) continue;  // observing a request topic
        std::vector<std::string> known;
        for (const auto& [t, _] : producers) known.push_back(t);
        std::string msg = "input '" + c.port->name + "' of module '" + c.module->id + "' is wired to topic '" + topic +
                          "' that nobody produces";
        if (auto s = closest(topic, known)) msg += " (did you mean '" + *s + "'?)";
        msg += "; produced topics: " + join(known);
        v.error(c.wire->where, msg);
        continue;
      }
      for (const auto& p : it->second)
        if (p.port->type != c.port->type) {
          // Reported at whichever of the two wirings comes later in the file: that one introduced the mismatch.
          const SourceLocation& where = p.wire && std::tie(p.wire->where.line, p.wire->where.column) >
                                                      std::tie(c.wire->where.line, c.wire->where.column)
                                            ? p.wire->where
                                            : c.wire->where;
          v.error(where, "type mismatch on topic '" + topic + "': " + p.name() + " produces " + p.port->type + " but " +
                             c.name() + " expects " + c.port->type);
          break;
        }
    }
  }
  for (const auto& [topic, list] : clients) {
    auto it = servers.find(topic);
    for (const auto& c : list) {
      if (it == servers.end()) {
        v.error(c.wire->where, "requests from '" + c.port->name + "' of module '" + c.module->id + "' go to topic '" +
                                   topic + "' that no module serves");
        continue;
      }
      for (const auto& s : it->second)
        if (s.port->type != c.port->type || s.port->reply_type != c.port->reply_type)
          v.error(c.wire->where, "request/reply mismatch on topic '" + topic + "': " + c.name() + " sends " +
                                     c.port->type + " expecting " + c.port->reply_type + ", but " + s.name() +
                                     " serves " + s.port->type + " replying " + s.port->reply_type);
    }
  }
  for (const auto& [topic, list] : servers) {
    if (producers.count(topic))
      for (const auto& s : list)
        v.error(s.wire->where, "topic '" + topic + "' is served by " + s.name() +
                                   " but also used for publish/subscribe; use a separate topic for requests");
  }

  // Cycles among modules through publish/subscribe edges (feedback wires excluded).
  std::map<std::string, std::vector<std::pair<std::string, const WireSpec*>>> edges;
  for (const auto& [topic, cons] : consumers) {
    auto it = producers.find(topic);
    if (it == producers.end()) continue;
    for (const auto& p : it->second)
      for (const auto& c : cons)
        if (p.module && !c.wire->feedback) edges[p.module->id].push_back({c.module->id, c.wire});
  }
  std::map<std::string, int> state;  // 0 new, 1 on stack, 2 done
  std::vector<std::string> stack;
  std::set<std::string> reported;
  std::function<void(const std::string&)> dfs = [&](const std::string& node) {
    state[node] = 1;
    stack.push_back(node);
    for (const auto& [next, wire] : edges[node]) {
      if (state[next] == 1) {
        auto from = std::find(stack.begin(), stack.end(), next);
        std::vector<std::string> cycle(from, stack.end());
        cycle.push_back(next);
        std::vector<std::string> key_parts(from, stack.end());
        std::sort(key_parts.begin(), key_parts.end());
        const std::string key = join(key_parts, ",");
        if (reported.insert(key).second)
          v.error(wire->where, "cycle: " + join(cycle, " → ") +
                                   "; mark one of these inputs `feedback: true` if the loop is intended");
      } else if (state[next] == 0) {
        dfs(next);
      }
    }
    stack.pop_back();
    state[node] = 2;
  };
  for (const auto& m : spec.modules)
    if (state[m.id] == 0) dfs(m.id);
}

}  // namespace

PipelineLoad load_pipeline_text(const std::string& yaml, const fs::path& file,
                                const std::vector<fs::path>& extra_plugin_dirs,
                                const std::vector<Override>& overrides) {
  PipelineLoad out;
  out.spec.file = file;
  Validator v(out, file.string());
  YAML::Node root;
  try {
    root = YAML::Load(yaml);
  } catch (const YAML::DeepRecursion& e) {
    // yaml-cpp's own guard (its message is only "bad file") stops the parse before limits::yaml_depth is reached.
    v.error(v.at(e.mark), "values nested " + std::to_string(e.depth()) +
                              " levels deep or more: over the YAML parser's own limit (and " +
                              checks::limits::yaml_depth.describe() + ")");
    return out;
  } catch (const YAML::ParserException& e) {
    v.error(v.at(e.mark), "YAML syntax error: " + e.msg);
    return out;
  }
  if (!root.IsMap()) {
    v.error(v.at(root), "a pipeline file must be a YAML map with at least `modules:`");
    return out;
  }
  if (yaml.find('&') != std::string::npos && yaml.find('*') != std::string::npos) {
    // Refuse an alias bomb before expanding any of it (the same limit as Validator::to_value, reached at once).
    // Without an anchor (&) and an alias (*) nothing expands: to_value's own count is linear in the text.
    const std::uint64_t limit = checks::limits::yaml_nodes.value();
    ExpandedSize size(limit);
    std::istringstream text(yaml);
    YAML::Parser parser(text);
    parser.HandleNextDocument(size);  // the text parsed once already: no syntax error here
    if (const auto& mark = size.over_at()) {
      v.error(v.at(*mark), "more than " + std::to_string(limit) + " values once aliases are expanded: over " +
                               checks::limits::yaml_nodes.describe());
      return out;
    }
  }
  // `modules.*.config.KEY=V` sets KEY on every module whose plugin declares it (applied once plugins are loaded).
  struct WildcardOverride {
    std::string key;
    ConfigValue value;
  };
  std::vector<WildcardOverride> wildcards;
  for (const auto& o : overrides) {
    const SourceLocation where{"<override " + o.path + "=" + o.yaml + ">", 1, 1};
    if (o.path.rfind("modules.*.", 0) == 0) {
      const std::string rest = o.path.substr(10);
      if (rest.rfind("config.", 0) != 0 || rest.size() == 7 || rest.find('.', 7) != std::string::npos) {
        v.error(where, "a wildcard override must be modules.*.config.KEY");
        continue;
      }
      try {
        Validator ov(out, where.file);
        wildcards.push_back({rest.substr(7), ov.to_value(YAML::Load(o.yaml))});
      } catch (const YAML::Exception& e) {
        v.error(where, "override value is not valid YAML: " + e.msg);
      }
      continue;
    }
    YAML::Node value;
    try {
      value = YAML::Load(o.yaml);
    } catch (const YAML::Exception& e) {
      v.error(where, "override value is not valid YAML: " + e.msg);
      continue;
    }
    std::vector<std::string> parts;
    std::stringstream ss(o.path);
    for (std::string part; std::getline(ss, part, '.');) parts.push_back(part);
    YAML::Node node = root;
    bool ok = !parts.empty();
    for (std::size_t i = 0; ok && i + 1 < parts.size(); ++i) {
      YAML::Node next = node[parts[i]];
      if (!next || next.IsNull()) next = YAML::Node(YAML::NodeType::Map);
      if (!next.IsMap()) {
        v.error(where, "cannot set '" + o.path + "': '" + parts[i] + "' is not a map");
        ok = false;
        break;
      }
      node[parts[i]] = next;
      node.reset(next);
    }
    if (ok) node[parts.back()] = value;
  }
  v.check_keys(root, {"name", "description", "plugin_path", "input", "resources", "modules", "outputs", "output"},
               "the pipeline");
  if (root["name"])
    if (auto s = v.scalar(root["name"], "name")) out.spec.name = *s;
  if (root["description"])
    if (auto s = v.scalar(root["description"], "description")) out.spec.description = *s;
  SourceLocation input_where{file.string(), 1, 1};
  if (root["input"]) {
    input_where = v.at(root["input"]);
    if (auto s = v.scalar(root["input"], "input")) out.spec.input_topic = *s;
  }
  if (root["resources"]) {
    const ConfigValue r = v.to_value(root["resources"]);
    if (!r.is_map()) {
      v.error(r.where(), "resources must be a map from service name to resource");
    } else {
      out.spec.resources = r.as_map();
      check_resources(v, out.spec.resources, root["resources"]);
    }
  }

  std::vector<fs::path> search = extra_plugin_dirs;
  const fs::path base = file.has_parent_path() ? file.parent_path() : fs::path(".");
  if (const YAML::Node pp = root["plugin_path"]) {
    std::vector<YAML::Node> entries;
    if (pp.IsSequence())
      for (const auto& e : pp) entries.push_back(e);
    else
      entries.push_back(pp);
    for (const auto& e : entries) {
      if (auto s = v.scalar(e, "plugin_path entry")) {
        fs::path p(*s);
        search.push_back(p.is_absolute() ? p : base / p);
      }
    }
  }
  for (const auto& p : default_plugin_path()) search.push_back(p);
  out.spec.registry = std::make_shared<PluginRegistry>(search);

  const YAML::Node modules = root["modules"];
  if (!modules) {
    v.error(v.at(root), "the pipeline has no `modules:` section");
    return out;
  }
  if (!modules.IsMap()) {
    v.error(v.at(modules), "`modules:` must be a map from module id to its declaration");
    return out;
  }
  v.check_duplicate_keys(modules);  // a module id used twice
  // The declarations to load: every module, then the chosen entry of the output slot as module `output`.
  std::vector<std::pair<YAML::Node, YAML::Node>> declarations;
  const YAML::Node slot = root["outputs"];
  YAML::Node output_overrides;  // `modules.output` without a plugin: values set on the chosen output (--set ...)
  for (const auto& kv : modules) {
    if (slot && kv.first.Scalar() == "output") {
      if (kv.second.IsMap() && !kv.second["plugin"]) {
        output_overrides = kv.second;
      } else {
        v.error(v.at(kv.first),
                "module id 'output' is taken by the pipeline's output slot (`outputs:`); rename this "
                "module, or move it under `outputs:`");
      }
      continue;
    }
    declarations.emplace_back(kv.first, kv.second);
  }
  if (slot) {
    if (!slot.IsMap() || slot.size() == 0) {
      v.error(v.at(slot), "`outputs:` must be a map from output name to a module declaration (the output slot)");
    } else {
      v.check_duplicate_keys(slot);
      for (const auto& kv : slot) out.spec.output_choices.push_back(kv.first.Scalar());
      out.spec.output_choice = out.spec.output_choices.front();
      SourceLocation choice_where = v.at(slot);
      if (const YAML::Node chosen = root["output"]) {
        choice_where = v.at(chosen);
        if (auto s = v.scalar(chosen, "output")) out.spec.output_choice = *s;
      }
      const auto& choices = out.spec.output_choices;
      if (std::find(choices.begin(), choices.end(), out.spec.output_choice) == choices.end()) {
        std::string msg = "output '" + out.spec.output_choice + "' is not in the pipeline's `outputs:`";
        if (auto s = closest(out.spec.output_choice, choices)) msg += " (did you mean '" + *s + "'?)";
        v.error(choice_where, msg + "; choose one of: " + join(choices));
      } else {
        for (const auto& kv : slot)
          if (kv.first.Scalar() == out.spec.output_choice) {
            out.spec.output_where = v.at(kv.first);
            YAML::Node decl = kv.second;
            // Overrides go into a declaration that is a map (or empty); any other is refused below as a module
            // declaration that is not a map (merging into it threw YAML::BadSubscript out of validation: found by
            // fuzz_pipeline, corpus/pipeline/repro-output-override-into-non-map).
            if (output_overrides && (decl.IsMap() || decl.IsNull())) merge_into(decl, output_overrides);
            declarations.emplace_back(YAML::Node(std::string("output")), decl);
          }
      }
    }
  } else if (root["output"]) {
    v.error(v.at(root["output"]), "`output:` chooses among the pipeline's `outputs:`, but it declares none");
  }
  std::set<std::string> ids;
  for (const auto& kv : declarations) {
    ModuleSpec m;
    m.id = kv.first.Scalar();
    m.where = kv.first.Mark().line >= 0 ? v.at(kv.first) : out.spec.output_where;
    if (!ids.insert(m.id).second) continue;  // reported by check_duplicate_keys
    const YAML::Node& decl = kv.second;
    if (!decl.IsMap()) {
      v.error(v.at(decl), "module '" + m.id + "' must be a map with at least `plugin:`");
      continue;
    }
    v.check_keys(decl, {"plugin", "config", "inputs", "outputs", "failure_policy", "description"},
                 "module '" + m.id + "'");
    if (!decl["plugin"]) {
      v.error(m.where, "module '" + m.id + "' has no `plugin:`");
    } else if (auto s = v.scalar(decl["plugin"], "plugin")) {
      m.plugin = *s;
      m.plugin_where = v.at(decl["plugin"]);
      if (m.plugin.empty()) v.error(m.plugin_where, "module '" + m.id + "': `plugin:` is empty; name a plugin");
    }
    if (decl["failure_policy"]) {
      const std::string fp = decl["failure_policy"].IsScalar() ? decl["failure_policy"].Scalar() : "";
      if (fp == "isolate")
        m.failure_policy = FailurePolicy::isolate;
      else if (fp == "disable")
        m.failure_policy = FailurePolicy::disable;
      else if (fp == "fail")
        m.failure_policy = FailurePolicy::fail;
      else
        v.error(v.at(decl["failure_policy"]),
                "failure_policy of module '" + m.id + "' must be isolate, disable or fail");
    }
    if (decl["config"]) {
      const ConfigValue c = v.to_value(decl["config"]);
      if (c.is_map())
        m.config = c.as_map();
      else if (!c.is_null())
        v.error(c.where(), "config of module '" + m.id + "' must be a map");
    }
    parse_wires(v, decl["inputs"], false, m);
    parse_wires(v, decl["outputs"], true, m);
    if (!m.plugin.empty()) {
      try {
        m.loaded = out.spec.registry->load(m.plugin);
      } catch (const PluginError& e) {
        v.error(m.plugin_where, "module '" + m.id + "': " + e.what());
      }
    }
    if (m.loaded) {
      for (const auto& w : wildcards)
        if (m.loaded->descriptor->find_config(w.key)) m.config[w.key] = w.value;
      check_config(v, m, decl["config"]);
      check_ports(v, m);
    }
    out.spec.modules.push_back(std::move(m));
  }
  check_topics(v, out.spec, input_where);
  std::stable_sort(out.errors.begin(), out.errors.end(), [](const Diagnostic& a, const Diagnostic& b) {
    return std::tie(a.where.line, a.where.column) < std::tie(b.where.line, b.where.column);
  });
  return out;
}

PipelineLoad load_pipeline(const fs::path& file, const std::vector<fs::path>& extra_plugin_dirs,
                           const std::vector<Override>& overrides) {
  std::string text;
  try {
    text = checks::read_file_limited(file, checks::limits::pipeline_file);
  } catch (const std::exception& e) {
    PipelineLoad out;
    out.spec.file = file;
    std::string why = e.what();
    if (why.rfind(file.string() + ": ", 0) == 0) why = why.substr(file.string().size() + 2);
    out.errors.push_back({SourceLocation{file.string(), 0, 0}, "cannot read the pipeline file: " + why});
    return out;
  }
  return load_pipeline_text(text, file, extra_plugin_dirs, overrides);
}

}  // namespace lal::runtime
