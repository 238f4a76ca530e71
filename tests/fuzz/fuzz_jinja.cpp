// libFuzzer target: the Jinja chat-template engine (lal/lm/jinja.hpp; what `lal render` and every chat runs). The
// input is the template source, a NUL byte, then the render variables as JSON (no NUL, or JSON that does not parse
// to an object: a fixed conversation with system/user/assistant/tool messages, tools and the special tokens).
// Contract: parsing and rendering either work or throw JinjaError, within the render limits; a crash, a leak,
// undefined behaviour, a hang, output beyond max_output_bytes or another exception type is a finding.
#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "lal/lm/jinja.hpp"

namespace {

const nlohmann::ordered_json& default_variables() {
  static const auto variables = nlohmann::ordered_json::parse(R"({
    "messages": [
      {"role": "system", "content": "You are helpful."},
      {"role": "user", "content": "こんにちは 😀"},
      {"role": "assistant", "content": "<think>x</think>Hi", "tool_calls": [
        {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "東京"}}}]},
      {"role": "tool", "content": "{\"temp\": 21.5}"},
      {"role": "user", "content": [{"type": "text", "text": "more"}]}],
    "tools": [{"type": "function", "function": {"name": "get_weather", "description": "weather",
      "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}],
    "add_generation_prompt": true, "enable_thinking": false,
    "bos_token": "<s>", "eos_token": "</s>", "date_string": "30 Nov 2026"})");
  return variables;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const auto nul = input.find('\0');
  const std::string_view source = input.substr(0, nul);
  nlohmann::ordered_json variables = default_variables();
  if (nul != std::string_view::npos) {
    // Nesting bounded as every JSON lal reads is (lal::checks::limits::json_depth, 128 levels).
    const auto bounded = [](int depth, nlohmann::ordered_json::parse_event_t, nlohmann::ordered_json&) {
      return depth <= 128;
    };
    auto parsed = nlohmann::ordered_json::parse(input.substr(nul + 1), bounded, /*allow_exceptions=*/false);
    if (parsed.is_object()) variables = std::move(parsed);
  }
  // Smaller bounds than the defaults keep each input fast; the code paths that enforce them are the same.
  lal::lm::JinjaLimits limits;
  limits.max_output_bytes = 1u << 20;
  limits.max_loop_iterations = 100'000;
  limits.max_call_depth = 100;
  try {
    const lal::lm::JinjaTemplate tmpl(source, "fuzz.jinja");
    const std::string out = tmpl.render(variables, limits);
    if (out.size() > limits.max_output_bytes) __builtin_trap();
  } catch (const lal::lm::JinjaError&) {
  }
  return 0;
}
