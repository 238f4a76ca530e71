// right_brain — the fast, intuitive first impression. A short generation (tens of tokens) at high model priority,
// streamed token by token as `intuition` thoughts the moment each token exists, so the person sees the system
// react long before the analysis is done.
//
// Generation runs in the percept handler: the module has nothing else to react to while it speaks (the emotion
// state is keep_latest and may wait), and turn cancellation reaches it through the token, not through a message.
#include "lal/plugin.hpp"
#include "lal/plugins/prompts.hpp"
#include "lal/plugins/stage_stream.hpp"

namespace {

namespace lp = lal::plugins;

class RightBrain final : public lal::Module {
 public:
  void start(lal::Context& ctx) override {
    ctx_ = &ctx;
    settings_ = lp::read_model_config(ctx.config());
    model_ = lp::require_model(ctx, settings_.model);
    ctx.on<lal::EmotionState>("emotion", [this](const lal::Delivery<lal::EmotionState>& m) { emotion_ = m.body; });
    ctx.on<lal::Percept>("percept", [this](const lal::Delivery<lal::Percept>& m) { react(m); });
  }

 private:
  void react(const lal::Delivery<lal::Percept>& m) {
    lp::StageStream stream(*ctx_, "thought", lal::Stage::intuition, lal::ChunkKind::thought, m.header);
    const auto request =
        lp::make_request(settings_, lp::Role::intuition, m->text, m.header.turn, emotion_.get(), settings_.max_tokens);
    // If the model throws, the stream's destructor still publishes the closing chunk, and the exception goes on to
    // the host, which logs and counts it under this module's failure_policy.
    lp::generate_into(*model_, request, stream, ctx_->cancellation(m.header.turn));
    stream.close();
  }

  lal::Context* ctx_ = nullptr;
  lp::ModelSettings settings_;
  std::shared_ptr<lal::LanguageModel> model_;
  std::shared_ptr<const lal::EmotionState> emotion_;
};

lal::PluginDescriptor describe() {
  lal::PluginDescriptor d{"right_brain", lal::ModuleKind::brain_region, "0.1.0",
                          "Fast intuitive first impression: a short high-priority generation, streamed at once"};
  d.input<lal::Percept>("percept", "what the user said")
      .optional_input<lal::EmotionState>("emotion", "current emotion: modulates temperature and tone",
                                         lal::OverflowPolicy::keep_latest, 1)
      .output<lal::ThoughtChunk>("thought", "stage intuition, one chunk per token, measured confidence");
  lp::declare_model_config(d, 32, 0.8, 10);
  return d;
}

}  // namespace

LAL_PLUGIN(RightBrain, describe)
