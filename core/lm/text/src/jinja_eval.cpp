// Jinja evaluator: Python semantics for the values JSON brings, Jinja2's filters and tests, transformers' globals.
#include <unicode/uchar.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <ctime>
#include <limits>
#include <optional>
#include <unordered_map>

#include "jinja_ast.hpp"
#include "unicode.hpp"

namespace lal::lm::jinja {

namespace {

using Kind = Value::Kind;

// ---- UTF-8 -------------------------------------------------------------------------------------------------------

// Template text and JSON strings are valid UTF-8 (checked when the template is read; nlohmann-json checks input).
std::u32string decode(const std::string& s) {
  std::u32string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size();) out.push_back(text::next_code_point(s, i));
  return out;
}

using text::append_utf8;

std::string encode(const std::u32string& s) {
  std::string out;
  out.reserve(s.size());
  for (char32_t c : s) append_utf8(out, c);
  return out;
}

bool is_ascii(const std::string& s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80; });
}

std::size_t length_of(const std::string& s) {
  std::size_t n = 0;
  for (unsigned char c : s)
    if ((c & 0xc0) != 0x80) ++n;
  return n;
}

bool is_space(char32_t c) { return is_python_space(c); }

char32_t to_upper(char32_t c) {
  return c < 0x80 ? static_cast<char32_t>(std::toupper(static_cast<int>(c))) : u_toupper(c);
}
char32_t to_lower(char32_t c) {
  return c < 0x80 ? static_cast<char32_t>(std::tolower(static_cast<int>(c))) : u_tolower(c);
}
bool is_cased_letter(char32_t c) {
  return u_isUAlphabetic(c) && (u_isULowercase(c) || u_isUUppercase(c) || u_istitle(c));
}

std::string map_case(const std::string& s, char32_t (*f)(char32_t)) {
  std::u32string u = decode(s);
  for (auto& c : u) c = f(c);
  return encode(u);
}

// Python's str.strip/lstrip/rstrip; chars == nullptr means whitespace.
std::string strip(const std::string& s, const std::string* chars, bool left, bool right) {
  const std::u32string u = decode(s);
  const std::u32string set = chars ? decode(*chars) : std::u32string();
  auto drop = [&](char32_t c) { return chars ? set.find(c) != std::u32string::npos : is_space(c); };
  std::size_t b = 0, e = u.size();
  if (left)
    while (b < e && drop(u[b])) ++b;
  if (right)
    while (e > b && drop(u[e - 1])) --e;
  return encode(u.substr(b, e - b));
}

// ---- number formatting -------------------------------------------------------------------------------------------

// Python's repr(float).
std::string float_repr(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d < 0 ? "-inf" : "inf";
  if (d == 0) return std::signbit(d) ? "-0.0" : "0.0";
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof buf, d, std::chars_format::scientific);
  std::string sci(buf, res.ptr);  // [-]d[.ddd]e±XX
  const bool negative = sci[0] == '-';
  if (negative) sci.erase(0, 1);
  const auto epos = sci.find('e');
  std::string digits = sci.substr(0, epos);
  const int exponent = std::stoi(sci.substr(epos + 1));
  digits.erase(std::remove(digits.begin(), digits.end(), '.'), digits.end());
  std::string out;
  if (exponent >= -5 + 1 && exponent < 16) {  // Python: scientific when exp < -4 or exp >= 16
    if (exponent >= 0) {
      if (static_cast<int>(digits.size()) <= exponent + 1) {
        out = digits + std::string(exponent + 1 - digits.size(), '0') + ".0";
      } else {
        out = digits.substr(0, exponent + 1) + "." + digits.substr(exponent + 1);
      }
    } else {
      out = "0." + std::string(-exponent - 1, '0') + digits;
    }
  } else {
    out = digits.substr(0, 1);
    if (digits.size() > 1) out += "." + digits.substr(1);
    char e[16];
    std::snprintf(e, sizeof e, "e%c%02d", exponent < 0 ? '-' : '+', std::abs(exponent));
    out += e;
  }
  return negative ? "-" + out : out;
}

std::string py_repr_string(const std::string& s) {
  const bool has_single = s.find('\'') != std::string::npos, has_double = s.find('"') != std::string::npos;
  const char quote = has_single && !has_double ? '"' : '\'';
  std::string out(1, quote);
  for (char32_t c : decode(s)) {
    if (c == static_cast<char32_t>(quote) || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c == 0x7f || (c >= 0x80 && c <= 0xa0) || c == 0xad) {
      char b[8];
      std::snprintf(b, sizeof b, "\\x%02x", static_cast<unsigned>(c));
      out += b;
    } else if ((c >= 0x2000 && c <= 0x200f) || (c >= 0x2028 && c <= 0x202f) || c == 0x3000 || c == 0xfeff ||
               c == 0x1680 || c == 0x205f) {
      char b[12];
      std::snprintf(b, sizeof b, "\\u%04x", static_cast<unsigned>(c));
      out += b;
    } else {
      append_utf8(out, c);
    }
  }
  out += quote;
  return out;
}

const char* type_name(const Value& v) {
  switch (v.kind) {
    case Kind::Undefined: return "Undefined";
    case Kind::None: return "NoneType";
    case Kind::Bool: return "bool";
    case Kind::Int: return "int";
    case Kind::Float: return "float";
    case Kind::String: return "str";
    case Kind::List: return v.is_tuple ? "tuple" : "list";
    case Kind::Dict: return "dict";
    case Kind::Namespace: return "Namespace";
    case Kind::Callable: return "function";
  }
  return "?";
}

std::string repr(const Value& v);

std::string to_str(const Value& v) {
  switch (v.kind) {
    case Kind::Undefined: return "";
    case Kind::None: return "None";
    case Kind::Bool: return v.boolean ? "True" : "False";
    case Kind::Int: return std::to_string(v.integer);
    case Kind::Float: return float_repr(v.number);
    case Kind::String: return v.text;
    case Kind::List: {
      std::string out = v.is_tuple ? "(" : "[";
      for (std::size_t i = 0; i < v.list->size(); ++i) {
        if (i) out += ", ";
        out += repr((*v.list)[i]);
      }
      if (v.is_tuple && v.list->size() == 1) out += ",";
      return out + (v.is_tuple ? ")" : "]");
    }
    case Kind::Dict:
    case Kind::Namespace: {
      std::string out = v.kind == Kind::Namespace ? "<Namespace {" : "{";
      bool first = true;
      for (const auto& kv : v.dict->items) {
        if (!first) out += ", ";
        first = false;
        out += py_repr_string(kv.first) + ": " + repr(kv.second);
      }
      return out + (v.kind == Kind::Namespace ? "}>" : "}");
    }
    case Kind::Callable: return "<function " + v.callable->name + ">";
  }
  return "";
}

std::string repr(const Value& v) {
  if (v.kind == Kind::String) return py_repr_string(v.text);
  if (v.kind == Kind::Undefined) return "Undefined";
  return to_str(v);
}

bool truthy(const Value& v) {
  switch (v.kind) {
    case Kind::Undefined:
    case Kind::None: return false;
    case Kind::Bool: return v.boolean;
    case Kind::Int: return v.integer != 0;
    case Kind::Float: return v.number != 0;
    case Kind::String: return !v.text.empty();
    case Kind::List: return !v.list->empty();
    case Kind::Dict: return !v.dict->items.empty();
    default: return true;
  }
}

double as_double(const Value& v) {
  return v.kind == Kind::Float ? v.number : static_cast<double>(v.kind == Kind::Bool ? v.boolean : v.integer);
}
std::int64_t as_int(const Value& v) { return v.kind == Kind::Bool ? v.boolean : v.integer; }
bool is_integral(const Value& v) { return v.kind == Kind::Int || v.kind == Kind::Bool; }

bool equals(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (is_integral(a) && is_integral(b)) return as_int(a) == as_int(b);
    return as_double(a) == as_double(b);
  }
  if (a.kind != b.kind) return false;
  switch (a.kind) {
    case Kind::Undefined:
    case Kind::None: return true;
    case Kind::String: return a.text == b.text;
    case Kind::List: {
      if (a.is_tuple != b.is_tuple || a.list->size() != b.list->size()) return false;
      for (std::size_t i = 0; i < a.list->size(); ++i)
        if (!equals((*a.list)[i], (*b.list)[i])) return false;
      return true;
    }
    case Kind::Dict: {
      if (a.dict->items.size() != b.dict->items.size()) return false;
      for (const auto& kv : a.dict->items) {
        const Value* other = b.dict->find(kv.first);
        if (!other || !equals(kv.second, *other)) return false;
      }
      return true;
    }
    case Kind::Namespace: return a.dict == b.dict;
    case Kind::Callable: return a.callable == b.callable;
    default: return false;
  }
}

// ---- JSON --------------------------------------------------------------------------------------------------------

Value from_json(const nlohmann::ordered_json& j) {
  switch (j.type()) {
    case nlohmann::ordered_json::value_t::null: return Value::none();
    case nlohmann::ordered_json::value_t::boolean: return Value::from_bool(j.get<bool>());
    case nlohmann::ordered_json::value_t::number_integer: return Value::from_int(j.get<std::int64_t>());
    case nlohmann::ordered_json::value_t::number_unsigned: {
      const auto u = j.get<std::uint64_t>();
      if (u > static_cast<std::uint64_t>(INT64_MAX))
        throw JinjaError("integer " + std::to_string(u) + " in the template variables is out of the 64-bit range");
      return Value::from_int(static_cast<std::int64_t>(u));
    }
    case nlohmann::ordered_json::value_t::number_float: return Value::from_float(j.get<double>());
    case nlohmann::ordered_json::value_t::string: return Value::from_string(j.get<std::string>());
    case nlohmann::ordered_json::value_t::array: {
      List items;
      items.reserve(j.size());
      for (const auto& e : j) items.push_back(from_json(e));
      return Value::from_list(std::move(items));
    }
    case nlohmann::ordered_json::value_t::object: {
      Value d = Value::new_dict();
      for (auto it = j.begin(); it != j.end(); ++it) d.dict->add(it.key(), from_json(it.value()));
      return d;
    }
    default: throw JinjaError("unsupported JSON value in the template variables (binary data)");
  }
}

struct JsonStyle {
  std::string indent;  // empty: no newlines
  bool use_indent = false;
  std::string item_separator = ", ", key_separator = ": ";
  bool ensure_ascii = false, sort_keys = false;
};

void json_string(std::string& out, const std::string& s, bool ensure_ascii) {
  out += '"';
  for (char32_t c : decode(s)) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (c < 0x20 || (ensure_ascii && c > 0x7e)) {
          char b[16];
          if (c >= 0x10000) {
            const char32_t v = c - 0x10000;
            std::snprintf(b, sizeof b, "\\u%04x\\u%04x", static_cast<unsigned>(0xd800 + (v >> 10)),
                          static_cast<unsigned>(0xdc00 + (v & 0x3ff)));
          } else {
            std::snprintf(b, sizeof b, "\\u%04x", static_cast<unsigned>(c));
          }
          out += b;
        } else {
          append_utf8(out, c);
        }
    }
  }
  out += '"';
}

// Python's json.dumps.
void to_json(std::string& out, const Value& v, const JsonStyle& style, int level, int depth) {
  if (depth > 512) throw std::runtime_error("tojson: value is nested too deeply");
  auto newline = [&](int lvl) {
    out += '\n';
    for (int i = 0; i < lvl; ++i) out += style.indent;
  };
  switch (v.kind) {
    case Kind::None: out += "null"; return;
    case Kind::Bool: out += v.boolean ? "true" : "false"; return;
    case Kind::Int: out += std::to_string(v.integer); return;
    case Kind::Float:
      if (std::isnan(v.number))
        out += "NaN";
      else if (std::isinf(v.number))
        out += v.number < 0 ? "-Infinity" : "Infinity";
      else
        out += float_repr(v.number);
      return;
    case Kind::String: json_string(out, v.text, style.ensure_ascii); return;
    case Kind::List: {
      if (v.list->empty()) {
        out += "[]";
        return;
      }
      out += '[';
      for (std::size_t i = 0; i < v.list->size(); ++i) {
        if (i) out += style.item_separator;
        if (style.use_indent) newline(level + 1);
        to_json(out, (*v.list)[i], style, level + 1, depth + 1);
      }
      if (style.use_indent) newline(level);
      out += ']';
      return;
    }
    case Kind::Dict: {
      if (v.dict->items.empty()) {
        out += "{}";
        return;
      }
      std::vector<const std::pair<std::string, Value>*> items;
      for (const auto& kv : v.dict->items) items.push_back(&kv);
      if (style.sort_keys)
        std::stable_sort(items.begin(), items.end(), [](auto* a, auto* b) { return a->first < b->first; });
      out += '{';
      bool first = true;
      for (const auto* kv : items) {
        if (!first) out += style.item_separator;
        first = false;
        if (style.use_indent) newline(level + 1);
        json_string(out, kv->first, style.ensure_ascii);
        out += style.key_separator;
        to_json(out, kv->second, style, level + 1, depth + 1);
      }
      if (style.use_indent) newline(level);
      out += '}';
      return;
    }
    default:
      throw std::runtime_error(std::string("tojson: Object of type ") + type_name(v) + " is not JSON serializable");
  }
}

// ---- the interpreter ---------------------------------------------------------------------------------------------

struct Scope {
  std::unordered_map<std::string, Value> vars;
  Scope* parent = nullptr;
  Value* find(const std::string& name) {
    for (Scope* s = this; s; s = s->parent) {
      auto it = s->vars.find(name);
      if (it != s->vars.end()) return &it->second;
    }
    return nullptr;
  }
};

enum class Flow { Normal, Break, Continue };

const std::vector<std::string>& filter_names() {
  static const std::vector<std::string> names = {
      "abs",     "attr",    "capitalize", "center",      "count",  "d",          "default", "dictsort", "e",
      "escape",  "first",   "float",      "forceescape", "format", "indent",     "int",     "items",    "join",
      "last",    "length",  "list",       "lower",       "map",    "max",        "min",     "reject",   "rejectattr",
      "replace", "reverse", "round",      "safe",        "select", "selectattr", "sort",    "string",   "sum",
      "title",   "tojson",  "trim",       "unique",      "upper",  "wordcount"};
  return names;
}

const std::vector<std::string>& test_names() {
  static const std::vector<std::string> names = {
      "boolean",  "callable", "defined",  "divisibleby", "eq",     "equalto",     "escaped", "even",
      "false",    "filter",   "float",    "ge",          "gt",     "greaterthan", "in",      "integer",
      "iterable", "le",       "lessthan", "lower",       "lt",     "mapping",     "ne",      "none",
      "number",   "odd",      "sameas",   "sequence",    "string", "test",        "true",    "undefined",
      "upper",    "==",       "!=",       "<",           "<=",     ">",           ">="};
  return names;
}

}  // namespace

class Interpreter {
 public:
  Interpreter(const std::string& origin, const JinjaLimits& limits) : origin_(origin), limits_(limits) {}

  std::string run(const Body& body, const nlohmann::ordered_json& variables) {
    install_globals();
    if (!variables.is_object()) throw JinjaError(origin_ + ": the template variables must be a JSON object");
    for (auto it = variables.begin(); it != variables.end(); ++it) root_.vars[it.key()] = from_json(it.value());
    std::string out;
    out_ = &out;
    exec(body, root_);
    return out;
  }

  [[noreturn]] void error(Pos pos, const std::string& message) { fail(origin_, pos, message); }

  // ---- statements ----
  Flow exec(const Body& body, Scope& scope) {
    for (const auto& node : body) {
      const Flow f = exec(*node, scope);
      if (f != Flow::Normal) return f;
    }
    return Flow::Normal;
  }

  Flow exec(const Node& n, Scope& scope) {
    switch (n.kind) {
      case Node::Kind::Text: emit(n.text, n.pos); break;
      case Node::Kind::Output: emit(to_str(eval(*n.expr, scope)), n.pos); break;
      case Node::Kind::If:
        for (const auto& [cond, body] : n.branches)
          if (!cond || truthy(eval(*cond, scope))) return exec(body, scope);
        break;
      case Node::Kind::For: return exec_for(n, scope);
      case Node::Kind::Set: assign(n.target, eval(*n.expr, scope), scope, n.pos); break;
      case Node::Kind::SetBlock: assign(n.target, Value::from_string(capture(n.body, scope)), scope, n.pos); break;
      case Node::Kind::Macro: scope.vars[n.macro->name] = make_macro(n.macro, root_); break;
      case Node::Kind::CallBlock: {
        const Expr& call = *n.expr;
        Value callee = eval(*call.children[0], scope);
        Arguments args = eval_args(call, scope, 1);
        args.named.emplace_back("caller", make_macro(n.macro, scope));
        emit(to_str(invoke(callee, args, call.pos)), n.pos);
        break;
      }
      case Node::Kind::FilterBlock: {
        Scope inner;
        inner.parent = &scope;
        inner.vars[kFilterBlockBody] = Value::from_string(capture(n.body, scope));
        emit(to_str(eval(*n.expr, inner)), n.pos);
        break;
      }
      case Node::Kind::Break:
        if (loop_depth_ == 0) error(n.pos, "{% break %} outside a for loop");
        return Flow::Break;
      case Node::Kind::Continue:
        if (loop_depth_ == 0) error(n.pos, "{% continue %} outside a for loop");
        return Flow::Continue;
      case Node::Kind::Generation: return exec(n.body, scope);
    }
    return Flow::Normal;
  }

  void emit(const std::string& s, Pos pos) {
    if (out_->size() + s.size() > limits_.max_output_bytes)
      error(pos, "rendered text exceeds " + std::to_string(limits_.max_output_bytes) + " bytes");
    *out_ += s;
  }

  std::string capture(const Body& body, Scope& scope) {
    std::string buffer;
    std::string* saved = out_;
    out_ = &buffer;
    try {
      exec(body, scope);
    } catch (...) {
      out_ = saved;
      throw;
    }
    out_ = saved;
    return buffer;
  }

  void assign(const AssignTarget& t, Value value, Scope& scope, Pos pos) {
    if (!t.attribute.empty()) {
      Value* ns = scope.find(t.names[0]);
      if (!ns || ns->kind != Kind::Namespace)
        error(pos, "cannot assign attribute on non-namespace object '" + t.names[0] + "'");
      // Only here can a value come to contain itself (lists and dicts are not changed once made): refuse every
      // namespace inside a namespace's attribute, which rules out the cycle that printing would recurse through.
      if (holds_namespace(value))
        error(pos, "cannot store a namespace in '" + t.names[0] + "." + t.attribute +
                       "': a namespace inside a namespace could contain itself (lal refuses it)");
      try {
        ns->dict->set(t.attribute, std::move(value));
      } catch (const JinjaError& e) {
        error(pos, e.what());
      }
      return;
    }
    if (!t.tuple) {
      scope.vars[t.names[0]] = std::move(value);
      return;
    }
    const List items = iterate(value, pos);
    if (items.size() != t.names.size())
      error(pos, "cannot unpack " + std::to_string(items.size()) + " values into " + std::to_string(t.names.size()) +
                     " names");
    for (std::size_t i = 0; i < items.size(); ++i) scope.vars[t.names[i]] = items[i];
  }

  Flow exec_for(const Node& n, Scope& scope) {
    const Value iterable = eval(*n.expr, scope);
    List items = iterate(iterable, n.expr->pos);
    if (n.condition) {
      List kept;
      for (auto& item : items) {
        Scope probe;
        probe.parent = &scope;
        assign(n.target, item, probe, n.pos);
        if (truthy(eval(*n.condition, probe))) kept.push_back(std::move(item));
      }
      items = std::move(kept);
    }
    if (items.empty()) return n.else_body.empty() ? Flow::Normal : exec(n.else_body, scope);
    ++loop_depth_;
    const std::int64_t length = static_cast<std::int64_t>(items.size());
    for (std::int64_t i = 0; i < length; ++i) {
      if (++iterations_ > limits_.max_loop_iterations)
        error(n.pos, "more than " + std::to_string(limits_.max_loop_iterations) + " loop iterations");
      Scope body_scope;
      body_scope.parent = &scope;
      assign(n.target, items[i], body_scope, n.pos);
      Value loop = Value::new_dict();
      Dict& d = *loop.dict;
      d.set("index", Value::from_int(i + 1));
      d.set("index0", Value::from_int(i));
      d.set("revindex", Value::from_int(length - i));
      d.set("revindex0", Value::from_int(length - i - 1));
      d.set("first", Value::from_bool(i == 0));
      d.set("last", Value::from_bool(i == length - 1));
      d.set("length", Value::from_int(length));
      d.set("depth", Value::from_int(1));
      d.set("depth0", Value::from_int(0));
      if (i > 0) d.set("previtem", items[i - 1]);
      if (i + 1 < length) d.set("nextitem", items[i + 1]);
      auto cycle = std::make_shared<Callable>();
      cycle->name = "loop.cycle";
      cycle->call = [i](Interpreter& in, Arguments& a, Pos pos) -> Value {
        if (a.positional.empty()) in.error(pos, "loop.cycle() needs at least one value");
        return a.positional[static_cast<std::size_t>(i) % a.positional.size()];
      };
      Value cv;
      cv.kind = Kind::Callable;
      cv.callable = cycle;
      d.set("cycle", cv);
      body_scope.vars["loop"] = loop;
      const Flow f = exec(n.body, body_scope);
      if (f == Flow::Break) break;
    }
    --loop_depth_;
    return Flow::Normal;
  }

  List iterate(const Value& v, Pos pos) {
    switch (v.kind) {
      case Kind::Undefined: return {};
      case Kind::List: return *v.list;
      case Kind::Dict: {
        List keys;
        for (const auto& kv : v.dict->items) keys.push_back(Value::from_string(kv.first));
        return keys;
      }
      case Kind::String: {
        List chars;
        for (char32_t c : decode(v.text)) {
          std::string s;
          append_utf8(s, c);
          chars.push_back(Value::from_string(std::move(s)));
        }
        return chars;
      }
      default: error(pos, std::string("'") + type_name(v) + "' object is not iterable");
    }
  }

  // Macros see the template's top-level names (closure = the root scope); a call block's caller sees the scope of
  // the {% call %}, which outlives the call.
  Value make_macro(const std::shared_ptr<MacroDef>& def, Scope& defining_scope) {
    auto c = std::make_shared<Callable>();
    c->name = def->name;
    Scope* closure = &defining_scope;
    c->call = [def, closure](Interpreter& in, Arguments& a, Pos pos) -> Value {
      return in.call_macro(*def, closure, a, pos);
    };
    Value v;
    v.kind = Kind::Callable;
    v.callable = c;
    return v;
  }

  Value call_macro(const MacroDef& def, Scope* closure, Arguments& a, Pos pos) {
    if (++call_depth_ > limits_.max_call_depth)
      error(pos, "macro '" + def.name + "' nests deeper than " + std::to_string(limits_.max_call_depth) + " calls");
    Scope scope;
    scope.parent = closure;
    if (a.positional.size() > def.params.size())
      error(pos, "macro '" + def.name + "' takes not more than " + std::to_string(def.params.size()) + " argument(s)");
    for (std::size_t i = 0; i < def.params.size(); ++i) {
      // Not a structured binding: lambdas cannot capture those in C++17 (clang refuses, gcc allows).
      const std::string& name = def.params[i].first;
      const auto& default_expr = def.params[i].second;
      if (i < a.positional.size()) {
        scope.vars[name] = a.positional[i];
        continue;
      }
      auto named = std::find_if(a.named.begin(), a.named.end(), [&](const auto& kv) { return kv.first == name; });
      if (named != a.named.end())
        scope.vars[name] = named->second;
      else if (default_expr)
        scope.vars[name] = eval(*default_expr, scope);
      else
        scope.vars[name] = Value::undefined("parameter '" + name + "' was not provided");
    }
    for (const auto& named_arg : a.named) {
      const auto& key = named_arg.first;
      const auto& value = named_arg.second;
      const bool is_param =
          std::any_of(def.params.begin(), def.params.end(), [&](const auto& p) { return p.first == key; });
      if (key == "caller")
        scope.vars["caller"] = value;
      else if (!is_param)
        error(pos, "macro '" + def.name + "' takes no keyword argument '" + key + "'");
    }
    const int saved_loops = loop_depth_;
    loop_depth_ = 0;
    std::string text;
    try {
      text = capture(def.body, scope);
    } catch (...) {
      loop_depth_ = saved_loops;
      --call_depth_;
      throw;
    }
    loop_depth_ = saved_loops;
    --call_depth_;
    return Value::from_string(std::move(text));
  }

  Value invoke(const Value& callee, Arguments& args, Pos pos) {
    if (callee.kind == Kind::Undefined) error(pos, callee.text);
    if (callee.kind != Kind::Callable) error(pos, std::string("'") + type_name(callee) + "' object is not callable");
    return callee.callable->call(*this, args, pos);
  }

  Arguments eval_args(const Expr& e, Scope& scope, std::size_t first) {
    Arguments a;
    for (std::size_t i = first; i < e.children.size(); ++i) a.positional.push_back(eval(*e.children[i], scope));
    for (const auto& [k, v] : e.named) a.named.emplace_back(k, eval(*v, scope));
    return a;
  }

  // ---- expressions ----
  Value eval(const Expr& e, Scope& scope) {
    switch (e.kind) {
      case Expr::Kind::Literal: return e.value;
      case Expr::Kind::Name: {
        if (Value* v = scope.find(e.name)) return *v;
        return Value::undefined("'" + e.name + "' is undefined");
      }
      case Expr::Kind::Attr: return get_attr(eval(*e.children[0], scope), e.name, e.pos);
      case Expr::Kind::Item: return get_item(eval(*e.children[0], scope), eval(*e.children[1], scope), e.pos);
      case Expr::Kind::Slice: return slice(e, scope);
      case Expr::Kind::Call: {
        Value callee = eval(*e.children[0], scope);
        Arguments args = eval_args(e, scope, 1);
        return invoke(callee, args, e.pos);
      }
      case Expr::Kind::Filter: {
        Value target = eval(*e.children[0], scope);
        Arguments args = eval_args(e, scope, 1);
        return apply_filter(e.name, std::move(target), args, e.pos);
      }
      case Expr::Kind::Test: {
        Value target = eval(*e.children[0], scope);
        Arguments args = eval_args(e, scope, 1);
        const bool r = apply_test(e.name, target, args, e.pos);
        return Value::from_bool(e.negated ? !r : r);
      }
      case Expr::Kind::Unary: {
        Value v = eval(*e.children[0], scope);
        if (e.name == "not") return Value::from_bool(!truthy(v));
        if (v.is_undefined()) error(e.pos, v.text);
        if (!v.is_number())
          error(e.pos, std::string("bad operand type for unary ") + e.name + ": '" + type_name(v) + "'");
        if (e.name == "+") return v.kind == Kind::Bool ? Value::from_int(v.boolean) : v;
        return v.kind == Kind::Float ? Value::from_float(-v.number) : Value::from_int(-as_int(v));
      }
      case Expr::Kind::Binary: return binary(e, scope);
      case Expr::Kind::And: {
        Value l = eval(*e.children[0], scope);
        return truthy(l) ? eval(*e.children[1], scope) : l;
      }
      case Expr::Kind::Or: {
        Value l = eval(*e.children[0], scope);
        return truthy(l) ? l : eval(*e.children[1], scope);
      }
      case Expr::Kind::Conditional: {
        if (truthy(eval(*e.children[1], scope))) return eval(*e.children[0], scope);
        if (e.children[2]) return eval(*e.children[2], scope);
        return Value::undefined("the inline if-expression on line " + std::to_string(e.pos.line) +
                                " evaluated to false and no else section was defined");
      }
      case Expr::Kind::ListLiteral:
      case Expr::Kind::TupleLiteral: {
        List items;
        for (const auto& c : e.children) items.push_back(eval(*c, scope));
        return Value::from_list(std::move(items), e.kind == Expr::Kind::TupleLiteral);
      }
      case Expr::Kind::DictLiteral: {
        Value d = Value::new_dict();
        for (std::size_t i = 0; i + 1 < e.children.size(); i += 2) {
          Value key = eval(*e.children[i], scope);
          if (!key.is_string()) error(e.children[i]->pos, "only string keys are supported in dict literals");
          d.dict->set(key.text, eval(*e.children[i + 1], scope));
        }
        return d;
      }
    }
    error(e.pos, "internal error: unknown expression");
  }

  Value binary(const Expr& e, Scope& scope) {
    const std::string& op = e.name;
    Value a = eval(*e.children[0], scope);
    Value b = eval(*e.children[1], scope);
    if (op == "==") return Value::from_bool(equals(a, b));
    if (op == "!=") return Value::from_bool(!equals(a, b));
    if (op == "in" || op == "not in") {
      const bool r = contains(b, a, e.pos);
      return Value::from_bool(op == "in" ? r : !r);
    }
    if (op == "~") {
      std::string s = to_str(a) + to_str(b);
      check_size(s, e.pos);
      return Value::from_string(std::move(s));
    }
    if (a.is_undefined()) error(e.pos, a.text);
    if (b.is_undefined()) error(e.pos, b.text);
    if (op == "<" || op == ">" || op == "<=" || op == ">=") {
      const int c = compare(a, b, op, e.pos);
      if (op == "<") return Value::from_bool(c < 0);
      if (op == ">") return Value::from_bool(c > 0);
      if (op == "<=") return Value::from_bool(c <= 0);
      return Value::from_bool(c >= 0);
    }
    return arithmetic(op, a, b, e.pos);
  }

  void check_size(const std::string& s, Pos pos) {
    if (s.size() > limits_.max_output_bytes)
      error(pos, "a string exceeds " + std::to_string(limits_.max_output_bytes) + " bytes");
  }

  [[noreturn]] void type_error(Pos pos, const std::string& op, const Value& a, const Value& b) {
    error(pos, "unsupported operand type(s) for " + op + ": '" + type_name(a) + "' and '" + type_name(b) + "'");
  }

  Value arithmetic(const std::string& op, const Value& a, const Value& b, Pos pos) {
    if (a.is_number() && b.is_number()) {
      const bool ints = is_integral(a) && is_integral(b);
      // Python's integers do not overflow; lal's are 64-bit, so a result past that is refused, never wrapped.
      std::int64_t r = 0;
      const auto checked = [&](bool overflowed) {
        if (overflowed) error(pos, "integer overflow in '" + op + "': the result does not fit in 64 bits");
        return Value::from_int(r);
      };
      if (op == "+")
        return ints ? checked(__builtin_add_overflow(as_int(a), as_int(b), &r))
                    : Value::from_float(as_double(a) + as_double(b));
      if (op == "-")
        return ints ? checked(__builtin_sub_overflow(as_int(a), as_int(b), &r))
                    : Value::from_float(as_double(a) - as_double(b));
      if (op == "*")
        return ints ? checked(__builtin_mul_overflow(as_int(a), as_int(b), &r))
                    : Value::from_float(as_double(a) * as_double(b));
      if (op == "/") {
        if (as_double(b) == 0) error(pos, "division by zero");
        return Value::from_float(as_double(a) / as_double(b));
      }
      if (op == "//" || op == "%") {
        if (as_double(b) == 0) error(pos, op == "//" ? "integer division or modulo by zero" : "modulo by zero");
        if (ints) {
          const std::int64_t x = as_int(a), y = as_int(b);
          if (x == std::numeric_limits<std::int64_t>::min() && y == -1)
            error(pos, "integer overflow in '" + op + "': the result does not fit in 64 bits");
          std::int64_t q = x / y;
          r = x % y;
          if (r != 0 && ((r < 0) != (y < 0))) --q, r += y;
          return Value::from_int(op == "//" ? q : r);
        }
        const double x = as_double(a), y = as_double(b);
        const double q = std::floor(x / y);
        return Value::from_float(op == "//" ? q : x - q * y);
      }
      if (op == "**") {
        if (ints && as_int(b) >= 0) {
          // Square-and-multiply: exact, or an overflow error (never a wrapped or truncated result).
          std::int64_t base = as_int(a), exponent = as_int(b);
          bool overflowed = false;
          r = 1;
          while (exponent > 0 && !overflowed) {
            if (exponent & 1) overflowed = __builtin_mul_overflow(r, base, &r);
            exponent >>= 1;
            if (exponent > 0 && !overflowed) overflowed = __builtin_mul_overflow(base, base, &base);
          }
          return checked(overflowed);
        }
        return Value::from_float(std::pow(as_double(a), as_double(b)));
      }
    }
    if (op == "+" && a.is_string() && b.is_string()) {
      std::string s = a.text + b.text;
      check_size(s, pos);
      return Value::from_string(std::move(s));
    }
    if (op == "+" && a.is_list() && b.is_list()) {
      List items = *a.list;
      items.insert(items.end(), b.list->begin(), b.list->end());
      return Value::from_list(std::move(items), a.is_tuple);
    }
    if (op == "*" && (a.is_string() || a.is_list()) && is_integral(b)) {
      const std::int64_t n = std::max<std::int64_t>(0, as_int(b));
      const std::size_t unit = a.is_string() ? a.text.size() : a.list->size();
      std::size_t total = 0;
      if (__builtin_mul_overflow(unit, static_cast<std::size_t>(n), &total) || total > limits_.max_output_bytes)
        error(pos, "repetition result is too large");
      // Empty repeated any number of times is empty, at once: `'' * 10**18` is not 10**18 appends of nothing.
      if (total == 0) return a.is_string() ? Value::from_string("") : Value::from_list({}, a.is_tuple);
      if (a.is_string()) {
        std::string s;
        s.reserve(total);
        for (std::int64_t i = 0; i < n; ++i) s += a.text;
        return Value::from_string(std::move(s));
      }
      List items;
      for (std::int64_t i = 0; i < n; ++i) items.insert(items.end(), a.list->begin(), a.list->end());
      return Value::from_list(std::move(items), a.is_tuple);
    }
    if (op == "%" && a.is_string())
      error(pos, "printf-style string formatting (str % value) is not supported; use |format");
    type_error(pos, op, a, b);
  }

  int compare(const Value& a, const Value& b, const std::string& op, Pos pos) {
    if (a.is_number() && b.is_number()) {
      if (is_integral(a) && is_integral(b)) return as_int(a) < as_int(b) ? -1 : as_int(a) > as_int(b) ? 1 : 0;
      const double x = as_double(a), y = as_double(b);
      return x < y ? -1 : x > y ? 1 : 0;
    }
    if (a.is_string() && b.is_string()) return a.text < b.text ? -1 : a.text > b.text ? 1 : 0;
    if (a.is_list() && b.is_list()) {
      for (std::size_t i = 0; i < a.list->size() && i < b.list->size(); ++i) {
        if (equals((*a.list)[i], (*b.list)[i])) continue;
        return compare((*a.list)[i], (*b.list)[i], op, pos);
      }
      return a.list->size() < b.list->size() ? -1 : a.list->size() > b.list->size() ? 1 : 0;
    }
    error(pos, "'" + op + "' not supported between instances of '" + type_name(a) + "' and '" + type_name(b) + "'");
  }

  bool contains(const Value& container, const Value& item, Pos pos) {
    switch (container.kind) {
      case Kind::Undefined: return false;
      case Kind::String:
        if (!item.is_string())
          error(pos, std::string("'in <string>' requires string as left operand, not ") + type_name(item));
        return container.text.find(item.text) != std::string::npos;
      case Kind::List:
        return std::any_of(container.list->begin(), container.list->end(),
                           [&](const Value& v) { return equals(v, item); });
      case Kind::Dict: return item.is_string() && container.dict->find(item.text) != nullptr;
      default: error(pos, std::string("argument of type '") + type_name(container) + "' is not iterable");
    }
  }

  // Python indexing with negative indices; nullopt when out of range.
  static std::optional<std::size_t> index_of(std::int64_t i, std::size_t size) {
    if (i < 0) i += static_cast<std::int64_t>(size);
    if (i < 0 || i >= static_cast<std::int64_t>(size)) return std::nullopt;
    return static_cast<std::size_t>(i);
  }

  Value get_item(const Value& obj, const Value& key, Pos pos) {
    if (obj.is_undefined()) error(pos, obj.text);
    if ((obj.kind == Kind::Dict || obj.kind == Kind::Namespace) && key.is_string()) {
      if (const Value* v = obj.dict->find(key.text)) return *v;
      if (obj.kind == Kind::Dict) {
        Value m = method(obj, key.text);
        if (!m.is_undefined()) return m;
      }
      return Value::undefined("'dict object' has no attribute '" + key.text + "'");
    }
    if (obj.is_list() && is_integral(key)) {
      if (auto i = index_of(as_int(key), obj.list->size())) return (*obj.list)[*i];
      return Value::undefined(std::string(obj.is_tuple ? "tuple" : "list") + " object has no element " +
                              std::to_string(as_int(key)));
    }
    if (obj.is_string() && is_integral(key)) {
      const std::u32string u = decode(obj.text);
      if (auto i = index_of(as_int(key), u.size())) return Value::from_string(encode(u.substr(*i, 1)));
      return Value::undefined("str object has no element " + std::to_string(as_int(key)));
    }
    if (key.is_string()) return get_attr(obj, key.text, pos);
    return Value::undefined(std::string("'") + type_name(obj) + " object' has no attribute " + repr(key));
  }

  Value get_attr(const Value& obj, const std::string& name, Pos pos) {
    if (obj.is_undefined()) error(pos, obj.text);
    if (obj.kind == Kind::Dict) {
      Value m = method(obj, name);
      if (!m.is_undefined()) return m;
      if (const Value* v = obj.dict->find(name)) return *v;
    } else if (obj.kind == Kind::Namespace) {
      if (const Value* v = obj.dict->find(name)) return *v;
    } else {
      Value m = method(obj, name);
      if (!m.is_undefined()) return m;
    }
    return Value::undefined(std::string("'") + type_name(obj) + " object' has no attribute '" + name + "'");
  }

  Value slice(const Expr& e, Scope& scope) {
    const Value obj = eval(*e.children[0], scope);
    if (obj.is_undefined()) error(e.pos, obj.text);
    auto bound = [&](const ExprPtr& x) -> std::optional<std::int64_t> {
      if (!x) return std::nullopt;
      const Value v = eval(*x, scope);
      if (v.is_none()) return std::nullopt;
      if (!is_integral(v)) error(x->pos, "slice indices must be integers or None");
      return as_int(v);
    };
    const auto start = bound(e.children[1]), stop = bound(e.children[2]), step_opt = bound(e.children[3]);
    const std::int64_t step = step_opt.value_or(1);
    if (step == 0) error(e.pos, "slice step cannot be zero");
    auto pick = [&](std::int64_t size) {
      std::vector<std::int64_t> idx;
      auto clamp = [&](std::optional<std::int64_t> v, std::int64_t def) -> std::int64_t {
        if (!v) return def;
        std::int64_t x = *v;
        if (x < 0) x += size;
        if (step > 0) return std::clamp<std::int64_t>(x, 0, size);
        return std::clamp<std::int64_t>(x, -1, size - 1);
      };
      const std::int64_t b = clamp(start, step > 0 ? 0 : size - 1), en = clamp(stop, step > 0 ? size : -1);
      for (std::int64_t i = b; step > 0 ? i < en : i > en; i += step) idx.push_back(i);
      return idx;
    };
    if (obj.is_list()) {
      List out;
      for (auto i : pick(static_cast<std::int64_t>(obj.list->size()))) out.push_back((*obj.list)[i]);
      return Value::from_list(std::move(out), obj.is_tuple);
    }
    if (obj.is_string()) {
      if (is_ascii(obj.text) && step == 1) {
        std::string out;
        for (auto i : pick(static_cast<std::int64_t>(obj.text.size()))) out += obj.text[i];
        return Value::from_string(std::move(out));
      }
      const std::u32string u = decode(obj.text);
      std::u32string out;
      for (auto i : pick(static_cast<std::int64_t>(u.size()))) out += u[i];
      return Value::from_string(encode(out));
    }
    error(e.pos, std::string("'") + type_name(obj) + "' object is not subscriptable");
  }

  // ---- methods of str, dict and list ----
  Value bound(const Value& self, const std::string& name,
              std::function<Value(Interpreter&, const Value&, Arguments&, Pos)> fn) {
    auto c = std::make_shared<Callable>();
    c->name = name;
    c->call = [self, fn](Interpreter& in, Arguments& a, Pos pos) { return fn(in, self, a, pos); };
    Value v;
    v.kind = Kind::Callable;
    v.callable = c;
    return v;
  }

  static const Value* arg(Arguments& a, std::size_t i, const char* name) {
    if (i < a.positional.size()) return &a.positional[i];
    for (const auto& kv : a.named)
      if (kv.first == name) return &kv.second;
    return nullptr;
  }

  std::string string_arg(Arguments& a, std::size_t i, const char* name, Pos pos, const char* what) {
    const Value* v = arg(a, i, name);
    if (!v || !v->is_string()) error(pos, std::string(what) + " needs a string argument '" + name + "'");
    return v->text;
  }

  Value method(const Value& obj, const std::string& name) {
    if (obj.is_string()) return string_method(obj, name);
    if (obj.kind == Kind::Dict) {
      if (name == "items" || name == "keys" || name == "values")
        return bound(obj, name, [name](Interpreter&, const Value& self, Arguments&, Pos) {
          List out;
          for (const auto& kv : self.dict->items) {
            if (name == "items")
              out.push_back(Value::from_list({Value::from_string(kv.first), kv.second}, true));
            else if (name == "keys")
              out.push_back(Value::from_string(kv.first));
            else
              out.push_back(kv.second);
          }
          return Value::from_list(std::move(out));
        });
      if (name == "get")
        return bound(obj, name, [](Interpreter& in, const Value& self, Arguments& a, Pos pos) {
          if (a.positional.empty()) in.error(pos, "dict.get() needs a key");
          const Value& key = a.positional[0];
          if (key.is_string())
            if (const Value* v = self.dict->find(key.text)) return *v;
          return a.positional.size() > 1 ? a.positional[1] : Value::none();
        });
      if (name == "update" || name == "pop" || name == "popitem" || name == "setdefault" || name == "clear")
        return unsafe(obj, name);
      return Value::undefined("");
    }
    if (obj.is_list()) {
      if (name == "index" || name == "count")
        return bound(obj, name, [name](Interpreter& in, const Value& self, Arguments& a, Pos pos) -> Value {
          if (a.positional.empty()) in.error(pos, "list." + name + "() needs an argument");
          std::int64_t n = 0;
          for (std::size_t i = 0; i < self.list->size(); ++i) {
            if (!equals((*self.list)[i], a.positional[0])) continue;
            if (name == "index") return Value::from_int(static_cast<std::int64_t>(i));
            ++n;
          }
          if (name == "index") in.error(pos, repr(a.positional[0]) + " is not in list");
          return Value::from_int(n);
        });
      if (name == "append" || name == "pop" || name == "insert" || name == "extend" || name == "remove" ||
          name == "reverse" || name == "sort" || name == "clear")
        return unsafe(obj, name);
    }
    return Value::undefined("");
  }

  // transformers renders in an ImmutableSandboxedEnvironment: methods that modify a list or dict are refused.
  Value unsafe(const Value& obj, const std::string& name) {
    const std::string type = type_name(obj);
    return bound(obj, name, [type, name](Interpreter& in, const Value&, Arguments&, Pos pos) -> Value {
      in.error(pos, "access to attribute '" + name + "' of '" + type +
                        "' object is unsafe (transformers renders chat templates in an immutable sandbox)");
    });
  }

  Value string_method(const Value& obj, const std::string& name) {
    using Fn = std::function<Value(Interpreter&, const Value&, Arguments&, Pos)>;
    Fn fn;
    if (name == "strip" || name == "lstrip" || name == "rstrip") {
      fn = [name](Interpreter& in, const Value& self, Arguments& a, Pos pos) {
        const Value* chars = arg(a, 0, "chars");
        if (chars && !chars->is_string() && !chars->is_none())
          in.error(pos, "str." + name + "() chars must be a string");
        const std::string* set = chars && chars->is_string() ? &chars->text : nullptr;
        return Value::from_string(strip(self.text, set, name != "rstrip", name != "lstrip"));
      };
    } else if (name == "split" || name == "rsplit") {
      fn = [name](Interpreter& in, const Value& self, Arguments& a, Pos pos) {
        const Value* sep = arg(a, 0, "sep");
        const Value* maxv = arg(a, 1, "maxsplit");
        const std::int64_t maxsplit = maxv && is_integral(*maxv) ? as_int(*maxv) : -1;
        return Value::from_list(
            split(in, self.text, sep && !sep->is_none() ? sep : nullptr, maxsplit, name == "rsplit", pos));
      };
    } else if (name == "splitlines") {
      fn = [](Interpreter&, const Value& self, Arguments& a, Pos) {
        const Value* keep = arg(a, 0, "keepends");
        const bool keepends = keep && truthy(*keep);
        List out;
        const std::string& s = self.text;
        std::size_t start = 0;
        for (std::size_t i = 0; i < s.size(); ++i) {
          if (s[i] == '\n' || s[i] == '\r') {
            std::size_t end = i;
            if (s[i] == '\r' && i + 1 < s.size() && s[i + 1] == '\n') ++i;
            out.push_back(Value::from_string(s.substr(start, (keepends ? i + 1 : end) - start)));
            start = i + 1;
          }
        }
        if (start < s.size()) out.push_back(Value::from_string(s.substr(start)));
        return Value::from_list(std::move(out));
      };
    } else if (name == "startswith" || name == "endswith") {
      fn = [name](Interpreter& in, const Value& self, Arguments& a, Pos pos) {
        if (a.positional.empty()) in.error(pos, "str." + name + "() needs an argument");
        List options = a.positional[0].is_list() ? *a.positional[0].list : List{a.positional[0]};
        for (const auto& o : options) {
          if (!o.is_string()) in.error(pos, "str." + name + "() needs a string or a tuple of strings");
          const std::string& s = self.text;
          const bool hit = name == "startswith" ? s.compare(0, o.text.size(), o.text) == 0
                                                : s.size() >= o.text.size() &&
                                                      s.compare(s.size() - o.text.size(), o.text.size(), o.text) == 0;
          if (hit) return Value::from_bool(true);
        }
        return Value::from_bool(false);
      };
    } else if (name == "replace") {
      fn = [](Interpreter& in, const Value& self, Arguments& a, Pos pos) {
        const std::string old = in.string_arg(a, 0, "old", pos, "str.replace()");
        const std::string with = in.string_arg(a, 1, "new", pos, "str.replace()");
        const Value* count = arg(a, 2, "count");
        return Value::from_string(
            in.replace(self.text, old, with, count && is_integral(*count) ? as_int(*count) : -1, pos));
      };
    } else if (name == "upper" || name == "lower") {
      fn = [name](Interpreter&, const Value& self, Arguments&, Pos) {
        return Value::from_string(map_case(self.text, name == "upper" ? to_upper : to_lower));
      };
    } else if (name == "title") {
      fn = [](Interpreter&, const Value& self, Arguments&, Pos) { return Value::from_string(py_title(self.text)); };
    } else if (name == "capitalize") {
      fn = [](Interpreter&, const Value& self, Arguments&, Pos) { return Value::from_string(capitalize(self.text)); };
    } else if (name == "find" || name == "rfind" || name == "index" || name == "rindex" || name == "count") {
      fn = [name](Interpreter& in, const Value& self, Arguments& a, Pos pos) {
        const std::string sub = in.string_arg(a, 0, "sub", pos, ("str." + name + "()").c_str());
        if (name == "count") {
          if (sub.empty()) return Value::from_int(static_cast<std::int64_t>(length_of(self.text) + 1));
          std::int64_t n = 0;
          for (std::size_t p = self.text.find(sub); p != std::string::npos; p = self.text.find(sub, p + sub.size()))
            ++n;
          return Value::from_int(n);
        }
        const std::size_t p = name[0] == 'r' ? self.text.rfind(sub) : self.text.find(sub);
        if (p == std::string::npos) {
          if (name == "index" || name == "rindex") in.error(pos, "substring not found");
          return Value::from_int(-1);
        }
        return Value::from_int(static_cast<std::int64_t>(length_of(self.text.substr(0, p))));
      };
    } else if (name == "join") {
      fn = [](Interpreter& in, const Value& self, Arguments& a, Pos pos) {
        if (a.positional.empty()) in.error(pos, "str.join() needs an iterable");
        std::string out;
        bool first = true;
        for (const auto& v : in.iterate(a.positional[0], pos)) {
          if (!v.is_string())
            in.error(pos, std::string("str.join(): expected str instance, ") + type_name(v) + " found");
          if (!first) out += self.text;
          first = false;
          out += v.text;
        }
        return Value::from_string(std::move(out));
      };
    } else if (name == "format") {
      fn = [](Interpreter& in, const Value& self, Arguments& a, Pos pos) {
        return Value::from_string(in.format(self.text, a, pos));
      };
    } else if (name == "isdigit" || name == "isalpha" || name == "isalnum" || name == "isspace" || name == "islower" ||
               name == "isupper") {
      fn = [name](Interpreter&, const Value& self, Arguments&, Pos) {
        const std::u32string u = decode(self.text);
        if (u.empty()) return Value::from_bool(false);
        bool cased = false, ok = true;
        for (char32_t c : u) {
          if (name == "isdigit")
            ok = ok && u_isdigit(c);
          else if (name == "isalpha")
            ok = ok && u_isUAlphabetic(c);
          else if (name == "isalnum")
            ok = ok && (u_isUAlphabetic(c) || u_isdigit(c));
          else if (name == "isspace")
            ok = ok && is_space(c);
          else if (name == "islower") {
            if (u_isUUppercase(c) || u_istitle(c)) ok = false;
            if (u_isULowercase(c)) cased = true;
          } else {
            if (u_isULowercase(c) || u_istitle(c)) ok = false;
            if (u_isUUppercase(c)) cased = true;
          }
        }
        if (name == "islower" || name == "isupper") ok = ok && cased;
        return Value::from_bool(ok);
      };
    } else {
      return Value::undefined("");
    }
    return bound(obj, name, fn);
  }

  static List split(Interpreter& in, const std::string& s, const Value* sep, std::int64_t maxsplit, bool from_right,
                    Pos pos) {
    List out;
    if (sep) {
      if (!sep->is_string()) in.error(pos, "str.split(): sep must be a string");
      const std::string& d = sep->text;
      if (d.empty()) in.error(pos, "str.split(): empty separator");
      std::vector<std::string> parts;
      if (!from_right) {
        std::size_t start = 0;
        for (std::int64_t n = 0; maxsplit < 0 || n < maxsplit; ++n) {
          const std::size_t p = s.find(d, start);
          if (p == std::string::npos) break;
          parts.push_back(s.substr(start, p - start));
          start = p + d.size();
        }
        parts.push_back(s.substr(start));
      } else {
        std::size_t end = s.size();
        for (std::int64_t n = 0; maxsplit < 0 || n < maxsplit; ++n) {
          if (end < d.size()) break;
          const std::size_t p = s.rfind(d, end - d.size());
          if (p == std::string::npos) break;
          parts.insert(parts.begin(), s.substr(p + d.size(), end - p - d.size()));
          end = p;
        }
        parts.insert(parts.begin(), s.substr(0, end));
      }
      for (auto& p : parts) out.push_back(Value::from_string(std::move(p)));
      return out;
    }
    // whitespace split: runs of whitespace separate, empty strings dropped
    const std::u32string u = decode(s);
    std::vector<std::u32string> parts;
    std::size_t i = 0;
    std::int64_t n = 0;
    if (from_right) {
      std::int64_t j = static_cast<std::int64_t>(u.size()) - 1;
      while (j >= 0) {
        while (j >= 0 && is_space(u[j])) --j;
        if (j < 0) break;
        if (maxsplit >= 0 && n == maxsplit) {
          std::u32string rest = u.substr(0, j + 1);
          std::size_t b = 0;
          while (b < rest.size() && is_space(rest[b])) ++b;
          parts.insert(parts.begin(), rest.substr(b));
          break;
        }
        std::int64_t end = j;
        while (j >= 0 && !is_space(u[j])) --j;
        parts.insert(parts.begin(), u.substr(j + 1, end - j));
        ++n;
      }
    } else {
      while (i < u.size()) {
        while (i < u.size() && is_space(u[i])) ++i;
        if (i >= u.size()) break;
        if (maxsplit >= 0 && n == maxsplit) {
          std::u32string rest = u.substr(i);
          while (!rest.empty() && is_space(rest.back())) rest.pop_back();
          parts.push_back(rest);
          break;
        }
        const std::size_t start = i;
        while (i < u.size() && !is_space(u[i])) ++i;
        parts.push_back(u.substr(start, i - start));
        ++n;
      }
    }
    for (auto& p : parts) out.push_back(Value::from_string(encode(p)));
    return out;
  }

  std::string replace(const std::string& s, const std::string& old, const std::string& with, std::int64_t count,
                      Pos pos) {
    std::string out;
    if (old.empty()) {  // Python inserts `with` around every character
      const std::u32string u = decode(s);
      std::int64_t n = 0;
      for (std::size_t i = 0; i <= u.size(); ++i) {
        if (count < 0 || n < count) {
          out += with;
          ++n;
        }
        if (i < u.size()) append_utf8(out, u[i]);
      }
    } else {
      std::size_t start = 0;
      std::int64_t n = 0;
      while (count < 0 || n < count) {
        const std::size_t p = s.find(old, start);
        if (p == std::string::npos) break;
        out.append(s, start, p - start);
        out += with;
        start = p + old.size();
        ++n;
        if (out.size() > limits_.max_output_bytes) error(pos, "str.replace() result is too large");
      }
      out.append(s, start, std::string::npos);
    }
    check_size(out, pos);
    return out;
  }

  static std::string py_title(const std::string& s) {
    std::u32string u = decode(s);
    bool prev_cased = false;
    for (auto& c : u) {
      const bool cased = is_cased_letter(c);
      if (cased) c = prev_cased ? to_lower(c) : static_cast<char32_t>(u_totitle(c));
      prev_cased = cased;
    }
    return encode(u);
  }

  static std::string capitalize(const std::string& s) {
    std::u32string u = decode(s);
    for (std::size_t i = 0; i < u.size(); ++i) u[i] = i == 0 ? static_cast<char32_t>(u_totitle(u[i])) : to_lower(u[i]);
    return encode(u);
  }

  // str.format with {}, {0}, {name}, {{ and }} (format specs are refused).
  std::string format(const std::string& f, Arguments& a, Pos pos) {
    std::string out;
    std::size_t auto_index = 0;
    for (std::size_t i = 0; i < f.size(); ++i) {
      const char c = f[i];
      if (c == '{' && i + 1 < f.size() && f[i + 1] == '{') {
        out += '{';
        ++i;
      } else if (c == '}' && i + 1 < f.size() && f[i + 1] == '}') {
        out += '}';
        ++i;
      } else if (c == '{') {
        const std::size_t close = f.find('}', i);
        if (close == std::string::npos) error(pos, "str.format(): single '{' encountered in format string");
        const std::string field = f.substr(i + 1, close - i - 1);
        if (field.find_first_of(":!.[") != std::string::npos)
          error(pos, "str.format(): format specs and conversions are not supported ('{" + field + "}')");
        const Value* v = nullptr;
        if (field.empty()) {
          if (auto_index < a.positional.size()) v = &a.positional[auto_index];
          ++auto_index;
        } else if (std::all_of(field.begin(), field.end(), ::isdigit)) {
          const std::size_t k = std::stoul(field);
          if (k < a.positional.size()) v = &a.positional[k];
        } else {
          for (const auto& kv : a.named)
            if (kv.first == field) v = &kv.second;
        }
        if (!v) error(pos, "str.format(): no argument for '{" + field + "}'");
        out += to_str(*v);
        i = close;
      } else if (c == '}') {
        error(pos, "str.format(): single '}' encountered in format string");
      } else {
        out += c;
      }
    }
    return out;
  }

  // ---- filters ----
  Value attribute_of(const Value& item, const std::string& path, Pos pos) {
    Value v = item;
    std::size_t start = 0;
    while (true) {
      const std::size_t dot = path.find('.', start);
      const std::string part = path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
      if (v.is_undefined()) return v;
      if (!part.empty() && std::all_of(part.begin(), part.end(), ::isdigit)) {
        // An index past the 64-bit range is past the end of any list: undefined, as Jinja2's IndexError makes it
        // (std::stoll threw out_of_range here; found by fuzz_jinja, corpus/jinja/repro-attribute-index-out-of-range).
        std::int64_t index = 0;
        const auto [end, ec] = std::from_chars(part.data(), part.data() + part.size(), index);
        if (ec != std::errc() || end != part.data() + part.size())
          return Value::undefined(std::string(type_name(v)) + " object has no element " + part);
        v = get_item(v, Value::from_int(index), pos);
      } else
        v = get_item(v, Value::from_string(part), pos);
      if (dot == std::string::npos) return v;
      start = dot + 1;
    }
  }

  // The sort key of Jinja's sort/unique/min/max: strings are compared lower-cased unless case_sensitive.
  Value sort_key(const Value& v, bool case_sensitive) {
    if (!case_sensitive && v.is_string()) return Value::from_string(map_case(v.text, to_lower));
    return v;
  }

  static bool named_flag(Arguments& a, std::size_t i, const char* name, bool def) {
    const Value* v = arg(a, i, name);
    return v ? truthy(*v) : def;
  }

  Value apply_filter(const std::string& name, Value v, Arguments& a, Pos pos) {
    auto need_string = [&]() -> std::string {
      if (v.is_undefined()) return "";
      return to_str(v);
    };
    if (name == "default" || name == "d") {
      const Value* def = arg(a, 0, "default_value");
      const bool boolean = named_flag(a, 1, "boolean", false);
      if (v.is_undefined() || (boolean && !truthy(v))) return def ? *def : Value::from_string("");
      return v;
    }
    if (name == "length" || name == "count") {
      switch (v.kind) {
        case Kind::Undefined: return Value::from_int(0);
        case Kind::String: return Value::from_int(static_cast<std::int64_t>(length_of(v.text)));
        case Kind::List: return Value::from_int(static_cast<std::int64_t>(v.list->size()));
        case Kind::Dict: return Value::from_int(static_cast<std::int64_t>(v.dict->items.size()));
        default: error(pos, std::string("object of type '") + type_name(v) + "' has no len()");
      }
    }
    if (name == "tojson") {
      JsonStyle style;
      if (const Value* indent = arg(a, 0, "indent"); indent && !indent->is_none()) {
        style.use_indent = true;
        style.item_separator = ",";
        if (is_integral(*indent))
          style.indent = std::string(static_cast<std::size_t>(std::max<std::int64_t>(0, as_int(*indent))), ' ');
        else if (indent->is_string())
          style.indent = indent->text;
        else
          error(pos, "tojson: indent must be an integer or a string");
      }
      for (const auto& [key, value] : a.named) {
        if (key == "indent") continue;
        if (key == "ensure_ascii")
          style.ensure_ascii = truthy(value);
        else if (key == "sort_keys")
          style.sort_keys = truthy(value);
        else if (key == "separators") {
          if (value.is_none()) continue;
          if (!value.is_list() || value.list->size() != 2 || !(*value.list)[0].is_string() ||
              !(*value.list)[1].is_string())
            error(pos, "tojson: separators must be a pair of strings");
          style.item_separator = (*value.list)[0].text;
          style.key_separator = (*value.list)[1].text;
        } else {
          error(pos, "tojson: unsupported argument '" + key + "'");
        }
      }
      std::string out;
      try {
        to_json(out, v, style, 0, 0);
      } catch (const std::runtime_error& e) {
        if (v.is_undefined()) error(pos, "tojson: " + std::string(e.what()));
        error(pos, e.what());
      }
      check_size(out, pos);
      return Value::from_string(std::move(out));
    }
    if (name == "trim") {
      const Value* chars = arg(a, 0, "chars");
      return Value::from_string(strip(need_string(), chars && chars->is_string() ? &chars->text : nullptr, true, true));
    }
    if (name == "string") return Value::from_string(need_string());
    if (name == "safe") return v.is_string() ? v : Value::from_string(need_string());
    if (name == "upper") return Value::from_string(map_case(need_string(), to_upper));
    if (name == "lower") return Value::from_string(map_case(need_string(), to_lower));
    if (name == "capitalize") return Value::from_string(capitalize(need_string()));
    if (name == "title") {
      // Jinja: words start after '-', whitespace, '(', '{', '[' or '<'
      std::u32string u = decode(need_string());
      bool start = true;
      for (auto& c : u) {
        const bool sep = c == '-' || is_space(c) || c == '(' || c == '{' || c == '[' || c == '<';
        if (sep) {
          start = true;
          continue;
        }
        c = start ? to_upper(c) : to_lower(c);
        start = false;
      }
      return Value::from_string(encode(u));
    }
    if (name == "replace") {
      const std::string s = need_string();
      const Value* old = arg(a, 0, "old");
      const Value* with = arg(a, 1, "new");
      if (!old || !with) error(pos, "replace needs two arguments");
      const Value* count = arg(a, 2, "count");
      return Value::from_string(
          replace(s, to_str(*old), to_str(*with), count && is_integral(*count) ? as_int(*count) : -1, pos));
    }
    if (name == "join") {
      const Value* sep = arg(a, 0, "d");
      const Value* attribute = arg(a, 1, "attribute");
      std::string out;
      bool first = true;
      for (const auto& item : iterate(v, pos)) {
        if (!first && sep) out += to_str(*sep);
        first = false;
        out += to_str(attribute && !attribute->is_none() ? attribute_of(item, to_str(*attribute), pos) : item);
        check_size(out, pos);
      }
      return Value::from_string(std::move(out));
    }
    if (name == "list") return Value::from_list(iterate(v, pos));
    if (name == "first" || name == "last") {
      const List items = iterate(v, pos);
      if (items.empty()) return Value::undefined("No " + name + " item, sequence was empty.");
      return name == "first" ? items.front() : items.back();
    }
    if (name == "reverse") {
      if (v.is_string()) {
        std::u32string u = decode(v.text);
        std::reverse(u.begin(), u.end());
        return Value::from_string(encode(u));
      }
      List items = iterate(v, pos);
      std::reverse(items.begin(), items.end());
      return Value::from_list(std::move(items));
    }
    if (name == "items") {
      if (v.is_undefined()) return Value::from_list({});
      if (v.kind != Kind::Dict) error(pos, "items: can only get item pairs from a mapping");
      List out;
      for (const auto& kv : v.dict->items)
        out.push_back(Value::from_list({Value::from_string(kv.first), kv.second}, true));
      return Value::from_list(std::move(out));
    }
    if (name == "dictsort") {
      if (v.kind != Kind::Dict) error(pos, "dictsort: needs a mapping");
      const bool cs = named_flag(a, 0, "case_sensitive", false);
      const Value* by = arg(a, 1, "by");
      const bool by_value = by && by->is_string() && by->text == "value";
      const bool reverse = named_flag(a, 2, "reverse", false);
      List out;
      for (const auto& kv : v.dict->items)
        out.push_back(Value::from_list({Value::from_string(kv.first), kv.second}, true));
      std::stable_sort(out.begin(), out.end(), [&](const Value& x, const Value& y) {
        const int c = compare(sort_key((*x.list)[by_value], cs), sort_key((*y.list)[by_value], cs), "<", pos);
        return reverse ? c > 0 : c < 0;
      });
      return Value::from_list(std::move(out));
    }
    if (name == "sort" || name == "unique" || name == "min" || name == "max") {
      const bool reverse = name == "sort" && named_flag(a, 0, "reverse", false);
      const bool cs = named_flag(a, name == "sort" ? 1 : 0, "case_sensitive", false);
      const Value* attribute = arg(a, name == "sort" ? 2 : 1, "attribute");
      List items = iterate(v, pos);
      auto key = [&](const Value& x) {
        return sort_key(attribute && !attribute->is_none() ? attribute_of(x, to_str(*attribute), pos) : x, cs);
      };
      if (name == "unique") {
        List out, seen;
        for (const auto& x : items) {
          const Value k = key(x);
          if (std::none_of(seen.begin(), seen.end(), [&](const Value& s) { return equals(s, k); })) {
            seen.push_back(k);
            out.push_back(x);
          }
        }
        return Value::from_list(std::move(out));
      }
      if (name == "min" || name == "max") {
        if (items.empty()) return Value::undefined("No aggregated item, sequence was empty.");
        std::size_t best = 0;
        for (std::size_t i = 1; i < items.size(); ++i) {
          const int c = compare(key(items[i]), key(items[best]), "<", pos);
          if (name == "min" ? c < 0 : c > 0) best = i;
        }
        return items[best];
      }
      std::stable_sort(items.begin(), items.end(), [&](const Value& x, const Value& y) {
        const int c = compare(key(x), key(y), "<", pos);
        return reverse ? c > 0 : c < 0;
      });
      return Value::from_list(std::move(items));
    }
    if (name == "sum") {
      const Value* attribute = arg(a, 0, "attribute");
      const Value* start = arg(a, 1, "start");
      Value total = start ? *start : Value::from_int(0);
      for (const auto& x : iterate(v, pos))
        total = arithmetic("+", total,
                           attribute && !attribute->is_none() ? attribute_of(x, to_str(*attribute), pos) : x, pos);
      return total;
    }
    if (name == "int") {
      const Value* def = arg(a, 0, "default");
      const Value* base_v = arg(a, 1, "base");
      const int base = base_v && is_integral(*base_v) ? static_cast<int>(as_int(*base_v)) : 10;
      const Value fallback = def ? *def : Value::from_int(0);
      if (v.is_undefined()) error(pos, v.text);
      // A float outside the 64-bit range cannot become an integer here (Python would make a big one; the cast
      // would be undefined behaviour): refused for a float, the default for a string (as Python's for 'inf').
      const auto fits = [](double d) {
        return std::isfinite(d) && d < 9223372036854775808.0 && d >= -9223372036854775808.0;
      };
      if (is_integral(v)) return Value::from_int(as_int(v));
      if (v.kind == Kind::Float) {
        if (!fits(v.number)) error(pos, "int(): " + float_repr(v.number) + " is out of the 64-bit integer range");
        return Value::from_int(static_cast<std::int64_t>(v.number));
      }
      if (v.is_string()) {
        std::string s = strip(v.text, nullptr, true, true);
        s.erase(std::remove(s.begin(), s.end(), '_'), s.end());
        try {
          std::size_t used = 0;
          const long long r = std::stoll(s, &used, base);
          if (used == s.size() && !s.empty()) return Value::from_int(r);
        } catch (const std::exception&) {
        }
        try {
          std::size_t used = 0;
          const double d = std::stod(s, &used);
          if (used == s.size() && fits(d)) return Value::from_int(static_cast<std::int64_t>(d));
        } catch (const std::exception&) {
        }
      }
      return fallback;
    }
    if (name == "float") {
      const Value* def = arg(a, 0, "default");
      const Value fallback = def ? *def : Value::from_float(0.0);
      if (v.is_undefined()) error(pos, v.text);
      if (v.is_number()) return Value::from_float(as_double(v));
      if (v.is_string()) {
        const std::string s = strip(v.text, nullptr, true, true);
        try {
          std::size_t used = 0;
          const double d = std::stod(s, &used);
          if (used == s.size()) return Value::from_float(d);
        } catch (const std::exception&) {
        }
      }
      return fallback;
    }
    if (name == "abs") {
      if (!v.is_number()) error(pos, std::string("bad operand type for abs(): '") + type_name(v) + "'");
      return v.kind == Kind::Float ? Value::from_float(std::fabs(v.number)) : Value::from_int(std::llabs(as_int(v)));
    }
    if (name == "round") {
      const Value* precision = arg(a, 0, "precision");
      const Value* method_v = arg(a, 1, "method");
      const std::string how = method_v ? to_str(*method_v) : "common";
      if (!v.is_number()) error(pos, "round: needs a number");
      const double p = std::pow(10.0, precision ? static_cast<double>(as_int(*precision)) : 0.0);
      const double x = as_double(v) * p;
      double r;
      if (how == "common")
        r = std::round(x);
      else if (how == "ceil")
        r = std::ceil(x);
      else if (how == "floor")
        r = std::floor(x);
      else
        error(pos, "round: method must be common, ceil or floor");
      return Value::from_float(r / p);
    }
    if (name == "center") {
      const Value* width = arg(a, 0, "width");
      const std::string s = need_string();
      const std::int64_t w = width && is_integral(*width) ? as_int(*width) : 80;
      const std::int64_t len = static_cast<std::int64_t>(length_of(s));
      if (w <= len) return Value::from_string(s);
      const std::int64_t total = w - len, left = total / 2 + (total & w & 1);
      return Value::from_string(std::string(left, ' ') + s + std::string(total - left, ' '));
    }
    if (name == "indent") {
      const Value* width = arg(a, 0, "width");
      const bool first = named_flag(a, 1, "first", false), blank = named_flag(a, 2, "blank", false);
      const std::string pad = width && width->is_string()
                                  ? width->text
                                  : std::string(width ? std::max<std::int64_t>(0, as_int(*width)) : 4, ' ');
      std::string s = need_string(), out;
      std::size_t start = 0;
      bool first_line = true;
      while (true) {
        const std::size_t nl = s.find('\n', start);
        const std::string line = s.substr(start, nl == std::string::npos ? std::string::npos : nl - start);
        const bool add = first_line ? first : (blank || !strip(line, nullptr, true, true).empty());
        if (add && !(first_line && !first)) out += pad;
        out += line;
        if (nl == std::string::npos) break;
        out += '\n';
        start = nl + 1;
        first_line = false;
      }
      return Value::from_string(std::move(out));
    }
    if (name == "wordcount")
      return Value::from_int(static_cast<std::int64_t>(split(*this, need_string(), nullptr, -1, false, pos).size()));
    if (name == "e" || name == "escape" || name == "forceescape") {
      std::string out;
      for (char c : need_string()) {
        switch (c) {
          case '&': out += "&amp;"; break;
          case '<': out += "&lt;"; break;
          case '>': out += "&gt;"; break;
          case '"': out += "&#34;"; break;
          case '\'': out += "&#39;"; break;
          default: out += c;
        }
      }
      return Value::from_string(std::move(out));
    }
    if (name == "format") {
      // printf-style: %s, %d, %i, %r, %% only
      const std::string f = need_string();
      std::string out;
      std::size_t k = 0;
      for (std::size_t i = 0; i < f.size(); ++i) {
        if (f[i] != '%') {
          out += f[i];
          continue;
        }
        if (i + 1 >= f.size()) error(pos, "format: incomplete format");
        const char spec = f[++i];
        if (spec == '%') {
          out += '%';
          continue;
        }
        if (k >= a.positional.size()) error(pos, "format: not enough arguments for format string");
        const Value& x = a.positional[k++];
        if (spec == 's')
          out += to_str(x);
        else if (spec == 'r')
          out += repr(x);
        else if ((spec == 'd' || spec == 'i') && x.is_number())
          out += std::to_string(static_cast<std::int64_t>(as_double(x)));
        else
          error(pos, std::string("format: unsupported conversion %") + spec);
      }
      return Value::from_string(std::move(out));
    }
    if (name == "attr") {
      const Value* attr_name = arg(a, 0, "name");
      if (!attr_name || !attr_name->is_string()) error(pos, "attr needs an attribute name");
      return get_attr(v, attr_name->text, pos);
    }
    if (name == "map") {
      List out;
      const Value* attribute = nullptr;
      for (const auto& kv : a.named)
        if (kv.first == "attribute") attribute = &kv.second;
      if (attribute) {
        const Value* def = nullptr;
        for (const auto& kv : a.named)
          if (kv.first == "default") def = &kv.second;
        for (const auto& x : iterate(v, pos)) {
          Value r = attribute_of(x, to_str(*attribute), pos);
          out.push_back(r.is_undefined() && def ? *def : r);
        }
        return Value::from_list(std::move(out));
      }
      if (a.positional.empty() || !a.positional[0].is_string()) error(pos, "map needs a filter name or attribute=");
      const std::string filter = a.positional[0].text;
      if (!known_filter(filter)) error(pos, "no filter named '" + filter + "'");
      Arguments rest;
      rest.positional.assign(a.positional.begin() + 1, a.positional.end());
      rest.named = a.named;
      for (const auto& x : iterate(v, pos)) {
        Arguments copy = rest;
        out.push_back(apply_filter(filter, x, copy, pos));
      }
      return Value::from_list(std::move(out));
    }
    if (name == "select" || name == "reject" || name == "selectattr" || name == "rejectattr") {
      const bool by_attr = name == "selectattr" || name == "rejectattr";
      const bool keep_matches = name == "select" || name == "selectattr";
      std::size_t at = 0;
      std::string attribute;
      if (by_attr) {
        if (a.positional.empty()) error(pos, name + " needs an attribute name");
        attribute = to_str(a.positional[at++]);
      }
      std::string test;
      Arguments test_args;
      if (at < a.positional.size()) {
        test = to_str(a.positional[at++]);
        if (!known_test(test)) error(pos, "no test named '" + test + "'");
        test_args.positional.assign(a.positional.begin() + static_cast<std::ptrdiff_t>(at), a.positional.end());
      }
      List out;
      for (const auto& x : iterate(v, pos)) {
        const Value subject = by_attr ? attribute_of(x, attribute, pos) : x;
        Arguments copy = test_args;
        const bool r = test.empty() ? truthy(subject) : apply_test(test, subject, copy, pos);
        if (r == keep_matches) out.push_back(x);
      }
      return Value::from_list(std::move(out));
    }
    error(pos, "filter '" + name + "' is not implemented");
  }

  // ---- tests ----
  bool apply_test(const std::string& name, const Value& v, Arguments& a, Pos pos) {
    auto other = [&]() -> const Value& {
      if (a.positional.empty()) error(pos, "test '" + name + "' needs an argument");
      return a.positional[0];
    };
    if (name == "defined") return !v.is_undefined();
    if (name == "undefined") return v.is_undefined();
    if (name == "none") return v.is_none();
    if (name == "boolean") return v.kind == Kind::Bool;
    if (name == "true") return v.kind == Kind::Bool && v.boolean;
    if (name == "false") return v.kind == Kind::Bool && !v.boolean;
    if (name == "integer") return v.kind == Kind::Int;
    if (name == "float") return v.kind == Kind::Float;
    if (name == "number") return v.is_number();
    if (name == "string") return v.is_string();
    if (name == "mapping") return v.kind == Kind::Dict;
    if (name == "iterable") return v.is_undefined() || v.is_string() || v.is_list() || v.kind == Kind::Dict;
    if (name == "sequence") return v.is_undefined() || v.is_string() || v.is_list() || v.kind == Kind::Dict;
    if (name == "callable") return v.kind == Kind::Callable;
    if (name == "escaped") return false;
    if (name == "lower" || name == "upper") {
      if (!v.is_string()) return false;
      Arguments none;
      Value m = string_method(v, name == "lower" ? "islower" : "isupper");
      return truthy(m.callable->call(*this, none, pos));
    }
    if (name == "odd" || name == "even" || name == "divisibleby") {
      if (!is_integral(v)) error(pos, "test '" + name + "' needs an integer");
      if (name == "divisibleby") {
        const Value& d = other();
        if (!is_integral(d) || as_int(d) == 0) error(pos, "divisibleby needs a non-zero integer");
        return as_int(v) % as_int(d) == 0;
      }
      const bool odd = as_int(v) % 2 != 0;
      return name == "odd" ? odd : !odd;
    }
    if (name == "eq" || name == "equalto" || name == "==") return equals(v, other());
    if (name == "ne" || name == "!=") return !equals(v, other());
    if (name == "sameas") {
      const Value& o = other();
      if (v.kind != o.kind) return false;
      switch (v.kind) {
        case Kind::None:
        case Kind::Undefined: return true;
        case Kind::Bool: return v.boolean == o.boolean;
        case Kind::List: return v.list == o.list;
        case Kind::Dict:
        case Kind::Namespace: return v.dict == o.dict;
        case Kind::Int: return v.integer == o.integer && v.integer >= -5 && v.integer <= 256;  // CPython small ints
        default: return false;
      }
    }
    if (name == "in") return contains(other(), v, pos);
    if (name == "filter") return v.is_string() && known_filter(v.text);
    if (name == "test") return v.is_string() && known_test(v.text);
    if (v.is_undefined()) error(pos, v.text);
    const Value& o = other();
    if (o.is_undefined()) error(pos, o.text);
    if (name == "lt" || name == "lessthan" || name == "<") return compare(v, o, "<", pos) < 0;
    if (name == "le" || name == "<=") return compare(v, o, "<=", pos) <= 0;
    if (name == "gt" || name == "greaterthan" || name == ">") return compare(v, o, ">", pos) > 0;
    if (name == "ge" || name == ">=") return compare(v, o, ">=", pos) >= 0;
    error(pos, "test '" + name + "' is not implemented");
  }

  // ---- globals ----
  Value builtin(const std::string& name, std::function<Value(Interpreter&, Arguments&, Pos)> fn) {
    auto c = std::make_shared<Callable>();
    c->name = name;
    c->call = std::move(fn);
    Value v;
    v.kind = Kind::Callable;
    v.callable = c;
    return v;
  }

  void install_globals() {
    root_.vars["raise_exception"] = builtin("raise_exception", [](Interpreter& in, Arguments& a, Pos pos) -> Value {
      const std::string message = a.positional.empty() ? "" : to_str(a.positional[0]);
      in.error(pos, "the chat template raised an exception: " + message);
    });
    root_.vars["strftime_now"] = builtin("strftime_now", [](Interpreter& in, Arguments& a, Pos pos) -> Value {
      if (a.positional.empty() || !a.positional[0].is_string()) in.error(pos, "strftime_now() needs a format string");
      const std::time_t now = std::time(nullptr);
      std::tm local{};
      localtime_r(&now, &local);
      char buf[512];
      const std::size_t n = std::strftime(buf, sizeof buf, a.positional[0].text.c_str(), &local);
      if (n == 0 && !a.positional[0].text.empty()) in.error(pos, "strftime_now(): the formatted date is too long");
      return Value::from_string(std::string(buf, n));
    });
    root_.vars["namespace"] = builtin("namespace", [](Interpreter& in, Arguments& a, Pos pos) -> Value {
      Value ns = Value::new_namespace();
      for (const auto& p : a.positional) {
        if (p.kind != Kind::Dict) in.error(pos, "namespace() takes a dict or keyword arguments");
        for (const auto& kv : p.dict->items) ns.dict->set(kv.first, kv.second);
      }
      for (const auto& kv : a.named) ns.dict->set(kv.first, kv.second);
      return ns;
    });
    root_.vars["dict"] = builtin("dict", [](Interpreter& in, Arguments& a, Pos pos) -> Value {
      Value d = Value::new_dict();
      for (const auto& p : a.positional) {
        if (p.kind != Kind::Dict) in.error(pos, "dict() takes a dict or keyword arguments");
        for (const auto& kv : p.dict->items) d.dict->set(kv.first, kv.second);
      }
      for (const auto& kv : a.named) d.dict->set(kv.first, kv.second);
      return d;
    });
    root_.vars["range"] = builtin("range", [](Interpreter& in, Arguments& a, Pos pos) -> Value {
      std::int64_t start = 0, stop = 0, step = 1;
      for (const auto& p : a.positional)
        if (!is_integral(p)) in.error(pos, "range() needs integers");
      if (a.positional.size() == 1)
        stop = as_int(a.positional[0]);
      else if (a.positional.size() >= 2)
        start = as_int(a.positional[0]), stop = as_int(a.positional[1]);
      else
        in.error(pos, "range() needs 1 to 3 arguments");
      if (a.positional.size() == 3) step = as_int(a.positional[2]);
      if (step == 0) in.error(pos, "range() arg 3 must not be zero");
      List out;
      for (std::int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
        if (out.size() >= in.limits_.max_loop_iterations)
          in.error(pos, "range() is longer than " + std::to_string(in.limits_.max_loop_iterations) + " items");
        out.push_back(Value::from_int(i));
      }
      return Value::from_list(std::move(out));
    });
  }

  const std::string& origin_;
  const JinjaLimits& limits_;
  Scope root_;
  std::string* out_ = nullptr;
  std::size_t iterations_ = 0;
  int call_depth_ = 0;
  int loop_depth_ = 0;
};

std::string py_strip(const std::string& s, bool left, bool right) { return strip(s, nullptr, left, right); }

bool known_filter(const std::string& name) {
  const auto& n = filter_names();
  return std::find(n.begin(), n.end(), name) != n.end();
}

bool known_test(const std::string& name) {
  const auto& n = test_names();
  return std::find(n.begin(), n.end(), name) != n.end();
}

}  // namespace lal::lm::jinja

namespace lal::lm {

JinjaTemplate::JinjaTemplate(std::string_view source, std::string origin) : origin_(std::move(origin)) {
  auto program = std::make_shared<Program>();
  program->origin = origin_;
  program->body = jinja::parse_template(source, origin_);
  program_ = std::move(program);
}

std::string JinjaTemplate::render(const nlohmann::ordered_json& variables, const JinjaLimits& limits) const {
  jinja::Interpreter interpreter(origin_, limits);
  return interpreter.run(program_->body, variables);
}

}  // namespace lal::lm
