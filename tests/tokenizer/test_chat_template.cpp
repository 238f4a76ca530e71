// Chat templates against the strings the official Jinja templates render (written out by hand from the templates
// in the models' tokenizer_config.json files), plus family detection and the no-double-BOS rule.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>

#include "lal/lm/chat_template.hpp"
#include "test_support.hpp"

using lal::lm::ChatMessage;
using lal::lm::ChatRenderOptions;
using lal::lm::ChatTemplate;
using lal::lm::ThinkingMode;

namespace {

const std::vector<ChatMessage> kConversation = {
    {"system", "あなたは誠実なアシスタントです。"},
    {"user", "日本の首都は？"},
    {"assistant", "東京です。"},
    {"user", "人口は？"},
};

std::string write_dir(const std::string& tag, const std::string& tokenizer_config, const std::string& config) {
  const std::string dir = lal::test::temp_dir(tag);
  if (!tokenizer_config.empty()) std::ofstream(dir + "/tokenizer_config.json") << tokenizer_config;
  if (!config.empty()) std::ofstream(dir + "/config.json") << config;
  return dir;
}

}  // namespace

TEST_CASE("chatml and Qwen2.5 (default system prompt)") {
  CHECK(ChatTemplate::by_name("chatml").render(kConversation) ==
        "<|im_start|>system\nあなたは誠実なアシスタントです。<|im_end|>\n"
        "<|im_start|>user\n日本の首都は？<|im_end|>\n"
        "<|im_start|>assistant\n東京です。<|im_end|>\n"
        "<|im_start|>user\n人口は？<|im_end|>\n"
        "<|im_start|>assistant\n");
  const std::vector<ChatMessage> no_system = {{"user", "Hello"}};
  CHECK(ChatTemplate::by_name("qwen2.5").render(no_system) ==
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n");
  CHECK(ChatTemplate::by_name("qwen2.5").render(no_system, {false, ThinkingMode::TemplateDefault}) ==
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nHello<|im_end|>\n");
  CHECK(ChatTemplate::by_name("chatml").render(no_system, {true, ThinkingMode::Open}) ==
        "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n<think>\n");
}

TEST_CASE("Qwen3: thinking block handling as in its official template") {
  const auto qwen3 = ChatTemplate::by_name("qwen3");
  const std::vector<ChatMessage> one = {{"user", "1+1は？"}};
  CHECK(qwen3.render(one) == "<|im_start|>user\n1+1は？<|im_end|>\n<|im_start|>assistant\n");
  CHECK(qwen3.render(one, {true, ThinkingMode::Disabled}) ==
        "<|im_start|>user\n1+1は？<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n");
  CHECK(qwen3.render(one, {true, ThinkingMode::Open}) ==
        "<|im_start|>user\n1+1は？<|im_end|>\n<|im_start|>assistant\n<think>\n");
  // Reasoning of turns before the last user query is dropped; content after </think> is kept (lstrip '\n').
  const std::vector<ChatMessage> history = {
      {"user", "1+1は？"},
      {"assistant", "<think>\n足し算です。\n</think>\n\n2です。"},
      {"user", "2+2は？"},
      {"assistant", "<think>\nまた足し算。\n</think>\n\n4です。"},
  };
  CHECK(qwen3.render(history, {false, ThinkingMode::TemplateDefault}) ==
        "<|im_start|>user\n1+1は？<|im_end|>\n"
        "<|im_start|>assistant\n2です。<|im_end|>\n"
        "<|im_start|>user\n2+2は？<|im_end|>\n"
        "<|im_start|>assistant\n<think>\nまた足し算。\n</think>\n\n4です。<|im_end|>\n");
  // A system message first; no default system prompt otherwise.
  CHECK(qwen3.render({{"system", "S"}, {"user", "U"}}) ==
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n");
}

TEST_CASE("Llama-2 [INST] with <<SYS>>") {
  const auto llama2 = ChatTemplate::by_name("llama2");
  CHECK(llama2.render(kConversation) ==
        "<s>[INST] <<SYS>>\nあなたは誠実なアシスタントです。\n<</SYS>>\n\n日本の首都は？ [/INST] 東京です。 </s>"
        "<s>[INST] 人口は？ [/INST]");
  CHECK(llama2.render({{"user", "  Hello  "}}) == "<s>[INST] Hello [/INST]");
  CHECK_THROWS_AS(llama2.render({{"user", "a"}, {"user", "b"}}), lal::lm::ChatTemplateError);
}

TEST_CASE("Llama-3 headers") {
  const auto llama3 = ChatTemplate::by_name("llama3");
  CHECK(llama3.render(kConversation) ==
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nあなたは誠実なアシスタントです。<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\n日本の首都は？<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n東京です。<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\n人口は？<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n");
  CHECK(llama3.render({{"user", " trimmed \n"}}, {false, ThinkingMode::TemplateDefault}) ==
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\ntrimmed<|eot_id|>");
}

TEST_CASE("Phi-4 <|im_sep|>") {
  CHECK(ChatTemplate::by_name("phi4").render(kConversation) ==
        "<|im_start|>system<|im_sep|>あなたは誠実なアシスタントです。<|im_end|>"
        "<|im_start|>user<|im_sep|>日本の首都は？<|im_end|>"
        "<|im_start|>assistant<|im_sep|>東京です。<|im_end|>"
        "<|im_start|>user<|im_sep|>人口は？<|im_end|>"
        "<|im_start|>assistant<|im_sep|>");
  CHECK_THROWS_AS(ChatTemplate::by_name("phi4").render({{"tool", "x"}}), lal::lm::ChatTemplateError);
  CHECK_THROWS_AS(ChatTemplate::by_name("nope"), lal::lm::ChatTemplateError);
}

TEST_CASE("the model's own template wins; built-in families only when it ships none") {
  const std::filesystem::path qwen3_dir = std::filesystem::path(lal::test::npm_tokenizer_path("qwen3")).parent_path();
  const auto q3 = ChatTemplate::detect(qwen3_dir.string());
  CHECK(q3.name() == "jinja");
  CHECK(q3.origin() == (qwen3_dir / "tokenizer_config.json").string());
  // The official Qwen3 template and the built-in qwen3 family agree on a plain conversation.
  CHECK(q3.render(kConversation) == ChatTemplate::by_name("qwen3").render(kConversation));
  CHECK(q3.render(kConversation, {true, ThinkingMode::Disabled}) ==
        ChatTemplate::by_name("qwen3").render(kConversation, {true, ThinkingMode::Disabled}));
  const std::filesystem::path llama3_dir = std::filesystem::path(lal::test::npm_tokenizer_path("llama3")).parent_path();
  const auto l3 = ChatTemplate::detect((llama3_dir / "tokenizer.json").string());
  CHECK(l3.name() == "jinja");
  CHECK(l3.bos_text() == "<|begin_of_text|>");
  CHECK(l3.render(kConversation) == ChatTemplate::by_name("llama3").render(kConversation));

  // Templates outside the built-in families are rendered as written, not mapped onto a family.
  const auto calm = ChatTemplate::detect(write_dir(
      "calm",
      R"({"chat_template": "{% for m in messages %}{{ m.role|upper }}: {{ m.content }}\n{% endfor %}ASSISTANT: ",)"
      R"( "bos_token": "<|endoftext|>"})",
      ""));
  CHECK(calm.render({{"user", "こんにちは"}}) == "USER: こんにちは\nASSISTANT: ");
  // chat_template.jinja next to tokenizer_config.json wins, as in transformers.
  const std::string both = write_dir("both", R"({"chat_template": "A"})", "");
  std::ofstream(both + "/chat_template.jinja") << "B{{ messages|length }}";
  CHECK(ChatTemplate::detect(both).render({{"user", "x"}}) == "B1");
  // A named list: "tool_use" when tools are given, else "default".
  const auto named = ChatTemplate::detect(write_dir(
      "named", R"({"chat_template": [{"name": "default", "template": "D"}, {"name": "tool_use", "template": "T"}]})",
      ""));
  CHECK(named.render_conversation({{"messages", nlohmann::ordered_json::array()}}) == "D");
  CHECK(named.render_conversation(
            {{"messages", nlohmann::ordered_json::array()}, {"tools", nlohmann::ordered_json::array()}}) == "T");
  CHECK_THROWS_AS(ChatTemplate::detect(write_dir("badlist", R"({"chat_template": [{"name": "x"}]})", "")),
                  lal::lm::ChatTemplateError);
  // Syntax errors name the file, line and column.
  try {
    ChatTemplate::detect(write_dir("syntax", R"({"chat_template": "ok\n{% if %}"})", ""));
    FAIL("a broken template must be refused");
  } catch (const lal::lm::ChatTemplateError& e) {
    CHECK(std::string(e.what()).find("tokenizer_config.json:2:") != std::string::npos);
  }

  // No template shipped: the family for config.json's model_type, and origin() says so.
  const auto l2 = ChatTemplate::detect(write_dir("cfg2", "", R"({"model_type": "llama", "vocab_size": 32000})"));
  CHECK(l2.name() == "llama2");
  CHECK(l2.origin().find("ships no chat template") != std::string::npos);
  CHECK(ChatTemplate::detect(write_dir("cfg3", "", R"({"model_type": "llama", "vocab_size": 128256})")).name() ==
        "llama3");
  CHECK(ChatTemplate::detect(write_dir("cfgq", "", R"({"model_type": "qwen2"})")).name() == "qwen2.5");
  CHECK_THROWS_AS(ChatTemplate::detect(write_dir("none", "{}", R"({"model_type": "gpt_neox"})")),
                  lal::lm::ChatTemplateError);

  // --chat_template NAME|FILE
  CHECK(ChatTemplate::load(qwen3_dir.string(), "chatml").name() == "chatml");
  const std::string file = lal::test::temp_dir("file") + "/t.jinja";
  std::ofstream(file) << "{{ bos_token }}|{{ messages[0].content }}";
  CHECK(ChatTemplate::load(llama3_dir.string(), file).render({{"user", "q"}}) == "<|begin_of_text|>|q");
  CHECK_THROWS_AS(ChatTemplate::load(qwen3_dir.string(), "no-such-format"), lal::lm::ChatTemplateError);
}

TEST_CASE("rendered prompts encode without a double BOS") {
  const auto& mistral = lal::test::npm_tokenizer("llama2");
  const std::string prompt = ChatTemplate::by_name("llama2").render({{"user", "こんにちは"}});
  const auto ids = mistral.encode(prompt, true);
  REQUIRE(ids.size() > 2);
  CHECK(ids[0] == 1);
  CHECK(ids[1] != 1);
  const auto& qwen = lal::test::npm_tokenizer("qwen3");
  const auto q = qwen.encode(ChatTemplate::by_name("qwen3").render({{"user", "hi"}}), true);
  CHECK(q.front() == qwen.token_to_id("<|im_start|>"));
  CHECK(q.back() == 198);  // "\n" after "assistant"
}
