// right_brain — the fast, intuitive first impression. A short generation (tens of tokens) at high model priority,
// streamed token by token as `intuition` thoughts the moment each token exists, so the person sees the system
// react long before the analysis is done.
//
// The generation is submitted to the model and streams back on this module's strand (LanguageModel::submit), so
// turns of different users overlap here; turn cancellation reaches it through the token.
#include "lal/plugin.hpp"
#include "lal/plugins/prompts.hpp"
#include "lal/plugins/stage_stream.hpp"

namespace {

namespace lp = lal::plugins;

struct RightBrainOptions {
  lp::ModelSettings model = lp::ModelSettings::with(/*max_tokens=*/32, /*temperature=*/0.8, /*priority=*/10);
  static void declare(lal::Options<RightBrainOptions>& o) { o.nested(&RightBrainOptions::model); }
};

class RightBrain final : public lal::Module {
 public:
  void start(lal::Context& ctx) override {
    ctx_ = &ctx;
    settings_ = ctx.options<RightBrainOptions>().model;
    model_ = lp::require_model(ctx, settings_.model);
    ctx.on<lal::EmotionState>("emotion", [this](const lal::Delivery<lal::EmotionState>& m) { emotion_ = m.body; });
    ctx.on<lal::Percept>("percept", [this](const lal::Delivery<lal::Percept>& m) { react(m); });
  }

 private:
  void react(const lal::Delivery<lal::Percept>& m) {
    auto stream =
        std::make_shared<lp::StageStream>(*ctx_, "thought", lal::Stage::intuition, lal::ChunkKind::thought, m.header);
    const auto request =
        lp::make_request(settings_, lp::Role::intuition, m->text, m.header.turn, emotion_.get(), settings_.max_tokens);
    lp::stream_into(*model_, request, stream, ctx_->cancellation(m.header.turn),
                    [stream](const lal::GenerationOutcome& o) {
                      stream->close();
                      // After closing the stage: the host logs and counts the failure under this module's
                      // failure_policy.
                      if (!o) throw std::runtime_error(o.error);
                    });
  }

  lal::Context* ctx_ = nullptr;
  lp::ModelSettings settings_;
  std::shared_ptr<lal::LanguageModel> model_;
  std::shared_ptr<const lal::EmotionState> emotion_;
};

lal::PluginDescriptor describe() {
  lal::PluginDescriptor d{"right_brain", lal::ModuleKind::brain_region, "0.2.0",
                          "Fast intuitive first impression: a short high-priority generation, streamed at once"};
  d.input<lal::Percept>("percept", "what the user said")
      .optional_input<lal::EmotionState>("emotion", "current emotion: modulates temperature and tone",
                                         lal::OverflowPolicy::keep_latest, 1)
      .output<lal::ThoughtChunk>("thought", "stage intuition, one chunk per token, measured confidence")
      .options<RightBrainOptions>();
  return d;
}

}  // namespace

LAL_PLUGIN(RightBrain, describe)
