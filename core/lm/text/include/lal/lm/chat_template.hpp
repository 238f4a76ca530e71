// lal::lm::ChatTemplate — renders a conversation to the prompt text a chat model was trained on.
//
// A model that ships a chat template (tokenizer_config.json "chat_template" — a string, or a list of {name, template}
// with "default" and maybe "tool_use" — or chat_template.jinja next to it) is rendered with that Jinja template
// exactly as transformers' apply_chat_template renders it (lal/lm/jinja.hpp), with the special tokens of
// tokenizer_config.json (bos_token, eos_token, ...) as variables. Nothing is guessed from the template's text.
//
// Models without a template fall back to a built-in family chosen from config.json's model_type (and logged by the
// callers as such); the families can also be named explicitly (--chat_template NAME):
//   chatml   <|im_start|>{role}\n{content}<|im_end|>\n ... <|im_start|>assistant\n   (no default system prompt)
//   qwen2.5  chatml + Qwen2.5's default system prompt when the first message is not a system message
//   qwen3    Qwen3's template: reasoning (<think>...</think>) is dropped from assistant turns before the last user
//            query and kept after it; ThinkingMode::Disabled appends the empty think block (enable_thinking=False)
//   llama2   <s>[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user} [/INST] {assistant} </s><s>[INST] ...
//   llama3   <|begin_of_text|><|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|>...
//   phi4     <|im_start|>{role}<|im_sep|>{content}<|im_end|> ... <|im_start|>assistant<|im_sep|>
//
// The rendered text contains the BOS text where the template has it; encode it with Tokenizer::encode(text, true),
// which does not add a second BOS.
//
// Threading: a ChatTemplate is an immutable value; render() may run concurrently. Errors: ChatTemplateError, whose
// message names the file (and for Jinja templates the line and column) or the message index and what is wrong.
#pragma once

#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace lal::lm {

class ChatTemplateError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct ChatMessage {
  std::string role;     ///< "system", "user", "assistant" (qwen3/chatml/llama3 also pass other roles through)
  std::string content;  ///< UTF-8 text; for qwen3 assistant turns may carry "<think>...</think>" reasoning
};

enum class ThinkingMode {
  TemplateDefault,  ///< what the model's template does (qwen3: model decides; thinking chatml models: open <think>)
  Open,             ///< end the generation prompt with "<think>\n" so the model starts by reasoning
  Disabled,         ///< qwen3: append the empty "<think>\n\n</think>\n\n" block; others: no think tag
};

struct ChatRenderOptions {
  bool add_generation_prompt = true;  ///< end with the assistant header so the model answers next
  /// Jinja templates: Open passes enable_thinking=true, Disabled enable_thinking=false, TemplateDefault nothing.
  ThinkingMode thinking = ThinkingMode::TemplateDefault;
  /// transformers' continue_final_message: the last (assistant) message is left open, so the model continues it.
  /// Cannot be combined with add_generation_prompt.
  bool continue_final_message = false;
};

class JinjaTemplate;

class ChatTemplate {
 public:
  enum class Family { ChatML, Qwen2_5, Qwen3, Llama2, Llama3, Phi4, Jinja };

  /// "chatml", "qwen2.5" (or "qwen2"), "qwen3", "llama2", "llama3", "phi4"; ChatTemplateError listing them
  /// otherwise. BOS/EOS texts are the family's usual ones.
  static ChatTemplate by_name(std::string_view name);

  /// A Jinja chat template. `origin` names it in errors; `variables` are the special-token variables (bos_token,
  /// eos_token, ... as tokenizer_config.json gives them). Throws ChatTemplateError for a syntax error.
  static ChatTemplate from_jinja(std::string_view source, std::string origin, nlohmann::ordered_json variables = {});

  /// The chat template of a model directory (or of a tokenizer.json / tokenizer_config.json path inside one):
  /// chat_template.jinja, else tokenizer_config.json's chat_template; when the model ships none, the built-in family
  /// for config.json's model_type (qwen2 → qwen2.5, qwen3, llama → llama2/llama3 by vocab size, phi3 with a 100k+
  /// vocabulary → phi4). ChatTemplateError when there is none of these.
  static ChatTemplate detect(const std::string& model_path);

  /// `override_name_or_file` empty: detect(model_path). A built-in family name: that family (BOS/EOS texts from the
  /// model's tokenizer_config.json when it has one). Otherwise a path to a Jinja file, rendered with the model's
  /// special tokens. `model_path` may be empty when a family name or a file is given.
  static ChatTemplate load(const std::string& model_path, const std::string& override_name_or_file);

  /// Renders `messages` (which may be empty). Throws ChatTemplateError for a role the family cannot express, for
  /// llama2 roles that do not alternate user/assistant (the official template refuses those too), and for any error
  /// a Jinja template raises.
  std::string render(const std::vector<ChatMessage>& messages, const ChatRenderOptions& options = {}) const;

  /// Renders a conversation given as transformers takes it: {"messages": [...], "tools": [...]?, "documents":
  /// [...]?, other keys → template variables (e.g. "enable_thinking": false, "date_string": "...")}. Messages may
  /// carry any fields (tool_calls, reasoning_content, content parts). Built-in families accept only role/content
  /// string messages and no tools.
  std::string render_conversation(const nlohmann::ordered_json& conversation,
                                  const ChatRenderOptions& options = {}) const;

  Family family() const { return family_; }
  /// The family name, or "jinja" for a model's own template.
  std::string_view name() const;
  /// Where the template comes from: "built-in qwen3", or the file (e.g. ".../tokenizer_config.json").
  const std::string& origin() const { return origin_; }
  bool opens_thinking() const { return opens_thinking_; }
  const std::string& bos_text() const { return bos_text_; }
  const std::string& eos_text() const { return eos_text_; }
  /// Texts that end an assistant turn (for stopping generation), e.g. {"<|im_end|>", "<|endoftext|>"}; for a Jinja
  /// template the eos_token text of tokenizer_config.json (the engine also stops on generation_config's eos ids).
  std::vector<std::string> stop_texts() const;

 private:
  ChatTemplate(Family family, bool opens_thinking);
  std::string render_jinja(const nlohmann::ordered_json& conversation, const ChatRenderOptions& options) const;
  Family family_;
  bool opens_thinking_;
  std::string bos_text_, eos_text_;
  std::string origin_;
  // Jinja: the templates by name ("default", "tool_use", ...) and the special-token variables.
  std::map<std::string, std::shared_ptr<const JinjaTemplate>> jinja_;
  nlohmann::ordered_json variables_;
};

}  // namespace lal::lm
