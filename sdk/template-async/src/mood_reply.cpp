// mood_reply — asks the model without blocking, after waiting (with a deadline) for another module's message:
// each percept waits up to `emotion_deadline_ms` for the turn's emotion state, then streams the model's reply,
// in that mood, as analysis thoughts. Every callback runs on this module's strand: no thread, no lock, no map.
#include <lal/plugin.hpp>
#include <lal/services/language_model.hpp>

namespace {

struct MoodReplyOptions {
  std::int64_t emotion_deadline_ms = 200;  // the defaults are these initialisers, written once
  int max_tokens = 32;
  static void declare(lal::Options<MoodReplyOptions>& o) {
    o.field("emotion_deadline_ms", &MoodReplyOptions::emotion_deadline_ms, "wait this long for the emotion")
        .range(0, 10000);
    o.field("max_tokens", &MoodReplyOptions::max_tokens, "most tokens of the reply").min(1);
  }
};

class MoodReply final : public lal::Module {
 public:
  void start(lal::Context& ctx) override {
    ctx_ = &ctx;
    options_ = ctx.options<MoodReplyOptions>();
    model_ = ctx.service<lal::LanguageModel>("model");  // bound to this module: callbacks come on its strand
    if (!model_) throw std::runtime_error("needs a LanguageModel `model` under the pipeline's resources:");
    ctx.keep<lal::EmotionState>("emotion");  // kept per turn, so await() can see it
    ctx.on<lal::Percept>("percept", [this](const lal::Delivery<lal::Percept>& m) {
      ctx_->await<lal::EmotionState>(
          "emotion", m.header.turn, std::chrono::milliseconds(options_.emotion_deadline_ms),
          [this, m](const lal::Delivery<lal::EmotionState>& e) { reply(m, e->label); },
          [this, m] { reply(m, "unknown"); });  // the deadline passed first
    });
  }

 private:
  void reply(const lal::Delivery<lal::Percept>& m, const std::string& mood) {
    lal::GenerationRequest request;
    request.messages = {{"system", "Reply in one sentence. Your mood: " + mood}, {"user", m->text}};
    request.max_new_tokens = options_.max_tokens;
    request.min_new_tokens = 4;  // no end-of-sequence before this: a small model may otherwise say nothing
    const lal::MessageHeader cause = m.header;
    model_->submit(
        request, [this, cause](const lal::TokenEvent& t) { say(cause, t.text, false); },
        [this, cause](const lal::GenerationOutcome& o) { say(cause, o ? "" : " (" + o.error + ")", true); },
        ctx_->cancellation(cause.turn));
  }

  void say(const lal::MessageHeader& cause, std::string text, bool last) {
    lal::ThoughtChunk c;
    c.stage = lal::Stage::analysis;
    c.text = std::move(text);
    c.last = last;
    c.origin = ctx_->module_id();
    ctx_->publish("thought", std::move(c), &cause);
  }

  lal::Context* ctx_ = nullptr;
  MoodReplyOptions options_;
  std::shared_ptr<lal::LanguageModel> model_;
};

lal::PluginDescriptor describe() {
  lal::PluginDescriptor d{"mood_reply", lal::ModuleKind::brain_region, "1.0.0",
                          "Waits for the turn's emotion (with a deadline), then streams the model's reply"};
  d.input<lal::Percept>("percept", "what the user said")
      .optional_input<lal::EmotionState>("emotion", "the emotion module's state")
      .output<lal::ThoughtChunk>("thought", "the reply, one chunk per token, then a closing chunk")
      .options<MoodReplyOptions>();
  return d;
}

}  // namespace

LAL_PLUGIN(MoodReply, describe)
