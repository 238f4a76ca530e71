// frontal_lobe — executive control of a turn: watches the other regions think, decides when to conclude, stops the
// deep thinking it no longer needs (scope "analysis"), composes the answer with the model from what the regions
// thought, streams it on `answer`, and always ends the turn with TurnDone.
//
// When to conclude (first rule that holds, checked on every thought and on the budget deadline):
//   1. analysis_done  — the analysis stage closed (finished, stopped, or skipped for strategy "direct");
//   2. confident      — the analysis so far is measured at ≥ conclude_confidence over ≥ min_analysis_tokens tokens;
//   3. budget_tokens  — intuition + exploration + analysis produced ≥ budget_tokens tokens;
//   4. budget_time    — budget_ms passed since the percept (also covers regions that failed or are not wired).
// Rules 2–4 cancel scope "analysis" first. After rule 1 the lobe waits up to insight_grace_ms for an insight that
// the end of the analysis may trigger.
//
// Everything runs on this module's strand: the budget deadline and the insight grace are timers (ctx.post_after),
// a cancelled turn arrives as a callback (ctx.on_cancel), the answer streams back from LanguageModel::submit, and a
// turn's record is the module's turn_state. No thread, no lock, no map of its own; turns of different users overlap.
#include <cstdio>

#include "lal/plugin.hpp"
#include "lal/plugins/prompts.hpp"
#include "lal/plugins/stage_stream.hpp"

namespace {

namespace lp = lal::plugins;

struct FrontalLobeOptions {
  lp::ModelSettings model = lp::ModelSettings::with(/*max_tokens=*/192, /*temperature=*/0.5, /*priority=*/5);
  std::int64_t budget_ms = 15000;
  int budget_tokens = 768;
  double conclude_confidence = 0.9;
  int min_analysis_tokens = 24;
  std::int64_t insight_grace_ms = 100;
  int max_memories = 5;

  static void declare(lal::Options<FrontalLobeOptions>& o) {
    o.nested(&FrontalLobeOptions::model);
    o.field("budget_ms", &FrontalLobeOptions::budget_ms,
            "conclude (and stop the analysis) this long after the percept at the latest")
        .min(1);
    o.field("budget_tokens", &FrontalLobeOptions::budget_tokens,
            "conclude once intuition + exploration + analysis produced this many tokens")
        .min(1);
    o.field("conclude_confidence", &FrontalLobeOptions::conclude_confidence,
            "conclude early once the analysis is measured this confident")
        .range(0, 1);
    o.field("min_analysis_tokens", &FrontalLobeOptions::min_analysis_tokens,
            "analysis tokens needed before conclude_confidence may apply")
        .min(0);
    o.field("insight_grace_ms", &FrontalLobeOptions::insight_grace_ms,
            "after the analysis closes, wait this long for an insight")
        .range(0, 60000);
    o.field("max_memories", &FrontalLobeOptions::max_memories, "recalled items put into the answer prompt").min(0);
  }
};

/// One turn as the lobe sees it (the module's turn_state).
struct Turn {
  bool started = false;    // the percept arrived
  bool concluded = false;  // the answer is being (or was) composed: later thoughts are ignored
  lal::MessageHeader percept;
  std::string user_text;
  std::int64_t first_output_ns = 0;
  std::string intuition, exploration, analysis, insight, recalled;
  bool analysis_closed = false;
  bool insight_closed = false;
  float analysis_confidence = -1.0f;
  int analysis_tokens = 0;
  int thought_tokens = 0;
  std::shared_ptr<const lal::Recollection> recollection;
  lal::Timer budget, grace;
  bool grace_armed = false;
};

enum class Reason { none, analysis_done, confident, budget_tokens, budget_time, cancelled };

const char* to_string(Reason r) {
  switch (r) {
    case Reason::none: return "none";
    case Reason::analysis_done: return "analysis done";
    case Reason::confident: return "confident";
    case Reason::budget_tokens: return "token budget spent";
    case Reason::budget_time: return "time budget spent";
    case Reason::cancelled: return "turn cancelled";
  }
  return "";
}

class FrontalLobe final : public lal::Module {
 public:
  void start(lal::Context& ctx) override {
    ctx_ = &ctx;
    options_ = ctx.options<FrontalLobeOptions>();
    model_ = lp::require_model(ctx, options_.model.model);
    ctx.on<lal::Percept>("percept", [this](const lal::Delivery<lal::Percept>& m) { percept(m); });
    ctx.on<lal::ThoughtChunk>("thought", [this](const lal::Delivery<lal::ThoughtChunk>& m) { on_thought(m); });
    ctx.on<lal::ThoughtChunk>("insight", [this](const lal::Delivery<lal::ThoughtChunk>& m) { on_thought(m); });
    ctx.on<lal::Recollection>("recollection", [this](const lal::Delivery<lal::Recollection>& m) {
      ctx_->turn_state<Turn>(m.header.turn)->recollection = m.body;
    });
    ctx.on<lal::EmotionState>("emotion", [this](const lal::Delivery<lal::EmotionState>& m) { emotion_ = m.body; });
  }

 private:
  void percept(const lal::Delivery<lal::Percept>& m) {
    const lal::TurnId turn = m.header.turn;
    auto st = ctx_->turn_state<Turn>(turn);
    if (st->started || st->concluded) return;
    st->started = true;
    st->percept = m.header;
    st->user_text = m->text;
    const auto deadline_ns = m.header.timestamp_ns + options_.budget_ms * 1000000;
    const auto left =
        std::chrono::milliseconds(std::max<std::int64_t>(0, (deadline_ns - lal::monotonic_ns()) / 1000000));
    st->budget = ctx_->post_after(left, [this, turn] { conclude(turn, Reason::budget_time); });
    ctx_->on_cancel(turn, [this, turn] { conclude(turn, Reason::cancelled); });
    check(turn, *st);  // thoughts may have come first
  }

  void on_thought(const lal::Delivery<lal::ThoughtChunk>& m) {
    auto st = ctx_->turn_state<Turn>(m.header.turn);
    if (st->concluded) return;  // late chunks (the analysis's "stopped here") change nothing
    const lal::ThoughtChunk& c = *m;
    if (!c.text.empty() && (st->first_output_ns == 0 || m.header.timestamp_ns < st->first_output_ns))
      st->first_output_ns = m.header.timestamp_ns;
    switch (c.stage) {
      case lal::Stage::intuition: st->intuition += c.text; break;
      case lal::Stage::exploration: st->exploration += c.text; break;
      case lal::Stage::analysis:
        st->analysis += c.text;
        if (c.has_token) {
          ++st->analysis_tokens;
          st->analysis_confidence = c.confidence;
        }
        if (c.last) st->analysis_closed = true;
        break;
      case lal::Stage::insight:
        st->insight += c.text;
        if (c.last) st->insight_closed = true;
        break;
      case lal::Stage::recall: st->recalled += c.text + (c.last ? "\n" : ""); break;
      case lal::Stage::emotion:
      case lal::Stage::conclusion: break;
    }
    if (c.has_token &&
        (c.stage == lal::Stage::intuition || c.stage == lal::Stage::exploration || c.stage == lal::Stage::analysis))
      ++st->thought_tokens;
    check(m.header.turn, *st);
  }

  Reason decide(const Turn& st) const {
    if (st.analysis_closed) return Reason::analysis_done;
    if (st.analysis_tokens >= options_.min_analysis_tokens && st.analysis_confidence >= options_.conclude_confidence)
      return Reason::confident;
    if (st.thought_tokens >= options_.budget_tokens) return Reason::budget_tokens;
    return Reason::none;
  }

  /// After every change: conclude when a rule holds. Once the analysis closed, give a possible insight
  /// insight_grace_ms to arrive (it may be triggered by the end of the analysis).
  void check(lal::TurnId turn, Turn& st) {
    if (!st.started || st.concluded) return;
    const Reason reason = decide(st);
    if (reason == Reason::none) return;
    if (reason != Reason::analysis_done || st.insight_closed) return conclude(turn, reason);
    if (st.grace_armed) return;
    st.grace_armed = true;
    st.grace = ctx_->post_after(std::chrono::milliseconds(options_.insight_grace_ms),
                                [this, turn] { conclude(turn, Reason::analysis_done); });
  }

  void conclude(lal::TurnId turn, Reason reason) {
    auto st = ctx_->turn_state<Turn>(turn);
    if (!st->started || st->concluded) return;
    st->concluded = true;
    st->budget.cancel();
    st->grace.cancel();
    if (reason == Reason::confident || reason == Reason::budget_tokens || reason == Reason::budget_time)
      ctx_->cancel_scope(turn, "analysis");
    ctx_->log(lal::LogLevel::debug, "turn " + std::to_string(turn) + ": concluding (" + to_string(reason) + ")");

    auto done = std::make_shared<lal::TurnDone>();
    done->user_text = st->user_text;
    done->strategy = st->analysis_tokens > 0 ? lal::Strategy::deep : lal::Strategy::direct;
    const auto cancel = ctx_->cancellation(turn);
    if (reason == Reason::cancelled) {
      done->first_output_ns = st->first_output_ns;
      done->finish_reason = lal::FinishReason::cancelled;
      return finish(st, done, cancel);
    }
    auto answer =
        std::make_shared<lp::StageStream>(*ctx_, "answer", lal::Stage::conclusion, lal::ChunkKind::answer, st->percept);
    lp::stream_into(
        *model_, answer_request(*st, emotion_.get()), answer, cancel,
        [this, st, done, answer, cancel, turn](const lal::GenerationOutcome& o) {
          done->finish_reason = o ? o.result.finish_reason : lal::FinishReason::error;
          if (o) {
            answer->close();
          } else {
            ctx_->log(lal::LogLevel::error,
                      "turn " + std::to_string(turn) + ": composing the answer failed: " + o.error);
            answer->close(options_.model.language == lp::Language::ja ? "（答えをまとめられませんでした）"
                                                                      : "(I could not put an answer together)");
          }
          done->answer = answer->text();
          done->confidence = answer->stats().known() ? answer->stats().confidence() : 0.0;
          const std::int64_t first_answer = answer->first_visible_ns();
          done->first_output_ns = st->first_output_ns && (!first_answer || st->first_output_ns < first_answer)
                                      ? st->first_output_ns
                                      : first_answer;
          finish(st, done, cancel);
        });
  }

  void finish(const std::shared_ptr<Turn>& st, const std::shared_ptr<lal::TurnDone>& done,
              const lal::CancellationToken& cancel) {
    done->cancelled = cancel.cancelled();
    done->answer_done_ns = lal::monotonic_ns();
    ctx_->publish("done", *done, &st->percept);
  }

  lal::GenerationRequest answer_request(const Turn& st, const lal::EmotionState* emotion) const {
    std::string memories =
        st.recollection ? lp::format_memories(st.recollection->items, static_cast<std::size_t>(options_.max_memories))
                        : st.recalled;
    std::string feeling;
    if (emotion && !emotion->label.empty() && emotion->label != "neutral") {
      char buf[96];
      std::snprintf(buf, sizeof buf, "%s (valence %+.2f, arousal %+.2f)", emotion->label.c_str(), emotion->valence,
                    emotion->arousal);
      feeling = buf;
    }
    lp::PromptSections p(options_.model.language);
    p.add("ユーザーの言葉", "What the user said", st.user_text)
        .add("直感", "Intuition", st.intuition)
        .add("探索", "Exploration", st.exploration)
        .add("分析", "Analysis", st.analysis)
        .add("ひらめき", "Insight", st.insight)
        .add("思い出したこと", "What I remember", memories)
        .add("いまの気持ち", "How I feel", feeling);
    return lp::make_request(options_.model, lp::Role::answer, p.str(), st.percept.turn, emotion,
                            options_.model.max_tokens);
  }

  lal::Context* ctx_ = nullptr;
  FrontalLobeOptions options_;
  std::shared_ptr<lal::LanguageModel> model_;
  std::shared_ptr<const lal::EmotionState> emotion_;
};

lal::PluginDescriptor describe() {
  lal::PluginDescriptor d{"frontal_lobe", lal::ModuleKind::brain_region, "0.2.0",
                          "Decides when to conclude, stops deep thinking, composes and streams the answer"};
  d.input<lal::Percept>("percept", "what the user said: starts the turn's clock")
      .input<lal::ThoughtChunk>("thought", "the other regions' thoughts")
      .optional_input<lal::ThoughtChunk>("insight", "insight chunks")
      .optional_input<lal::Recollection>("recollection", "what the hippocampus recalled")
      .optional_input<lal::EmotionState>("emotion", "current emotion: modulates temperature and tone",
                                         lal::OverflowPolicy::keep_latest, 1)
      .output<lal::ThoughtChunk>("answer", "stage conclusion, kind answer, one chunk per token, measured confidence")
      .output<lal::TurnDone>("done", "one per turn, always (also when cancelled or composing failed)")
      .options<FrontalLobeOptions>();
  return d;
}

}  // namespace

LAL_PLUGIN(FrontalLobe, describe)
