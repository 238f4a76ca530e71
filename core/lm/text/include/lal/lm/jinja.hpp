// lal::lm::JinjaTemplate — the Jinja2 subset that Hugging Face chat templates use, rendered as transformers renders
// them (`apply_chat_template`: an ImmutableSandboxedEnvironment with trim_blocks=True, lstrip_blocks=True, the
// loopcontrols extension, the `{% generation %}` tag, and the globals raise_exception / strftime_now, plus a tojson
// filter that does not escape HTML and keeps non-ASCII text: json.dumps(x, ensure_ascii=False, indent=...)).
//
// Supported (see core/lm/text/README.md for the full list): text, {{ }}, {% %}, {# #}, whitespace control (-, +),
// raw; statements if/elif/else, for (loop.*, else, the `if` clause, tuple unpacking, recursive is refused), set
// (targets, tuples, namespace attributes, block set), macro/call, filter blocks, break/continue, generation;
// expressions with Python semantics for the types JSON brings (None, bool, int, float, str, list, dict), slicing,
// `in`/`not in`, tests, filters, string/dict/list methods. Anything outside the subset is refused with a
// JinjaError naming the template, line and column — never rendered differently.
//
// Threading: a JinjaTemplate is immutable after construction; render() may run concurrently from several threads.
// Errors: JinjaError (parse errors from the constructor; render errors, raise_exception and undefined-value errors
// from render()). Every message starts with "<origin>:<line>:<column>: ".
#pragma once

#include <cstddef>
#include <memory>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <string_view>

namespace lal::lm {

class JinjaError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Bounds on one render, so that a hostile or broken template fails with a clear error instead of exhausting memory
/// or time.
struct JinjaLimits {
  std::size_t max_output_bytes = 64u << 20;     ///< rendered text, also any intermediate string
  std::size_t max_loop_iterations = 1'000'000;  ///< summed over all for loops of one render
  int max_call_depth = 200;                     ///< nested macro calls (Python's own limit is near 1000 frames)
};

class JinjaTemplate {
 public:
  /// Parses `source`. `origin` names the template in error messages (a file path, "tokenizer_config.json" ...).
  /// Throws JinjaError for syntax errors and for unknown filters or tests (as Jinja2 does when it compiles).
  JinjaTemplate(std::string_view source, std::string origin);

  /// Renders with `variables` (a JSON object; key order is kept, as Python dicts keep it) as the template's
  /// context, on top of the globals (range, dict, namespace, raise_exception, strftime_now).
  std::string render(const nlohmann::ordered_json& variables, const JinjaLimits& limits = {}) const;

  const std::string& origin() const { return origin_; }

  struct Program;  // the parsed template (internal)

 private:
  std::string origin_;
  std::shared_ptr<const Program> program_;
};

}  // namespace lal::lm
