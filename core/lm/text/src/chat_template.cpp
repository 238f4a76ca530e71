#include "lal/lm/chat_template.hpp"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

namespace lal::lm {

using nlohmann::json;
namespace fs = std::filesystem;

namespace {

const char* const kQwen25DefaultSystem = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.";

bool contains(std::string_view s, std::string_view needle) { return s.find(needle) != std::string_view::npos; }

// Python's str.strip / lstrip / rstrip with a character set.
std::string strip(std::string_view s, std::string_view chars, bool left = true, bool right = true) {
  std::size_t b = 0, e = s.size();
  if (left)
    while (b < e && chars.find(s[b]) != std::string_view::npos) ++b;
  if (right)
    while (e > b && chars.find(s[e - 1]) != std::string_view::npos) --e;
  return std::string(s.substr(b, e - b));
}
// Python's str.strip() with no argument (ASCII whitespace suffices for the templates' purposes, plus Jinja's trim).
const char* const kSpaces = " \t\n\r\f\v";

std::string_view after_last(std::string_view s, std::string_view sep) {
  const auto p = s.rfind(sep);
  return p == std::string_view::npos ? s : s.substr(p + sep.size());
}
std::string_view before_first(std::string_view s, std::string_view sep) {
  const auto p = s.find(sep);
  return p == std::string_view::npos ? s : s.substr(0, p);
}

std::string render_chatml(const std::vector<ChatMessage>& messages, const ChatRenderOptions& options,
                          const char* default_system, bool opens_thinking) {
  std::string out;
  if (default_system && (messages.empty() || messages[0].role != "system"))
    out += std::string("<|im_start|>system\n") + default_system + "<|im_end|>\n";
  for (const auto& m : messages) out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
  if (options.add_generation_prompt) {
    out += "<|im_start|>assistant\n";
    const bool open =
        options.thinking == ThinkingMode::Open || (options.thinking == ThinkingMode::TemplateDefault && opens_thinking);
    if (open) out += "<think>\n";
  }
  return out;
}

bool is_tool_response(const std::string& c) {
  const std::string_view open = "<tool_response>", close = "</tool_response>";
  return c.size() >= open.size() + close.size() && c.compare(0, open.size(), open) == 0 &&
         c.compare(c.size() - close.size(), close.size(), close) == 0;
}

std::string render_qwen3(const std::vector<ChatMessage>& messages, const ChatRenderOptions& options) {
  std::string out;
  if (!messages.empty() && messages[0].role == "system")
    out += "<|im_start|>system\n" + messages[0].content + "<|im_end|>\n";
  // The last user turn that is a real query (not a wrapped tool response).
  std::size_t last_query = messages.empty() ? 0 : messages.size() - 1;
  for (std::size_t k = messages.size(); k-- > 0;)
    if (messages[k].role == "user" && !is_tool_response(messages[k].content)) {
      last_query = k;
      break;
    }
  for (std::size_t i = 0; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    if (m.role == "user" || (m.role == "system" && i != 0)) {
      out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
    } else if (m.role == "assistant") {
      std::string content = m.content, reasoning;
      if (contains(m.content, "</think>")) {
        content = strip(after_last(m.content, "</think>"), "\n", true, false);
        reasoning = strip(after_last(strip(before_first(m.content, "</think>"), "\n", false, true), "<think>"), "\n",
                          true, false);
      }
      const bool last = i + 1 == messages.size();
      if (i > last_query && (last || !reasoning.empty()))
        out += "<|im_start|>assistant\n<think>\n" + strip(reasoning, "\n") + "\n</think>\n\n" +
               strip(content, "\n", true, false);
      else
        out += "<|im_start|>assistant\n" + content;
      out += "<|im_end|>\n";
    } else if (m.role == "tool") {
      if (i == 0 || messages[i - 1].role != "tool") out += "<|im_start|>user";
      out += "\n<tool_response>\n" + m.content + "\n</tool_response>";
      if (i + 1 == messages.size() || messages[i + 1].role != "tool") out += "<|im_end|>\n";
    }  // the official template silently drops other roles; so do we
  }
  if (options.add_generation_prompt) {
    out += "<|im_start|>assistant\n";
    if (options.thinking == ThinkingMode::Disabled) out += "<think>\n\n</think>\n\n";
    if (options.thinking == ThinkingMode::Open) out += "<think>\n";
  }
  return out;
}

std::string render_llama2(const std::vector<ChatMessage>& messages, const std::string& bos, const std::string& eos) {
  std::size_t first = 0;
  std::optional<std::string> system;
  if (!messages.empty() && messages[0].role == "system") {
    system = messages[0].content;
    first = 1;
  }
  std::string out;
  for (std::size_t i = first; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    const bool expect_user = (i - first) % 2 == 0;
    if (m.role != (expect_user ? "user" : "assistant"))
      throw ChatTemplateError("llama2 chat template: message " + std::to_string(i) + " has role \"" + m.role +
                              "\"; after an optional system message, roles must alternate user/assistant");
    std::string content = m.content;
    if (i == first && system) content = "<<SYS>>\n" + *system + "\n<</SYS>>\n\n" + content;
    if (expect_user)
      out += bos + "[INST] " + strip(content, kSpaces) + " [/INST]";
    else
      out += " " + strip(content, kSpaces) + " " + eos;
  }
  return out;
}

std::string render_llama3(const std::vector<ChatMessage>& messages, const ChatRenderOptions& options,
                          const std::string& bos) {
  std::string out;
  for (std::size_t i = 0; i < messages.size(); ++i) {
    if (i == 0) out += bos;
    out += "<|start_header_id|>" + messages[i].role + "<|end_header_id|>\n\n" + strip(messages[i].content, kSpaces) +
           "<|eot_id|>";
  }
  if (options.add_generation_prompt) out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
  return out;
}

std::string render_phi4(const std::vector<ChatMessage>& messages, const ChatRenderOptions& options) {
  std::string out;
  for (std::size_t i = 0; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    if (m.role != "system" && m.role != "user" && m.role != "assistant")
      throw ChatTemplateError("phi4 chat template: message " + std::to_string(i) + " has role \"" + m.role +
                              "\" (system, user, assistant)");
    out += "<|im_start|>" + m.role + "<|im_sep|>" + m.content + "<|im_end|>";
  }
  if (options.add_generation_prompt) {
    out += "<|im_start|>assistant<|im_sep|>";
    if (options.thinking == ThinkingMode::Open) out += "<think>\n";
  }
  return out;
}

json read_json(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ChatTemplateError(path.string() + ": cannot open for reading");
  try {
    return json::parse(in);
  } catch (const json::parse_error& e) {
    throw ChatTemplateError(path.string() + ": invalid JSON: " + e.what());
  }
}

std::optional<std::string> token_text(const json& config, const char* key) {
  const auto it = config.find(key);
  if (it == config.end()) return std::nullopt;
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string())
    return (*it)["content"].get<std::string>();
  return std::nullopt;
}

}  // namespace

ChatTemplate::ChatTemplate(Family family, bool opens_thinking) : family_(family), opens_thinking_(opens_thinking) {
  switch (family) {
    case Family::Llama2:
      bos_text_ = "<s>", eos_text_ = "</s>";
      break;
    case Family::Llama3:
      bos_text_ = "<|begin_of_text|>", eos_text_ = "<|eot_id|>";
      break;
    case Family::Phi4:
      eos_text_ = "<|im_end|>";
      break;
    default:
      eos_text_ = "<|im_end|>";
      break;
  }
}

ChatTemplate ChatTemplate::by_name(std::string_view name) {
  if (name == "chatml") return ChatTemplate(Family::ChatML, false);
  if (name == "qwen2.5" || name == "qwen2") return ChatTemplate(Family::Qwen2_5, false);
  if (name == "qwen3") return ChatTemplate(Family::Qwen3, false);
  if (name == "llama2") return ChatTemplate(Family::Llama2, false);
  if (name == "llama3") return ChatTemplate(Family::Llama3, false);
  if (name == "phi4") return ChatTemplate(Family::Phi4, false);
  throw ChatTemplateError("unknown chat template \"" + std::string(name) +
                          "\" (chatml, qwen2.5, qwen3, llama2, llama3, phi4)");
}

std::optional<ChatTemplate> ChatTemplate::from_template_source(std::string_view jinja) {
  if (contains(jinja, "<|im_sep|>")) return ChatTemplate(Family::Phi4, false);
  if (contains(jinja, "<|start_header_id|>")) return ChatTemplate(Family::Llama3, false);
  if (contains(jinja, "[INST]")) return ChatTemplate(Family::Llama2, false);
  if (contains(jinja, "<|im_start|>")) {
    if (contains(jinja, "enable_thinking") || contains(jinja, "reasoning_content"))
      return ChatTemplate(Family::Qwen3, false);
    const bool thinking = contains(jinja, "<think>");
    if (contains(jinja, kQwen25DefaultSystem)) return ChatTemplate(Family::Qwen2_5, thinking);
    return ChatTemplate(Family::ChatML, thinking);
  }
  return std::nullopt;
}

ChatTemplate ChatTemplate::detect(const std::string& model_path) {
  std::error_code ec;
  fs::path dir = model_path;
  if (!fs::is_directory(dir, ec)) dir = dir.parent_path();
  if (dir.empty()) dir = ".";
  if (!fs::is_directory(dir, ec)) throw ChatTemplateError(model_path + ": no such model directory");

  const fs::path tc_path = dir / "tokenizer_config.json";
  std::optional<ChatTemplate> found;
  json tc;
  if (fs::exists(tc_path, ec)) {
    tc = read_json(tc_path);
    const auto it = tc.find("chat_template");
    if (it != tc.end() && it->is_string()) {
      found = from_template_source(it->get<std::string>());
    } else if (it != tc.end() && it->is_array()) {  // [{"name": "default", "template": ...}, ...]
      for (const auto& t : *it)
        if (t.is_object() && t.value("name", "") == "default" && t.contains("template") && t["template"].is_string())
          found = from_template_source(t["template"].get<std::string>());
    }
  }
  if (!found) {
    const fs::path cfg_path = dir / "config.json";
    if (fs::exists(cfg_path, ec)) {
      const json cfg = read_json(cfg_path);
      const std::string type = cfg.value("model_type", "");
      const long vocab =
          cfg.contains("vocab_size") && cfg["vocab_size"].is_number_integer() ? cfg["vocab_size"].get<long>() : 0;
      if (type == "qwen2") found = ChatTemplate(Family::Qwen2_5, false);
      if (type == "qwen3") found = ChatTemplate(Family::Qwen3, false);
      if (type == "llama") found = ChatTemplate(vocab >= 128000 ? Family::Llama3 : Family::Llama2, false);
      if (type == "phi3" && vocab >= 100000) found = ChatTemplate(Family::Phi4, false);
    }
  }
  if (!found)
    throw ChatTemplateError(dir.string() +
                            ": cannot tell the chat format: tokenizer_config.json has no chat_template with known "
                            "markers and config.json has no known model_type; pass a template name (chatml, "
                            "qwen2.5, qwen3, llama2, llama3, phi4)");
  if (tc.is_object()) {
    if (auto bos = token_text(tc, "bos_token")) found->bos_text_ = *bos;
    if (auto eos = token_text(tc, "eos_token"); eos && found->family_ == Family::Llama2) found->eos_text_ = *eos;
  }
  return *found;
}

std::string ChatTemplate::render(const std::vector<ChatMessage>& messages, const ChatRenderOptions& options) const {
  switch (family_) {
    case Family::ChatML:
      return render_chatml(messages, options, nullptr, opens_thinking_);
    case Family::Qwen2_5:
      return render_chatml(messages, options, kQwen25DefaultSystem, opens_thinking_);
    case Family::Qwen3:
      return render_qwen3(messages, options);
    case Family::Llama2:
      return render_llama2(messages, bos_text_, eos_text_);
    case Family::Llama3:
      return render_llama3(messages, options, bos_text_);
    case Family::Phi4:
      return render_phi4(messages, options);
  }
  return {};
}

std::string_view ChatTemplate::name() const {
  switch (family_) {
    case Family::ChatML:
      return "chatml";
    case Family::Qwen2_5:
      return "qwen2.5";
    case Family::Qwen3:
      return "qwen3";
    case Family::Llama2:
      return "llama2";
    case Family::Llama3:
      return "llama3";
    case Family::Phi4:
      return "phi4";
  }
  return "";
}

std::vector<std::string> ChatTemplate::stop_texts() const {
  switch (family_) {
    case Family::Llama2:
      return {eos_text_};
    case Family::Llama3:
      return {"<|eot_id|>", "<|end_of_text|>"};
    default:
      return {"<|im_end|>", "<|endoftext|>"};
  }
}

}  // namespace lal::lm
