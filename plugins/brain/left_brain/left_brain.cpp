// left_brain — deliberate thinking: exploration with recalled memories, then step-by-step analysis, streamed as it
// goes (stage exploration, then analysis), stoppable by the frontal lobe through the turn's "analysis" scope.
//
// After a percept the module waits (ctx.await, with a deadline) for the hippocampus's recollection of the same
// turn, then asks the model (LanguageModel::submit); every step runs on this module's strand, so it keeps no
// thread, no lock and no map of its own, and turns of different users overlap.
#include "lal/plugin.hpp"
#include "lal/plugins/prompts.hpp"
#include "lal/plugins/stage_stream.hpp"

namespace {

namespace lp = lal::plugins;

struct LeftBrainOptions {
  lp::ModelSettings model = lp::ModelSettings::with(/*max_tokens=*/256, /*temperature=*/0.6, /*priority=*/0);
  std::int64_t recollection_deadline_ms = 300;
  int exploration_max_tokens = 48;
  bool thinking = false;
  double direct_min_confidence = 0.6;
  int max_memories = 5;

  static void declare(lal::Options<LeftBrainOptions>& o) {
    o.nested(&LeftBrainOptions::model);
    o.field("recollection_deadline_ms", &LeftBrainOptions::recollection_deadline_ms,
            "how long to wait for the turn's recollection before exploring")
        .range(0, 60000);
    o.field("exploration_max_tokens", &LeftBrainOptions::exploration_max_tokens, "most tokens of the exploration stage")
        .min(1);
    o.field("thinking", &LeftBrainOptions::thinking,
            "ask the model's chat template for a thinking block during analysis");
    o.field("direct_min_confidence", &LeftBrainOptions::direct_min_confidence,
            "skip deep analysis when the recollection suggests strategy direct at least this surely")
        .range(0, 1);
    o.field("max_memories", &LeftBrainOptions::max_memories, "recalled items put into the prompt").min(0);
  }
};

/// What a turn's thinking carries from one step to the next.
struct Thinking {
  lal::MessageHeader header;
  std::string question;
  std::shared_ptr<const lal::Recollection> recollection;
  std::shared_ptr<const lal::EmotionState> emotion;
  lal::CancellationToken scope;
};

class LeftBrain final : public lal::Module {
 public:
  void start(lal::Context& ctx) override {
    ctx_ = &ctx;
    options_ = ctx.options<LeftBrainOptions>();
    model_ = lp::require_model(ctx, options_.model.model);
    ctx.on<lal::EmotionState>("emotion", [this](const lal::Delivery<lal::EmotionState>& m) { emotion_ = m.body; });
    recollection_wired_ = ctx.keep<lal::Recollection>("recollection");
    ctx.on<lal::Percept>("percept", [this](const lal::Delivery<lal::Percept>& m) { percept(m); });
  }

 private:
  void percept(const lal::Delivery<lal::Percept>& m) {
    auto t = std::make_shared<Thinking>();
    t->header = m.header;
    t->question = m->text;
    t->scope = ctx_->cancellation(m.header.turn, "analysis");
    if (!recollection_wired_) return explore(t);
    ctx_->await<lal::Recollection>(
        "recollection", m.header.turn, std::chrono::milliseconds(options_.recollection_deadline_ms),
        [this, t](const lal::Delivery<lal::Recollection>& r) {
          t->recollection = r.body;
          explore(t);
        },
        [this, t] { explore(t); });
  }

  void explore(const std::shared_ptr<Thinking>& t) {
    t->emotion = emotion_;
    const bool ja = options_.model.language == lp::Language::ja;
    auto exploration = std::make_shared<lp::StageStream>(*ctx_, "thought", lal::Stage::exploration,
                                                         lal::ChunkKind::thought, t->header);
    lp::PromptSections prompt(options_.model.language);
    prompt.add("質問", "Question", t->question).add("思い出したこと", "What I remember", memories(*t));
    lp::stream_into(*model_,
                    lp::make_request(options_.model, lp::Role::exploration, prompt.str(), t->header.turn,
                                     t->emotion.get(), options_.exploration_max_tokens),
                    exploration, t->scope, [this, t, exploration, ja](const lal::GenerationOutcome& o) {
                      exploration->close(t->scope.cancelled() ? stopped_note(ja) : "");
                      if (!o) throw std::runtime_error(o.error);
                      if (!t->scope.cancelled()) analyse(t, exploration->text());
                    });
  }

  void analyse(const std::shared_ptr<Thinking>& t, const std::string& explored) {
    const bool ja = options_.model.language == lp::Language::ja;
    auto analysis =
        std::make_shared<lp::StageStream>(*ctx_, "thought", lal::Stage::analysis, lal::ChunkKind::thought, t->header);
    if (t->recollection && t->recollection->suggested_strategy == lal::Strategy::direct &&
        t->recollection->strategy_confidence >= options_.direct_min_confidence) {
      // Procedural memory knows this kind of request and that answering directly worked: no deep analysis. Say so,
      // unmeasured (no model spoke), so the frontal lobe concludes at once and the person sees why.
      analysis->close(ja ? "前にうまくいったやり方がわかっているので、深い分析は省きます。"
                         : "I know what worked for this before, so I'll skip the deep analysis.");
      return;
    }
    lp::PromptSections prompt(options_.model.language);
    prompt.add("質問", "Question", t->question)
        .add("思い出したこと", "What I remember", memories(*t))
        .add("探索", "Exploration", explored);
    auto request = lp::make_request(options_.model, lp::Role::analysis, prompt.str(), t->header.turn, t->emotion.get(),
                                    options_.model.max_tokens);
    request.thinking = options_.thinking;
    lp::stream_into(*model_, request, analysis, t->scope, [t, analysis, ja](const lal::GenerationOutcome& o) {
      analysis->close(t->scope.cancelled() ? stopped_note(ja) : "");
      if (!o) throw std::runtime_error(o.error);
    });
  }

  std::string memories(const Thinking& t) const {
    return t.recollection ? lp::format_memories(t.recollection->items, static_cast<std::size_t>(options_.max_memories))
                          : "";
  }
  static std::string stopped_note(bool ja) { return ja ? "（ここで考えるのをやめました）" : " (stopped here)"; }

  lal::Context* ctx_ = nullptr;
  LeftBrainOptions options_;
  std::shared_ptr<lal::LanguageModel> model_;
  std::shared_ptr<const lal::EmotionState> emotion_;
  bool recollection_wired_ = false;
};

lal::PluginDescriptor describe() {
  lal::PluginDescriptor d{"left_brain", lal::ModuleKind::brain_region, "0.2.0",
                          "Exploration with recalled memories, then analysis; streamed, stoppable (scope analysis)"};
  d.input<lal::Percept>("percept", "what the user said")
      .optional_input<lal::Recollection>("recollection", "what the hippocampus recalled for the turn")
      .optional_input<lal::EmotionState>("emotion", "current emotion: modulates temperature and tone",
                                         lal::OverflowPolicy::keep_latest, 1)
      .output<lal::ThoughtChunk>("thought", "stage exploration, then analysis; one chunk per token")
      .options<LeftBrainOptions>();
  return d;
}

}  // namespace

LAL_PLUGIN(LeftBrain, describe)
