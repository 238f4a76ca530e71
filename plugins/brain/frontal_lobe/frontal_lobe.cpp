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
// Why a worker thread (lal/plugins/turn_worker.hpp): deciding "on the budget deadline" needs a clock that fires without
// any message arriving, and the lobe must keep receiving thoughts while it waits. Handlers record what arrives; one
// conductor thread waits, decides and composes, turn after turn.
#include <cstdio>
#include <map>
#include <set>

#include "lal/plugin.hpp"
#include "lal/plugins/prompts.hpp"
#include "lal/plugins/stage_stream.hpp"
#include "lal/plugins/turn_worker.hpp"

namespace {

namespace lp = lal::plugins;
using Clock = std::chrono::steady_clock;

struct TurnState {
  lal::MessageHeader percept;
  std::string user_text;
  std::int64_t first_output_ns = 0;
  std::string intuition, exploration, analysis, insight, recalled;
  bool analysis_closed = false;
  bool insight_closed = false;
  float analysis_confidence = -1.0f;
  std::size_t analysis_tokens = 0;
  std::size_t thought_tokens = 0;
  std::shared_ptr<const lal::Recollection> recollection;
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
    const auto& c = ctx.config();
    settings_ = lp::read_model_config(c);
    model_ = lp::require_model(ctx, settings_.model);
    budget_ = std::chrono::milliseconds(c.get<std::int64_t>("budget_ms"));
    budget_tokens_ = c.get<std::size_t>("budget_tokens");
    conclude_confidence_ = c.get<double>("conclude_confidence");
    min_analysis_tokens_ = c.get<std::size_t>("min_analysis_tokens");
    insight_grace_ = std::chrono::milliseconds(c.get<std::int64_t>("insight_grace_ms"));
    max_memories_ = c.get<std::size_t>("max_memories");

    ctx.on<lal::Percept>("percept", [this](const lal::Delivery<lal::Percept>& m) {
      std::lock_guard<std::mutex> lk(worker_.mutex());
      if (finished_.count(m.header.turn)) return;
      TurnState& st = turns_[m.header.turn];
      st.percept = m.header;
      st.user_text = m->text;
      worker_.push_locked(m.header.turn);
    });
    ctx.on<lal::ThoughtChunk>("thought", [this](const lal::Delivery<lal::ThoughtChunk>& m) { on_thought(m); });
    ctx.on<lal::ThoughtChunk>("insight", [this](const lal::Delivery<lal::ThoughtChunk>& m) { on_thought(m); });
    ctx.on<lal::Recollection>("recollection", [this](const lal::Delivery<lal::Recollection>& m) {
      std::lock_guard<std::mutex> lk(worker_.mutex());
      if (TurnState* st = state(m.header.turn)) st->recollection = m.body;
    });
    ctx.on<lal::EmotionState>("emotion", [this](const lal::Delivery<lal::EmotionState>& m) {
      std::lock_guard<std::mutex> lk(worker_.mutex());
      emotion_ = m.body;
    });
    worker_.start([this](lal::TurnId& turn) { conduct(turn); },
                  [this](const lal::TurnId& turn, const std::exception& e) {
                    // The host cannot see this (no strand runs it). conduct() already ended the turn if it could.
                    ctx_->log(lal::LogLevel::error, "turn " + std::to_string(turn) + ": " + e.what());
                  },
                  [this] { return ctx_->busy_guard(); });
  }

  void stop() override { worker_.stop(); }

 private:
  // Null for a turn already concluded (late chunks, e.g. the analysis's "stopped here", are ignored).
  TurnState* state(lal::TurnId turn) {
    if (finished_.count(turn)) return nullptr;
    return &turns_[turn];
  }

  void on_thought(const lal::Delivery<lal::ThoughtChunk>& m) {
    std::lock_guard<std::mutex> lk(worker_.mutex());
    TurnState* st = state(m.header.turn);
    if (!st) return;
    const lal::ThoughtChunk& c = *m;
    if (!c.text.empty() && (st->first_output_ns == 0 || m.header.timestamp_ns < st->first_output_ns))
      st->first_output_ns = m.header.timestamp_ns;
    const bool token = lp::measured(c) && !c.last;  // one chunk per token; the closing chunk adds none
    switch (c.stage) {
      case lal::Stage::intuition: st->intuition += c.text; break;
      case lal::Stage::exploration: st->exploration += c.text; break;
      case lal::Stage::analysis:
        st->analysis += c.text;
        if (token) {
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
    if (token &&
        (c.stage == lal::Stage::intuition || c.stage == lal::Stage::exploration || c.stage == lal::Stage::analysis))
      ++st->thought_tokens;
    worker_.cv().notify_all();
  }

  Reason decide(const TurnState& st) const {
    if (st.analysis_closed) return Reason::analysis_done;
    if (st.analysis_tokens >= min_analysis_tokens_ && st.analysis_confidence >= conclude_confidence_)
      return Reason::confident;
    if (st.thought_tokens >= budget_tokens_) return Reason::budget_tokens;
    return Reason::none;
  }

  void conduct(lal::TurnId turn) {
    const auto cancel = ctx_->cancellation(turn);
    TurnState st;
    std::shared_ptr<const lal::EmotionState> emotion;
    Reason reason = Reason::none;
    {
      std::unique_lock<std::mutex> lk(worker_.mutex());
      const auto deadline = Clock::time_point(std::chrono::nanoseconds(turns_[turn].percept.timestamp_ns)) + budget_;
      // Slices of 20 ms: a cancelled turn flips a flag but notifies nobody, so the wait must look now and then.
      while (!worker_.stopping()) {
        if (cancel.cancelled()) reason = Reason::cancelled;
        if (reason == Reason::none) reason = decide(turns_[turn]);
        if (reason == Reason::none && Clock::now() >= deadline) reason = Reason::budget_time;
        if (reason != Reason::none) break;
        worker_.cv().wait_until(lk, std::min(deadline, Clock::now() + std::chrono::milliseconds(20)));
      }
      if (worker_.stopping()) return;
      if (reason == Reason::analysis_done && !turns_[turn].insight_closed)
        worker_.cv().wait_for(lk, insight_grace_, [&] { return worker_.stopping() || turns_[turn].insight_closed; });
      st = std::move(turns_[turn]);
      turns_.erase(turn);
      finished_.insert(turn);
      while (finished_.size() > 256) finished_.erase(finished_.begin());
      emotion = emotion_;
    }
    if (reason == Reason::confident || reason == Reason::budget_tokens || reason == Reason::budget_time)
      ctx_->cancel_scope(turn, "analysis");
    ctx_->log(lal::LogLevel::debug, "turn " + std::to_string(turn) + ": concluding (" + to_string(reason) + ")");

    lal::TurnDone done;
    done.user_text = st.user_text;
    done.strategy = st.analysis_tokens > 0 ? "deep" : "direct";
    if (reason != Reason::cancelled) {
      lp::StageStream answer(*ctx_, "answer", lal::Stage::conclusion, lal::ChunkKind::answer, st.percept);
      try {
        lp::generate_into(*model_, answer_request(st, emotion.get()), answer, cancel);
        answer.close();
      } catch (const std::exception& e) {
        ctx_->log(lal::LogLevel::error, "turn " + std::to_string(turn) + ": composing the answer failed: " + e.what());
        answer.close(settings_.language == lp::Language::ja ? "（答えをまとめられませんでした）"
                                                            : "(I could not put an answer together)");
      }
      done.answer = answer.text();
      done.confidence = answer.stats().known() ? answer.stats().confidence() : 0.0;
      const std::int64_t first_answer = answer.first_visible_ns();
      done.first_output_ns = st.first_output_ns && (!first_answer || st.first_output_ns < first_answer)
                                 ? st.first_output_ns
                                 : first_answer;
    } else {
      done.first_output_ns = st.first_output_ns;
    }
    done.cancelled = cancel.cancelled();
    done.answer_done_ns = lal::monotonic_ns();
    ctx_->publish("done", std::move(done), &st.percept);
  }

  lal::GenerationRequest answer_request(const TurnState& st, const lal::EmotionState* emotion) const {
    std::string memories = st.recollection ? lp::format_memories(st.recollection->items, max_memories_) : st.recalled;
    std::string feeling;
    if (emotion && !emotion->label.empty() && emotion->label != "neutral") {
      char buf[96];
      std::snprintf(buf, sizeof buf, "%s (valence %+.2f, arousal %+.2f)", emotion->label.c_str(), emotion->valence,
                    emotion->arousal);
      feeling = buf;
    }
    lp::PromptSections p(settings_.language);
    p.add("ユーザーの言葉", "What the user said", st.user_text)
        .add("直感", "Intuition", st.intuition)
        .add("探索", "Exploration", st.exploration)
        .add("分析", "Analysis", st.analysis)
        .add("ひらめき", "Insight", st.insight)
        .add("思い出したこと", "What I remember", memories)
        .add("いまの気持ち", "How I feel", feeling);
    return lp::make_request(settings_, lp::Role::answer, p.str(), st.percept.turn, emotion, settings_.max_tokens);
  }

  lal::Context* ctx_ = nullptr;
  lp::ModelSettings settings_;
  std::shared_ptr<lal::LanguageModel> model_;
  std::chrono::milliseconds budget_{15000};
  std::size_t budget_tokens_ = 768;
  double conclude_confidence_ = 0.9;
  std::size_t min_analysis_tokens_ = 24;
  std::chrono::milliseconds insight_grace_{100};
  std::size_t max_memories_ = 5;

  // Guarded by worker_.mutex(): shared by the strand's handlers and the conductor.
  std::map<lal::TurnId, TurnState> turns_;
  std::set<lal::TurnId> finished_;
  std::shared_ptr<const lal::EmotionState> emotion_;
  lp::TurnWorker<lal::TurnId> worker_;  // last: joined before the state above goes away
};

lal::PluginDescriptor describe() {
  lal::PluginDescriptor d{"frontal_lobe", lal::ModuleKind::brain_region, "0.1.0",
                          "Decides when to conclude, stops deep thinking, composes and streams the answer"};
  d.input<lal::Percept>("percept", "what the user said: starts the turn's clock")
      .input<lal::ThoughtChunk>("thought", "the other regions' thoughts")
      .optional_input<lal::ThoughtChunk>("insight", "insight chunks")
      .optional_input<lal::Recollection>("recollection", "what the hippocampus recalled")
      .optional_input<lal::EmotionState>("emotion", "current emotion: modulates temperature and tone",
                                         lal::OverflowPolicy::keep_latest, 1)
      .output<lal::ThoughtChunk>("answer", "stage conclusion, kind answer, one chunk per token, measured confidence")
      .output<lal::TurnDone>("done", "one per turn, always (also when cancelled or composing failed)");
  lp::declare_model_config(d, 192, 0.5, 5);
  d.config_int("budget_ms", 15000, "conclude (and stop the analysis) this long after the percept at the latest")
      .config_int("budget_tokens", 768, "conclude once intuition + exploration + analysis produced this many tokens")
      .config_number("conclude_confidence", 0.9, "conclude early once the analysis is measured this confident")
      .config_int("min_analysis_tokens", 24, "analysis tokens needed before conclude_confidence may apply")
      .config_int("insight_grace_ms", 100, "after the analysis closes, wait this long for an insight")
      .config_int("max_memories", 5, "recalled items put into the answer prompt");
  return d;
}

}  // namespace

LAL_PLUGIN(FrontalLobe, describe)
