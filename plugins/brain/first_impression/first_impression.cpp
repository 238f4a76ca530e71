// first_impression — a brain region that reacts at once, without a language model: what kind of utterance this
// is (question, greeting, request, statement), which words stand out, and whether it reminds us of something in
// memory. It is the model-free intuition of the `hello` pipeline; `right_brain` is the model-driven one.
#include <sstream>

#include "lal/plugin.hpp"
#include "lal/plugins/text_features.hpp"

namespace {

bool contains(const std::string& text, std::initializer_list<const char*> needles) {
  for (const char* n : needles)
    if (text.find(n) != std::string::npos) return true;
  return false;
}

std::string lower_ascii(std::string s) {
  for (char& c : s)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return s;
}

struct FirstImpressionOptions {
  std::string language = "auto";
  std::int64_t recall_deadline_ms = 200;
  static void declare(lal::Options<FirstImpressionOptions>& o) {
    o.field("language", &FirstImpressionOptions::language, "auto (follow the input), ja or en")
        .one_of({"auto", "ja", "en"});
    o.field("recall_deadline_ms", &FirstImpressionOptions::recall_deadline_ms,
            "how long to wait for memory before speaking without it")
        .range(0, 60000);
  }
};

enum class Act { question, greeting, request, statement };

Act classify(const std::string& raw) {
  const std::string text = lower_ascii(raw);
  if (contains(text, {"こんにちは", "こんばんは", "おはよう", "はじめまして", "hello", "hi ", "good morning"}) ||
      text == "hi")
    return Act::greeting;
  if (contains(text, {"?", "？", "か。", "ですか", "ますか", "なぜ", "どう", "何", "なに", "いつ", "どこ", "だれ",
                      "誰", "why", "how", "what", "when", "where", "who"}))
    return Act::question;
  if (contains(text, {"ください", "てほしい", "して。", "お願い", "please", "could you", "can you"}))
    return Act::request;
  return Act::statement;
}

const char* describe_act(Act a, bool ja) {
  switch (a) {
    case Act::question: return ja ? "質問のようです" : "This sounds like a question";
    case Act::greeting: return ja ? "挨拶ですね" : "A greeting";
    case Act::request: return ja ? "お願いごとのようです" : "This is a request";
    case Act::statement: return ja ? "何かを伝えてくれています" : "You are telling me something";
  }
  return "";
}

class FirstImpression final : public lal::Module {
 public:
  void start(lal::Context& ctx) override {
    ctx_ = &ctx;
    const auto o = ctx.options<FirstImpressionOptions>();
    language_ = o.language;
    deadline_ = std::chrono::milliseconds(o.recall_deadline_ms);
    ctx.on<lal::Percept>("percept", [this](const lal::Delivery<lal::Percept>& m) { react(m); });
  }

 private:
  void react(const lal::Delivery<lal::Percept>& m) {
    const bool ja = language_ == "ja" || (language_ == "auto" && lal::plugins::looks_japanese(m->text));
    std::ostringstream first;
    first << describe_act(classify(m->text), ja);
    const auto words = lal::plugins::salient_words(m->text);
    if (!words.empty()) {
      first << (ja ? "。気になる言葉: " : ". Words that stand out: ");
      for (std::size_t i = 0; i < words.size(); ++i) first << (i ? (ja ? "、" : ", ") : "") << words[i];
    }
    first << (ja ? "。" : ".");
    const std::string impression = first.str();
    lal::MessageHeader cause = m.header;
    lal::RecallRequest req;
    req.cue = m->text;
    req.limit = 1;
    // Ask memory for one association; say the impression either way (with or without it) when the reply comes.
    ctx_->request<lal::RecallRequest, lal::RecallReply>(
        "recall", req, deadline_,
        [this, impression, cause, ja](lal::Reply<lal::RecallReply> reply) {
          std::string text = impression;
          if (reply && !reply->items.empty())
            text += (ja ? " 前に聞いた「" : " It reminds me of \"") + reply->items.front().text + (ja ? "」を思い出しました。" : "\".");
          lal::ThoughtChunk t;
          t.stage = lal::Stage::intuition;
          t.text = text;
          t.last = true;
          t.origin = ctx_->module_id();
          ctx_->publish("thought", std::move(t), &cause);
        },
        &cause);
  }

  lal::Context* ctx_ = nullptr;
  std::string language_;
  std::chrono::milliseconds deadline_{0};
};

lal::PluginDescriptor describe() {
  lal::PluginDescriptor d{"first_impression", lal::ModuleKind::brain_region, "0.1.0",
                          "Model-free intuition: utterance type, salient words, one association from memory"};
  d.input<lal::Percept>("percept", "what the user said")
      .requests<lal::RecallRequest, lal::RecallReply>("recall", "asks memory for an association", true)
      .output<lal::ThoughtChunk>("thought", "one intuition-stage thought per percept")
      .options<FirstImpressionOptions>();
  return d;
}

}  // namespace

LAL_PLUGIN(FirstImpression, describe)
