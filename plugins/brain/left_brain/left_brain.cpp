// left_brain — deliberate thinking: exploration with recalled memories, then step-by-step analysis, streamed as it
// goes (stage exploration, then analysis), stoppable by the frontal lobe through the turn's "analysis" scope.
//
// Why a worker thread: after a percept the module must wait (with a deadline) for the hippocampus's recollection of
// the same turn, and that message arrives through this module's own strand — a handler that blocked waiting for it
// would never receive it. So handlers only record percepts, recollections and the emotion, and one worker thread
// does the waiting and the generating, turn after turn in arrival order.
#include <map>

#include "lal/plugin.hpp"
#include "lal/plugins/prompts.hpp"
#include "lal/plugins/stage_stream.hpp"
#include "lal/plugins/turn_worker.hpp"

namespace {

namespace lp = lal::plugins;
using Clock = std::chrono::steady_clock;

struct Job {
  lal::MessageHeader header;
  std::string text;
  Clock::time_point recollection_deadline;
};

class LeftBrain final : public lal::Module {
 public:
  void start(lal::Context& ctx) override {
    ctx_ = &ctx;
    const auto& c = ctx.config();
    settings_ = lp::read_model_config(c);
    model_ = lp::require_model(ctx, settings_.model);
    recollection_deadline_ = std::chrono::milliseconds(c.get<std::int64_t>("recollection_deadline_ms"));
    exploration_max_tokens_ = c.get<int>("exploration_max_tokens");
    thinking_ = c.get<bool>("thinking");
    direct_min_confidence_ = c.get<double>("direct_min_confidence");
    max_memories_ = c.get<std::size_t>("max_memories");

    ctx.on<lal::EmotionState>("emotion", [this](const lal::Delivery<lal::EmotionState>& m) {
      std::lock_guard<std::mutex> lk(worker_.mutex());
      emotion_ = m.body;
    });
    wait_for_recollection_ =
        ctx.on<lal::Recollection>("recollection", [this](const lal::Delivery<lal::Recollection>& m) {
          std::lock_guard<std::mutex> lk(worker_.mutex());
          recollections_[m.header.turn] = m.body;
          // A recollection for a turn we never saw a percept for (or already gave up on) must not pile up.
          while (recollections_.size() > 64) recollections_.erase(recollections_.begin());
          worker_.cv().notify_all();
        });
    ctx.on<lal::Percept>("percept", [this](const lal::Delivery<lal::Percept>& m) {
      std::lock_guard<std::mutex> lk(worker_.mutex());
      worker_.push_locked(Job{m.header, m->text, Clock::now() + recollection_deadline_});
    });
    worker_.start([this](Job& job) { think(job); },
                  [this](const Job& job, const std::exception& e) {
                    // The host cannot see this (no strand runs it): log it; the streams closed themselves.
                    ctx_->log(lal::LogLevel::error, "turn " + std::to_string(job.header.turn) + ": " + e.what());
                  },
                  [this] { return ctx_->busy_guard(); });
  }

  void stop() override { worker_.stop(); }

 private:
  void think(const Job& job) {
    const lal::TurnId turn = job.header.turn;
    const auto scope = ctx_->cancellation(turn, "analysis");
    std::shared_ptr<const lal::Recollection> recollection;
    std::shared_ptr<const lal::EmotionState> emotion;
    {
      std::unique_lock<std::mutex> lk(worker_.mutex());
      if (wait_for_recollection_)
        worker_.cv().wait_until(lk, job.recollection_deadline,
                                [&] { return worker_.stopping() || scope.cancelled() || recollections_.count(turn); });
      if (auto it = recollections_.find(turn); it != recollections_.end()) {
        recollection = it->second;
        recollections_.erase(it);
      }
      emotion = emotion_;
      if (worker_.stopping()) return;
    }
    const bool ja = settings_.language == lp::Language::ja;
    const std::string memories = recollection ? lp::format_memories(recollection->items, max_memories_) : "";

    lp::StageStream exploration(*ctx_, "thought", lal::Stage::exploration, lal::ChunkKind::thought, job.header);
    lp::PromptSections explore_prompt(settings_.language);
    explore_prompt.add("質問", "Question", job.text).add("思い出したこと", "What I remember", memories);
    lp::generate_into(*model_,
                      lp::make_request(settings_, lp::Role::exploration, explore_prompt.str(), turn, emotion.get(),
                                       exploration_max_tokens_),
                      exploration, scope);
    exploration.close(scope.cancelled() ? stopped_note(ja) : "");
    if (scope.cancelled()) return;

    lp::StageStream analysis(*ctx_, "thought", lal::Stage::analysis, lal::ChunkKind::thought, job.header);
    if (recollection && recollection->suggested_strategy == "direct" &&
        recollection->strategy_confidence >= direct_min_confidence_) {
      // Procedural memory knows this kind of request and that answering directly worked: no deep analysis. Say so,
      // unmeasured (no model spoke), so the frontal lobe concludes at once and the person sees why.
      analysis.close(ja ? "前にうまくいったやり方がわかっているので、深い分析は省きます。"
                        : "I know what worked for this before, so I'll skip the deep analysis.");
      return;
    }
    lp::PromptSections analyse_prompt(settings_.language);
    analyse_prompt.add("質問", "Question", job.text)
        .add("思い出したこと", "What I remember", memories)
        .add("探索", "Exploration", exploration.text());
    auto request = lp::make_request(settings_, lp::Role::analysis, analyse_prompt.str(), turn, emotion.get(),
                                    settings_.max_tokens);
    request.thinking = thinking_;
    lp::generate_into(*model_, request, analysis, scope);
    analysis.close(scope.cancelled() ? stopped_note(ja) : "");
  }

  static std::string stopped_note(bool ja) { return ja ? "（ここで考えるのをやめました）" : " (stopped here)"; }

  lal::Context* ctx_ = nullptr;
  lp::ModelSettings settings_;
  std::shared_ptr<lal::LanguageModel> model_;
  std::chrono::milliseconds recollection_deadline_{300};
  int exploration_max_tokens_ = 48;
  bool thinking_ = false;
  double direct_min_confidence_ = 0.6;
  std::size_t max_memories_ = 5;
  bool wait_for_recollection_ = false;

  // Guarded by worker_.mutex(): shared by the strand's handlers and the worker.
  std::map<lal::TurnId, std::shared_ptr<const lal::Recollection>> recollections_;
  std::shared_ptr<const lal::EmotionState> emotion_;
  lp::TurnWorker<Job> worker_;  // last: joined before the state above goes away
};

lal::PluginDescriptor describe() {
  lal::PluginDescriptor d{"left_brain", lal::ModuleKind::brain_region, "0.1.0",
                          "Exploration with recalled memories, then analysis; streamed, stoppable (scope analysis)"};
  d.input<lal::Percept>("percept", "what the user said")
      .optional_input<lal::Recollection>("recollection", "what the hippocampus recalled for the turn")
      .optional_input<lal::EmotionState>("emotion", "current emotion: modulates temperature and tone",
                                         lal::OverflowPolicy::keep_latest, 1)
      .output<lal::ThoughtChunk>("thought", "stage exploration, then analysis; one chunk per token");
  lp::declare_model_config(d, 256, 0.6, 0);
  d.config_int("recollection_deadline_ms", 300, "how long to wait for the turn's recollection before exploring")
      .config_int("exploration_max_tokens", 48, "most tokens of the exploration stage")
      .config_bool("thinking", false, "ask the model's chat template for a thinking block during analysis")
      .config_number("direct_min_confidence", 0.6,
                     "skip deep analysis when the recollection suggests strategy direct at least this surely")
      .config_int("max_memories", 5, "recalled items put into the prompt");
  return d;
}

}  // namespace

LAL_PLUGIN(LeftBrain, describe)
