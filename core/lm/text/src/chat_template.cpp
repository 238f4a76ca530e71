#include "lal/lm/chat_template.hpp"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "jinja_ast.hpp"
#include "lal/checks/input_limits.hpp"
#include "lal/lm/jinja.hpp"

namespace lal::lm {

using nlohmann::json;
using nlohmann::ordered_json;
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
  try {
    return checks::parse_json_limited(checks::read_file_limited(path, checks::limits::tokenizer_config_file),
                                      path.string());
  } catch (const json::parse_error& e) {
    throw ChatTemplateError(path.string() + ": invalid JSON: " + e.what());
  } catch (const std::runtime_error& e) {  // too large, too deep, or cannot be read
    throw ChatTemplateError(e.what());
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

std::string read_text(const fs::path& path) {  // a chat template file (chat_template.jinja, --chat_template FILE)
  try {
    return checks::read_file_limited(path, checks::limits::chat_template);
  } catch (const std::runtime_error& e) {
    throw ChatTemplateError(e.what());
  }
}

// The special tokens transformers passes to a chat template (its special_tokens_map): bos_token, eos_token, ...,
// each a string or an AddedToken object {"content": ...}; null ones are left out. special_tokens_map.json fills in
// what tokenizer_config.json lacks.
ordered_json special_token_variables(const fs::path& dir) {
  ordered_json vars = ordered_json::object();
  std::error_code ec;
  for (const char* file : {"tokenizer_config.json", "special_tokens_map.json"}) {
    const fs::path path = dir / file;
    if (!fs::exists(path, ec)) continue;
    const json config = read_json(path);
    if (!config.is_object()) throw ChatTemplateError(path.string() + ": expected a JSON object");
    for (const char* key :
         {"bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"}) {
      if (vars.contains(key)) continue;
      if (auto text = token_text(config, key)) vars[key] = *text;
    }
    if (!vars.contains("additional_special_tokens") && config.contains("additional_special_tokens") &&
        config["additional_special_tokens"].is_array() && !config["additional_special_tokens"].empty()) {
      ordered_json list = ordered_json::array();
      for (const auto& t : config["additional_special_tokens"]) {
        if (t.is_string())
          list.push_back(t.get<std::string>());
        else if (t.is_object() && t.contains("content") && t["content"].is_string())
          list.push_back(t["content"].get<std::string>());
      }
      vars["additional_special_tokens"] = list;
    }
  }
  return vars;
}

fs::path model_directory(const std::string& model_path) {
  std::error_code ec;
  fs::path dir = model_path;
  if (!fs::is_directory(dir, ec)) dir = dir.parent_path();
  if (dir.empty()) dir = ".";
  if (!fs::is_directory(dir, ec)) throw ChatTemplateError(model_path + ": no such model directory");
  return dir;
}

// transformers' continue_final_message: cut the rendered text right after the final message's content.
std::string continue_final_message(std::string rendered, const ordered_json& messages) {
  if (!messages.is_array() || messages.empty() || !messages.back().is_object())
    throw ChatTemplateError("continue_final_message needs a final message");
  const ordered_json& content = messages.back().value("content", ordered_json());
  std::string final_message;
  if (content.is_string()) {
    final_message = content.get<std::string>();
  } else if (content.is_array()) {
    bool found = false;
    for (auto it = content.rbegin(); it != content.rend() && !found; ++it)
      if (it->is_object() && it->contains("text") && (*it)["text"].is_string()) {
        final_message = (*it)["text"].get<std::string>();
        found = true;
      }
    if (!found) throw ChatTemplateError("continue_final_message: the final message has no text to continue");
  } else {
    throw ChatTemplateError("continue_final_message: the final message has no content");
  }
  const std::string stripped = jinja::py_strip(final_message, true, true);
  const std::string lstripped = jinja::py_strip(final_message, true, false);
  const auto loc = rendered.rfind(stripped);
  if (loc == std::string::npos)
    throw ChatTemplateError(
        "continue_final_message: the final message does not appear in the rendered chat (the template changes it)");
  // As transformers: keep trailing whitespace of the message when the template kept it, else cut after its text.
  if (rendered.substr(loc, lstripped.size()) == final_message)
    rendered.resize(loc + lstripped.size());
  else
    rendered.resize(loc + stripped.size());
  return rendered;
}

}  // namespace

ChatTemplate::ChatTemplate(Family family, bool opens_thinking) : family_(family), opens_thinking_(opens_thinking) {
  origin_ = "built-in " + std::string(name());
  switch (family) {
    case Family::Llama2: bos_text_ = "<s>", eos_text_ = "</s>"; break;
    case Family::Llama3: bos_text_ = "<|begin_of_text|>", eos_text_ = "<|eot_id|>"; break;
    case Family::Phi4: eos_text_ = "<|im_end|>"; break;
    default: eos_text_ = "<|im_end|>"; break;
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

ChatTemplate ChatTemplate::from_jinja(std::string_view source, std::string origin, ordered_json variables) {
  ChatTemplate t(Family::Jinja, false);
  t.origin_ = origin;
  try {
    t.jinja_["default"] = std::make_shared<const JinjaTemplate>(source, std::move(origin));
  } catch (const JinjaError& e) {
    throw ChatTemplateError(e.what());
  }
  t.variables_ = variables.is_object() ? std::move(variables) : ordered_json::object();
  if (t.variables_.contains("bos_token") && t.variables_["bos_token"].is_string())
    t.bos_text_ = t.variables_["bos_token"].get<std::string>();
  t.eos_text_ = t.variables_.contains("eos_token") && t.variables_["eos_token"].is_string()
                    ? t.variables_["eos_token"].get<std::string>()
                    : std::string();
  return t;
}

ChatTemplate ChatTemplate::detect(const std::string& model_path) {
  std::error_code ec;
  const fs::path dir = model_directory(model_path);
  const fs::path tc_path = dir / "tokenizer_config.json", jinja_path = dir / "chat_template.jinja";
  json tc;
  if (fs::exists(tc_path, ec)) tc = read_json(tc_path);

  // The model's own template(s): chat_template.jinja wins over tokenizer_config.json, as in transformers.
  std::vector<std::pair<std::string, std::pair<std::string, std::string>>> sources;  // name → (source, origin)
  if (fs::exists(jinja_path, ec)) {
    sources.push_back({"default", {read_text(jinja_path), jinja_path.string()}});
  } else if (tc.is_object() && tc.contains("chat_template") && !tc["chat_template"].is_null()) {
    const json& ct = tc["chat_template"];
    if (ct.is_string()) {
      checks::check_size(ct.get_ref<const std::string&>().size(), checks::limits::chat_template,
                         tc_path.string() + ": chat_template");
      sources.push_back({"default", {ct.get<std::string>(), tc_path.string()}});
    } else if (ct.is_array()) {
      for (std::size_t i = 0; i < ct.size(); ++i) {
        const json& t = ct[i];
        if (!t.is_object() || !t.contains("name") || !t["name"].is_string() || !t.contains("template") ||
            !t["template"].is_string())
          throw ChatTemplateError(tc_path.string() + ": chat_template[" + std::to_string(i) +
                                  "] must be an object with string fields \"name\" and \"template\"");
        sources.push_back({t["name"].get<std::string>(),
                           {t["template"].get<std::string>(),
                            tc_path.string() + " (chat_template \"" + t["name"].get<std::string>() + "\")"}});
      }
    } else {
      throw ChatTemplateError(tc_path.string() + ": chat_template must be a string or a list of {name, template}");
    }
  }
  const fs::path extra_dir = dir / "additional_chat_templates";
  if (fs::is_directory(extra_dir, ec))
    for (const auto& entry : fs::directory_iterator(extra_dir))
      if (entry.path().extension() == ".jinja")
        sources.push_back({entry.path().stem().string(), {read_text(entry.path()), entry.path().string()}});

  if (!sources.empty()) {
    ChatTemplate t(Family::Jinja, false);
    t.origin_ = sources.front().second.second;
    for (auto& [name, src] : sources) {
      try {
        t.jinja_[name] = std::make_shared<const JinjaTemplate>(src.first, src.second);
      } catch (const JinjaError& e) {
        throw ChatTemplateError(e.what());
      }
    }
    t.variables_ = special_token_variables(dir);
    if (t.variables_.contains("bos_token")) t.bos_text_ = t.variables_["bos_token"].get<std::string>();
    if (t.variables_.contains("eos_token")) t.eos_text_ = t.variables_["eos_token"].get<std::string>();
    return t;
  }

  // No template shipped: the built-in family for config.json's model_type.
  std::optional<ChatTemplate> found;
  std::string model_type;
  const fs::path cfg_path = dir / "config.json";
  if (fs::exists(cfg_path, ec)) {
    const json cfg = read_json(cfg_path);
    model_type = cfg.value("model_type", "");
    const long vocab =
        cfg.contains("vocab_size") && cfg["vocab_size"].is_number_integer() ? cfg["vocab_size"].get<long>() : 0;
    if (model_type == "qwen2") found = ChatTemplate(Family::Qwen2_5, false);
    if (model_type == "qwen3") found = ChatTemplate(Family::Qwen3, false);
    if (model_type == "llama") found = ChatTemplate(vocab >= 128000 ? Family::Llama3 : Family::Llama2, false);
    if (model_type == "phi3" && vocab >= 100000) found = ChatTemplate(Family::Phi4, false);
  }
  if (!found)
    throw ChatTemplateError(dir.string() +
                            ": the model ships no chat template (no chat_template in tokenizer_config.json, no "
                            "chat_template.jinja) and config.json's model_type has no built-in format; pass "
                            "--chat_template NAME (chatml, qwen2.5, qwen3, llama2, llama3, phi4) or a .jinja file");
  found->origin_ += " (the model ships no chat template; chosen by config.json model_type \"" + model_type + "\")";
  if (tc.is_object()) {
    if (auto bos = token_text(tc, "bos_token")) found->bos_text_ = *bos;
    if (auto eos = token_text(tc, "eos_token"); eos && found->family_ == Family::Llama2) found->eos_text_ = *eos;
  }
  return *found;
}

ChatTemplate ChatTemplate::load(const std::string& model_path, const std::string& override_name_or_file) {
  if (override_name_or_file.empty()) return detect(model_path);
  std::error_code ec;
  const fs::path file = override_name_or_file;
  ordered_json vars = ordered_json::object();
  json tc;
  if (!model_path.empty()) {
    const fs::path dir = model_directory(model_path);
    vars = special_token_variables(dir);
    if (fs::exists(dir / "tokenizer_config.json", ec)) tc = read_json(dir / "tokenizer_config.json");
  }
  if (fs::is_regular_file(file, ec)) return from_jinja(read_text(file), file.string(), std::move(vars));
  static const char* const kNames[] = {"chatml", "qwen2.5", "qwen2", "qwen3", "llama2", "llama3", "phi4"};
  if (std::find(std::begin(kNames), std::end(kNames), override_name_or_file) == std::end(kNames))
    throw ChatTemplateError("--chat_template " + override_name_or_file +
                            ": neither a built-in format (chatml, qwen2.5, qwen3, llama2, llama3, phi4) nor an "
                            "existing .jinja file");
  ChatTemplate t = by_name(override_name_or_file);
  if (tc.is_object()) {
    if (auto bos = token_text(tc, "bos_token")) t.bos_text_ = *bos;
    if (auto eos = token_text(tc, "eos_token"); eos && t.family_ == Family::Llama2) t.eos_text_ = *eos;
  }
  return t;
}

std::string ChatTemplate::render_jinja(const ordered_json& conversation, const ChatRenderOptions& options) const {
  ordered_json vars = variables_;
  vars["messages"] = conversation.contains("messages") ? conversation["messages"] : ordered_json::array();
  vars["tools"] = conversation.contains("tools") ? conversation["tools"] : ordered_json();
  vars["documents"] = conversation.contains("documents") ? conversation["documents"] : ordered_json();
  vars["add_generation_prompt"] = options.add_generation_prompt;
  for (auto it = conversation.begin(); it != conversation.end(); ++it) {
    const std::string& key = it.key();
    if (key == "messages" || key == "tools" || key == "documents") continue;
    if (key == "add_generation_prompt" || key == "continue_final_message")
      throw ChatTemplateError("conversation key \"" + key + "\" is an option, not a template variable");
    vars[key] = it.value();
  }
  if (options.thinking == ThinkingMode::Open) vars["enable_thinking"] = true;
  if (options.thinking == ThinkingMode::Disabled) vars["enable_thinking"] = false;
  // transformers: a named template "tool_use" is taken when tools are given, else "default".
  auto chosen = jinja_.end();
  if (!vars["tools"].is_null()) chosen = jinja_.find("tool_use");
  if (chosen == jinja_.end()) chosen = jinja_.find("default");
  if (chosen == jinja_.end())
    throw ChatTemplateError(origin_ + ": the model has several chat templates and none is named \"default\"");
  try {
    return chosen->second->render(vars);
  } catch (const JinjaError& e) {
    throw ChatTemplateError(e.what());
  }
}

std::string ChatTemplate::render_conversation(const ordered_json& conversation,
                                              const ChatRenderOptions& options) const {
  if (!conversation.is_object()) throw ChatTemplateError("the conversation must be a JSON object with \"messages\"");
  if (!conversation.contains("messages") || !conversation["messages"].is_array())
    throw ChatTemplateError("the conversation needs \"messages\": a list of {\"role\", \"content\"} objects");
  if (options.continue_final_message && options.add_generation_prompt)
    throw ChatTemplateError(
        "continue_final_message and add_generation_prompt cannot be combined: the first continues the last "
        "message, the second starts a new assistant message");
  std::string text;
  if (family_ == Family::Jinja) {
    text = render_jinja(conversation, options);
  } else {
    std::vector<ChatMessage> messages;
    const auto& list = conversation["messages"];
    for (std::size_t i = 0; i < list.size(); ++i) {
      const auto& m = list[i];
      if (!m.is_object() || !m.contains("role") || !m["role"].is_string() || !m.contains("content") ||
          !m["content"].is_string())
        throw ChatTemplateError("messages[" + std::to_string(i) + "]: the built-in " + std::string(name()) +
                                " format needs string \"role\" and \"content\"");
      for (auto it = m.begin(); it != m.end(); ++it)
        if (it.key() != "role" && it.key() != "content")
          throw ChatTemplateError("messages[" + std::to_string(i) + "]: field \"" + it.key() +
                                  "\" needs the model's own "
                                  "Jinja template; the built-in " +
                                  std::string(name()) + " format has role/content only");
      messages.push_back({m["role"].get<std::string>(), m["content"].get<std::string>()});
    }
    for (auto it = conversation.begin(); it != conversation.end(); ++it)
      if (it.key() != "messages" && !(it.key() == "tools" && it.value().is_null()))
        throw ChatTemplateError("conversation key \"" + it.key() +
                                "\" needs the model's own Jinja template; the built-in " + std::string(name()) +
                                " format takes messages only");
    ChatRenderOptions o = options;
    text = render(messages, o);
  }
  if (options.continue_final_message) text = continue_final_message(std::move(text), conversation["messages"]);
  return text;
}

std::string ChatTemplate::render(const std::vector<ChatMessage>& messages, const ChatRenderOptions& options) const {
  if (family_ == Family::Jinja || options.continue_final_message) {
    ordered_json conversation = {{"messages", ordered_json::array()}};
    for (const auto& m : messages) conversation["messages"].push_back({{"role", m.role}, {"content", m.content}});
    if (family_ == Family::Jinja && !options.continue_final_message) return render_jinja(conversation, options);
    return render_conversation(conversation, options);
  }
  switch (family_) {
    case Family::ChatML: return render_chatml(messages, options, nullptr, opens_thinking_);
    case Family::Qwen2_5: return render_chatml(messages, options, kQwen25DefaultSystem, opens_thinking_);
    case Family::Qwen3: return render_qwen3(messages, options);
    case Family::Llama2: return render_llama2(messages, bos_text_, eos_text_);
    case Family::Llama3: return render_llama3(messages, options, bos_text_);
    case Family::Phi4: return render_phi4(messages, options);
    case Family::Jinja: break;
  }
  return {};
}

std::string_view ChatTemplate::name() const {
  switch (family_) {
    case Family::ChatML: return "chatml";
    case Family::Qwen2_5: return "qwen2.5";
    case Family::Qwen3: return "qwen3";
    case Family::Llama2: return "llama2";
    case Family::Llama3: return "llama3";
    case Family::Phi4: return "phi4";
    case Family::Jinja: return "jinja";
  }
  return "";
}

std::vector<std::string> ChatTemplate::stop_texts() const {
  switch (family_) {
    case Family::Llama2: return {eos_text_};
    case Family::Llama3: return {"<|eot_id|>", "<|end_of_text|>"};
    case Family::Jinja:
      if (eos_text_.empty()) return {};
      return {eos_text_};
    default: return {"<|im_end|>", "<|endoftext|>"};
  }
}

}  // namespace lal::lm
