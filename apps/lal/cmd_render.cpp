// lal render — print the prompt a model's chat template makes of a conversation, exactly as transformers'
// apply_chat_template(..., tokenize=False) makes it.
//
//   lal render --model_path DIR [--chat_template NAME|FILE] [--no_generation_prompt] [--enable_thinking]
//              [--disable_thinking] [--continue_final_message] [--jsonl] < conversation.json
//
// stdin holds one JSON object: {"messages": [...], "tools": [...]?, "documents": [...]?, ...}; keys other than
// messages/tools/documents are passed to the template as variables (transformers' **kwargs), e.g.
// "enable_thinking": false or "date_string": "26 Jul 2024". The prompt goes to stdout with no newline added.
// --jsonl: every stdin line is one conversation; every output line {"prompt": "..."} or {"error": "..."} (the other
// lines are still rendered; exit status 1 when any line failed).
#include <iostream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>

#include "command.hpp"
#include "lal/lm/chat_template.hpp"

namespace lal::cli {

namespace {

int run_render(const std::vector<std::string>& args) {
  po::options_description desc("Options");
  add_common_options(desc);
  desc.add_options()("model_path", po::value<std::string>(),
                     "model directory: its chat_template.jinja or tokenizer_config.json chat_template, and the "
                     "special tokens (bos_token, eos_token, ...) of tokenizer_config.json")(
      "chat_template", po::value<std::string>(),
      "use this instead of the model's template: a built-in format (chatml, qwen2.5, qwen3, llama2, llama3, phi4) "
      "or a Jinja file")("no_generation_prompt", "do not end with the assistant header (add_generation_prompt=False)")(
      "enable_thinking", "pass enable_thinking=true to the template")("disable_thinking",
                                                                      "pass enable_thinking=false to the template")(
      "continue_final_message",
      "leave the final (assistant) message open so the model continues it; implies --no_generation_prompt")(
      "jsonl", "one conversation per stdin line; one JSON object {\"prompt\"} or {\"error\"} per output line");
  po::variables_map vm;
  if (!parse_command_line("render",
                          "--model_path DIR [--chat_template NAME|FILE] [--no_generation_prompt] [--enable_thinking] "
                          "< {\"messages\": [...], \"tools\": [...]}",
                          args, desc, {}, vm))
    return 0;
  const std::string model_path = vm.count("model_path") ? vm["model_path"].as<std::string>() : "";
  const std::string override_template = vm.count("chat_template") ? vm["chat_template"].as<std::string>() : "";
  if (model_path.empty() && override_template.empty())
    throw UsageError("--model_path DIR is required (or --chat_template NAME|FILE without a model)");
  if (vm.count("enable_thinking") && vm.count("disable_thinking"))
    throw UsageError("give at most one of --enable_thinking and --disable_thinking");

  lal::lm::ChatRenderOptions options;
  options.continue_final_message = vm.count("continue_final_message") > 0;
  options.add_generation_prompt = !vm.count("no_generation_prompt") && !options.continue_final_message;
  if (vm.count("enable_thinking")) options.thinking = lal::lm::ThinkingMode::Open;
  if (vm.count("disable_thinking")) options.thinking = lal::lm::ThinkingMode::Disabled;

  const auto chat = lal::lm::ChatTemplate::load(model_path, override_template);
  if (vm.count("jsonl")) {
    bool all_ok = true;
    std::string line;
    for (std::size_t n = 1; std::getline(std::cin, line); ++n) {
      nlohmann::ordered_json out;
      try {
        const auto conversation = nlohmann::ordered_json::parse(line);
        if (!conversation.is_object()) throw std::runtime_error("expected a JSON object {\"messages\": [...]}");
        out["prompt"] = chat.render_conversation(conversation, options);
      } catch (const std::exception& e) {
        out["error"] = "stdin line " + std::to_string(n) + ": " + e.what();
        all_ok = false;
      }
      std::cout << out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n" << std::flush;
    }
    return all_ok ? 0 : 1;
  }

  const std::string input((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
  nlohmann::ordered_json conversation;
  try {
    conversation = nlohmann::ordered_json::parse(input);
  } catch (const nlohmann::json::parse_error& e) {
    throw std::runtime_error(std::string("stdin: invalid JSON: ") + e.what());
  }
  if (!conversation.is_object())
    throw std::runtime_error(std::string("stdin: expected a JSON object {\"messages\": [...]}, found ") +
                             conversation.type_name());

  const std::string prompt = chat.render_conversation(conversation, options);
  std::cout << prompt << std::flush;
  return 0;
}

}  // namespace

LAL_COMMAND("render", "print the prompt a model's chat template makes of a JSON conversation (stdin)", run_render);

}  // namespace lal::cli
