// Internal: values and syntax tree of the Jinja engine (jinja_parse.cpp builds the tree, jinja_eval.cpp runs it).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "lal/lm/jinja.hpp"

namespace lal::lm::jinja {

struct Pos {
  int line = 1, column = 1;
};

struct Value;
using List = std::vector<Value>;
struct Dict;
struct Callable;

/// How deeply values may nest lists, dicts and namespaces (tojson's own limit too). Nothing in the engine walks a
/// value with anything but recursion (printing, comparing, destroying), so a value nested without bound — a
/// namespace attribute wrapped once per loop iteration — would overflow the stack instead of failing.
inline constexpr int kMaxNesting = 512;

/// A Python value as a Jinja template sees it. Lists, dicts and namespaces are shared by reference, as in Python.
/// Lists are never changed after they are made (the sandbox refuses append and friends), dicts only by the engine
/// while it builds them, namespaces by `{% set ns.attr = ... %}`.
struct Value {
  enum class Kind { Undefined, None, Bool, Int, Float, String, List, Dict, Namespace, Callable };
  Kind kind = Kind::Undefined;
  bool boolean = false;
  std::int64_t integer = 0;
  double number = 0;
  std::string text;       // String; for Undefined: why it is undefined ("'x' is undefined")
  bool is_tuple = false;  // List created by a tuple (repr uses parentheses)
  std::shared_ptr<List> list;
  std::shared_ptr<Dict> dict;  // Dict and Namespace
  std::shared_ptr<Callable> callable;
  // List only (a dict's live in its Dict): how deeply the items nest, and whether a namespace is among them.
  int nesting = 0;
  bool has_namespace = false;

  static Value undefined(std::string why) {
    Value v;
    v.text = std::move(why);
    return v;
  }
  static Value none() {
    Value v;
    v.kind = Kind::None;
    return v;
  }
  static Value from_bool(bool b) {
    Value v;
    v.kind = Kind::Bool;
    v.boolean = b;
    return v;
  }
  static Value from_int(std::int64_t i) {
    Value v;
    v.kind = Kind::Int;
    v.integer = i;
    return v;
  }
  static Value from_float(double d) {
    Value v;
    v.kind = Kind::Float;
    v.number = d;
    return v;
  }
  static Value from_string(std::string s) {
    Value v;
    v.kind = Kind::String;
    v.text = std::move(s);
    return v;
  }
  /// Throws JinjaError when an item is already nested kMaxNesting deep.
  static Value from_list(List items, bool tuple = false);
  static Value new_dict();
  static Value new_namespace();

  bool is_undefined() const { return kind == Kind::Undefined; }
  bool is_none() const { return kind == Kind::None; }
  bool is_string() const { return kind == Kind::String; }
  bool is_list() const { return kind == Kind::List; }
  bool is_dict() const { return kind == Kind::Dict; }
  bool is_number() const { return kind == Kind::Int || kind == Kind::Float || kind == Kind::Bool; }
};

/// How deeply `v` nests lists, dicts and namespaces: 0 for anything else, 1 for a container of scalars, ...
int nesting_of(const Value& v);
/// Whether `v` is a namespace or holds one at any depth.
bool holds_namespace(const Value& v);
/// Throws JinjaError when a value nesting `inner` levels would be put into a container (kMaxNesting).
void check_nesting(int inner);

struct Dict {
  std::vector<std::pair<std::string, Value>> items;  // insertion order, as Python dicts keep it
  int nesting = 1;  // an upper bound when an item was replaced by a shallower one; exact otherwise
  bool has_namespace = false;
  const Value* find(const std::string& key) const {
    for (const auto& kv : items)
      if (kv.first == key) return &kv.second;
    return nullptr;
  }
  /// Adds or replaces `key`. Throws JinjaError when `v` is nested kMaxNesting deep.
  void set(const std::string& key, Value v) {
    note(v);
    for (auto& kv : items)
      if (kv.first == key) {
        kv.second = std::move(v);
        return;
      }
    items.emplace_back(key, std::move(v));
  }
  /// Appends `key` (known to be new). Throws JinjaError when `v` is nested kMaxNesting deep.
  void add(std::string key, Value v) {
    note(v);
    items.emplace_back(std::move(key), std::move(v));
  }

 private:
  void note(const Value& v) {
    const int inner = nesting_of(v);
    check_nesting(inner);
    if (inner + 1 > nesting) nesting = inner + 1;
    if (lal::lm::jinja::holds_namespace(v)) has_namespace = true;
  }
};

inline void check_nesting(int inner) {
  if (inner >= kMaxNesting)
    throw JinjaError("a value nested more than " + std::to_string(kMaxNesting) +
                     " lists, dicts or namespaces deep (a namespace attribute wrapped again on every loop iteration?)");
}

inline int nesting_of(const Value& v) {
  if (v.kind == Value::Kind::List) return v.nesting;
  if (v.kind == Value::Kind::Dict || v.kind == Value::Kind::Namespace) return v.dict->nesting;
  return 0;
}

inline bool holds_namespace(const Value& v) {
  if (v.kind == Value::Kind::Namespace) return true;
  if (v.kind == Value::Kind::List) return v.has_namespace;
  if (v.kind == Value::Kind::Dict) return v.dict->has_namespace;
  return false;
}

inline Value Value::from_list(List items, bool tuple) {
  Value v;
  v.kind = Kind::List;
  v.nesting = 1;
  for (const Value& item : items) {
    const int inner = nesting_of(item);
    check_nesting(inner);
    if (inner + 1 > v.nesting) v.nesting = inner + 1;
    if (lal::lm::jinja::holds_namespace(item)) v.has_namespace = true;
  }
  v.list = std::make_shared<List>(std::move(items));
  v.is_tuple = tuple;
  return v;
}

inline Value Value::new_dict() {
  Value v;
  v.kind = Kind::Dict;
  v.dict = std::make_shared<Dict>();
  return v;
}
inline Value Value::new_namespace() {
  Value v;
  v.kind = Kind::Namespace;
  v.dict = std::make_shared<Dict>();
  return v;
}

struct Arguments {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> named;
};

class Interpreter;
struct Callable {
  std::string name;
  std::function<Value(Interpreter&, Arguments&, Pos)> call;
};

// ---- syntax tree -------------------------------------------------------------------------------------------------

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

struct Expr {
  enum class Kind {
    Literal,  // value
    Name,     // name
    Attr,     // children[0].name
    Item,     // children[0][children[1]]
    Slice,    // children[0][children[1]:children[2]:children[3]] (null children allowed)
    Call,     // children[0](children[1..], named)
    Filter,   // name, children[0] = operand, children[1..] = arguments, named
    Test,     // name, children[0] = operand, children[1..] = arguments; negated for `is not`
    Unary,    // op ("-", "+", "not"), children[0]
    Binary,   // op, children[0], children[1] (arithmetic, ~, comparisons, in, not in)
    And,
    Or,
    Conditional,  // children[0] if children[1] else children[2] (null: undefined)
    ListLiteral,
    TupleLiteral,
    DictLiteral,  // children alternate key, value
  };
  Kind kind;
  Pos pos;
  Value value;
  std::string name;  // Name/Attr/Filter/Test name, or operator
  bool negated = false;
  std::vector<ExprPtr> children;
  std::vector<std::pair<std::string, ExprPtr>> named;
};

struct Node;
using NodePtr = std::unique_ptr<Node>;
using Body = std::vector<NodePtr>;

struct AssignTarget {  // `x`, `a, b` or `ns.attr`
  std::vector<std::string> names;
  std::string attribute;  // set: names[0].attribute = ...
  bool tuple = false;
};

struct MacroDef {
  std::string name;
  std::vector<std::pair<std::string, ExprPtr>> params;  // default may be null
  Body body;
  bool uses_caller = false;
};

struct Node {
  enum class Kind { Text, Output, If, For, Set, SetBlock, Macro, CallBlock, FilterBlock, Break, Continue, Generation };
  Kind kind;
  Pos pos;
  std::string text;                                // Text
  ExprPtr expr;                                    // Output, Set value, For iterable, CallBlock call, FilterBlock
  std::vector<std::pair<ExprPtr, Body>> branches;  // If (null condition = else)
  AssignTarget target;                             // For, Set, SetBlock
  ExprPtr condition;                               // For `if` clause
  Body body, else_body;                            // For, SetBlock, CallBlock, FilterBlock, Generation
  std::shared_ptr<MacroDef> macro;                 // Macro; CallBlock: caller's parameters live here
};

}  // namespace lal::lm::jinja

namespace lal::lm {
struct JinjaTemplate::Program {
  jinja::Body body;
  std::string origin;
};
}  // namespace lal::lm

namespace lal::lm::jinja {
/// Python's str.isspace() for one code point (what strip(), split() and Jinja's `-` whitespace control remove).
inline bool is_python_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xa0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f || c == 0x205f || c == 0x3000;
}
/// Throws JinjaError("<origin>:<line>:<column>: <message>").
[[noreturn]] void fail(const std::string& origin, Pos pos, const std::string& message);
/// The filters and tests the evaluator implements (the parser refuses other names, as Jinja2's compiler does).
bool known_filter(const std::string& name);
bool known_test(const std::string& name);
/// Python's str.strip() / lstrip() / rstrip() (Unicode whitespace).
std::string py_strip(const std::string& s, bool left, bool right);
/// Parses a template source (jinja_parse.cpp).
Body parse_template(std::string_view source, const std::string& origin);
}  // namespace lal::lm::jinja

namespace lal::lm::jinja {
/// The variable that holds the rendered body of a {% filter %} block (not a valid Jinja name, so no clash).
inline const char* const kFilterBlockBody = " filter block body";
}  // namespace lal::lm::jinja
