// lal::lm::ChatTemplate — renders a conversation to the prompt text a chat model was trained on.
//
// This is not a Jinja interpreter: each supported family's official template is re-implemented as a small function
// and tested against the strings the Jinja template produces. Families:
//   chatml   <|im_start|>{role}\n{content}<|im_end|>\n ... <|im_start|>assistant\n   (no default system prompt)
//   qwen2.5  chatml + Qwen2.5's default system prompt when the first message is not a system message
//   qwen3    Qwen3's template: reasoning (<think>...</think>) is dropped from assistant turns before the last user
//            query and kept after it; ThinkingMode::Disabled appends the empty think block (enable_thinking=False)
//   llama2   <s>[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user} [/INST] {assistant} </s><s>[INST] ...
//   llama3   <|begin_of_text|><|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|>...
//   phi4     <|im_start|>{role}<|im_sep|>{content}<|im_end|> ... <|im_start|>assistant<|im_sep|>
// Thinking models that are not Qwen3 (e.g. ELYZA-Thinking-1.0-Qwen-32B, a Qwen2.5 derivative) are chatml/qwen2.5
// with `opens_thinking() == true`: by default the generation prompt ends with "<think>\n".
//
// The rendered text contains the BOS text where the official template has it (llama2, llama3); encode it with
// Tokenizer::encode(text, true), which does not add a second BOS.
//
// Threading: a ChatTemplate is an immutable value; render() may run concurrently. Errors: ChatTemplateError, whose
// message names the file or the message index and what is wrong.
#pragma once

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
  ThinkingMode thinking = ThinkingMode::TemplateDefault;
};

class ChatTemplate {
 public:
  enum class Family { ChatML, Qwen2_5, Qwen3, Llama2, Llama3, Phi4 };

  /// "chatml", "qwen2.5" (or "qwen2"), "qwen3", "llama2", "llama3", "phi4"; ChatTemplateError listing them
  /// otherwise. BOS/EOS texts are the family's usual ones.
  static ChatTemplate by_name(std::string_view name);

  /// Picks the family for a model directory (or a tokenizer.json / tokenizer_config.json path inside one):
  /// markers in tokenizer_config.json's "chat_template" first, then config.json's "model_type" (with vocab_size to
  /// tell Llama-2 from Llama-3). BOS/EOS texts come from tokenizer_config.json when it has them.
  static ChatTemplate detect(const std::string& model_path);

  /// The family whose markers appear in a Jinja template string, or nullopt when none does.
  static std::optional<ChatTemplate> from_template_source(std::string_view jinja);

  /// Renders `messages` (which may be empty). Throws ChatTemplateError for a role the family cannot express or,
  /// for llama2, roles that do not alternate user/assistant (the official template refuses those too).
  std::string render(const std::vector<ChatMessage>& messages, const ChatRenderOptions& options = {}) const;

  Family family() const { return family_; }
  std::string_view name() const;
  bool opens_thinking() const { return opens_thinking_; }
  const std::string& bos_text() const { return bos_text_; }
  const std::string& eos_text() const { return eos_text_; }
  /// Texts that end an assistant turn (for stopping generation), e.g. {"<|im_end|>", "<|endoftext|>"}.
  std::vector<std::string> stop_texts() const;

 private:
  ChatTemplate(Family family, bool opens_thinking);
  Family family_;
  bool opens_thinking_;
  std::string bos_text_, eos_text_;
};

}  // namespace lal::lm
