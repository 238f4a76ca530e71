// insight — the "aha" step, triggered only by a measured signal in the thought stream (never by chance). At most
// `max_per_turn` insights per turn; each is one stage=insight stage on `insight`.
//
// Signals (thresholds are config keys, defaults in brackets):
//   entropy_drop  The analysis was uncertain and suddenly became sure: over the analysis's per-token entropies
//                 (recovered from the running means, see lal/plugins/uncertainty.hpp), the mean of the previous
//                 `window_tokens` [6] tokens is ≥ `entropy_before_min` [1.5 nats] and the mean of the latest
//                 `window_tokens` is ≤ `entropy_drop_ratio` [0.35] × that. Checked on every analysis token.
//   disagreement  Intuition and analysis, both closed and both measured at ≥ `disagree_min_confidence` [0.6], share
//                 few matching keys: Jaccard overlap of their keys (lal/plugins/text_features.hpp) ≤
//                 `disagree_max_overlap` [0.1]. Checked when the later of the two closes.
//   memory        A recalled memory (stage=recall chunks) shaped the analysis but not the intuition: ≥
//                 `memory_min_overlap` [0.5] of the memory's keys appear in the analysis and ≤
//                 `memory_max_intuition_overlap` [0.2] in the intuition. Checked when the analysis closes.
// Every signal is a deterministic function of the token statistics and texts, so the same model output (same seed)
// gives the same insight. The insight is phrased from the signal itself, or — with `phrase_with_model` — by the model
// (seeded like every other region).
#include <algorithm>
#include <cstdio>
#include <map>
#include <numeric>

#include "lal/plugin.hpp"
#include "lal/plugins/prompts.hpp"
#include "lal/plugins/stage_stream.hpp"
#include "lal/plugins/text_features.hpp"

namespace {

namespace lp = lal::plugins;

struct TurnTrace {
  std::string intuition;
  float intuition_confidence = -1.0f;
  bool intuition_closed = false;
  std::string analysis;
  lp::RunningMeanDecoder entropy_decoder;
  std::vector<double> entropies;    // one per analysis token
  std::vector<std::string> pieces;  // the text of each analysis token
  float analysis_confidence = -1.0f;
  bool analysis_closed = false;
  std::vector<std::string> memories;
  std::string memory_in_progress;
  int fired = 0;
};

/// |A ∩ B| / |A ∪ B| of two sorted key sets (0 when both are empty).
double jaccard(const std::vector<std::string>& a, const std::vector<std::string>& b) {
  std::vector<std::string> common;
  std::set_intersection(a.begin(), a.end(), b.begin(), b.end(), std::back_inserter(common));
  const std::size_t uni = a.size() + b.size() - common.size();
  return uni ? static_cast<double>(common.size()) / static_cast<double>(uni) : 0.0;
}

/// At most `n` code points of `s`, with an ellipsis when cut; leading/trailing spaces dropped.
std::string excerpt(const std::string& s, std::size_t n) {
  auto cps = lp::utf8_decode(s);
  while (!cps.empty() && (cps.front() == ' ' || cps.front() == '\n')) cps.erase(cps.begin());
  while (!cps.empty() && (cps.back() == ' ' || cps.back() == '\n')) cps.pop_back();
  std::string out;
  for (std::size_t i = 0; i < cps.size() && i < n; ++i) out += lp::utf8_encode(cps[i]);
  if (cps.size() > n) out += "…";
  return out;
}

double mean(const std::vector<double>& v, std::size_t from, std::size_t to) {
  return std::accumulate(v.begin() + static_cast<std::ptrdiff_t>(from), v.begin() + static_cast<std::ptrdiff_t>(to),
                         0.0) /
         static_cast<double>(to - from);
}

class Insight final : public lal::Module {
 public:
  void start(lal::Context& ctx) override {
    ctx_ = &ctx;
    const auto& c = ctx.config();
    settings_ = lp::read_model_config(c);
    if (c.get<bool>("phrase_with_model")) model_ = lp::require_model(ctx, settings_.model);
    window_ = c.get<std::size_t>("window_tokens");
    if (window_ < 1) throw lal::ConfigError("window_tokens must be at least 1");
    entropy_before_min_ = c.get<double>("entropy_before_min");
    entropy_drop_ratio_ = c.get<double>("entropy_drop_ratio");
    disagree_min_confidence_ = c.get<double>("disagree_min_confidence");
    disagree_max_overlap_ = c.get<double>("disagree_max_overlap");
    memory_min_overlap_ = c.get<double>("memory_min_overlap");
    memory_max_intuition_overlap_ = c.get<double>("memory_max_intuition_overlap");
    max_per_turn_ = c.get<int>("max_per_turn");
    ctx.on<lal::ThoughtChunk>("thought", [this](const lal::Delivery<lal::ThoughtChunk>& m) { observe(m); });
  }

 private:
  void observe(const lal::Delivery<lal::ThoughtChunk>& m) {
    const lal::ThoughtChunk& c = *m;
    if (c.stage != lal::Stage::intuition && c.stage != lal::Stage::analysis && c.stage != lal::Stage::recall) return;
    auto it = traces_.find(m.header.turn);
    if (it == traces_.end()) {
      if (traces_.size() >= 64) traces_.erase(traces_.begin());  // the oldest turn, whose analysis never closed
      it = traces_.emplace(m.header.turn, TurnTrace{}).first;
    }
    TurnTrace& t = it->second;
    const bool ja = settings_.language == lp::Language::ja;

    if (c.stage == lal::Stage::recall) {
      t.memory_in_progress += c.text;
      if (c.last) {
        t.memories.push_back(t.memory_in_progress);
        t.memory_in_progress.clear();
      }
      return;
    }
    if (c.stage == lal::Stage::intuition) {
      t.intuition += c.text;
      if (lp::measured(c)) t.intuition_confidence = c.confidence;
      if (c.last) {
        t.intuition_closed = true;
        check_disagreement(t, m.header, ja);
        if (t.analysis_closed) traces_.erase(it);
      }
      return;
    }
    // analysis
    t.analysis += c.text;
    if (lp::measured(c)) {
      t.analysis_confidence = c.confidence;
      if (!c.last) {  // one chunk per token; the closing chunk repeats the final means
        t.entropies.push_back(t.entropy_decoder.next(c.mean_entropy));
        t.pieces.push_back(c.text);
        check_entropy_drop(t, m.header, ja);
      }
    }
    if (c.last) {
      t.analysis_closed = true;
      check_disagreement(t, m.header, ja);
      check_memory(t, m.header, ja);
    }
    // Done with the turn once both stages closed (in either order: the disagreement check needs both).
    if (t.analysis_closed && t.intuition_closed) traces_.erase(it);
  }

  void check_entropy_drop(TurnTrace& t, const lal::MessageHeader& cause, bool ja) {
    const std::size_t n = t.entropies.size();
    if (n < 2 * window_) return;
    const double before = mean(t.entropies, n - 2 * window_, n - window_);
    const double after = mean(t.entropies, n - window_, n);
    if (before < entropy_before_min_ || after > entropy_drop_ratio_ * before) return;
    std::string clear;
    for (std::size_t i = n - window_; i < n; ++i) clear += t.pieces[i];
    char nums[64];
    std::snprintf(nums, sizeof nums, "%.2f→%.2f", before, after);
    fire(t, cause,
         ja ? "あ、そうか。「" + excerpt(clear, 40) + "」— ここで迷いが晴れました（エントロピー " + nums + " nats）。"
            : "Oh, I see: \"" + excerpt(clear, 60) + "\" — the hesitation cleared here (entropy " + nums + " nats).");
  }

  void check_disagreement(TurnTrace& t, const lal::MessageHeader& cause, bool ja) {
    if (!t.intuition_closed || !t.analysis_closed) return;
    if (t.intuition_confidence < disagree_min_confidence_ || t.analysis_confidence < disagree_min_confidence_) return;
    const double overlap = jaccard(lp::match_keys(t.intuition), lp::match_keys(t.analysis));
    if (overlap > disagree_max_overlap_) return;
    fire(t, cause,
         ja ? "直感（「" + excerpt(t.intuition, 20) + "」）と分析（「" + excerpt(t.analysis, 20) +
                  "」）が食い違っています。どちらも自信があるので、前提を見直したほうがよさそうです。"
            : "My intuition (\"" + excerpt(t.intuition, 40) + "\") and my analysis (\"" + excerpt(t.analysis, 40) +
                  "\") disagree, and both feel sure: I should question an assumption.");
  }

  void check_memory(TurnTrace& t, const lal::MessageHeader& cause, bool ja) {
    const auto analysis_keys = lp::match_keys(t.analysis);
    const auto intuition_keys = lp::match_keys(t.intuition);
    for (const auto& memory : t.memories) {
      const auto keys = lp::match_keys(memory);
      if (keys.empty()) continue;
      if (lp::key_overlap(analysis_keys, keys) < memory_min_overlap_) continue;
      if (lp::key_overlap(intuition_keys, keys) > memory_max_intuition_overlap_) continue;
      fire(t, cause,
           ja ? "思い出した「" + excerpt(memory, 30) + "」で考えが変わりました。直感にはなかった視点です。"
              : "Remembering \"" + excerpt(memory, 50) + "\" changed my mind: my intuition did not have it.");
      return;
    }
  }

  void fire(TurnTrace& t, const lal::MessageHeader& cause, const std::string& realisation) {
    if (t.fired >= max_per_turn_) return;
    ++t.fired;
    lp::StageStream out(*ctx_, "insight", lal::Stage::insight, lal::ChunkKind::thought, cause);
    if (!model_) {
      out.close(realisation);
      return;
    }
    lp::PromptSections p(settings_.language);
    p.add("気づきのきっかけ", "What triggered it", realisation).add("分析", "Analysis", t.analysis);
    lp::generate_into(
        *model_, lp::make_request(settings_, lp::Role::insight, p.str(), cause.turn, nullptr, settings_.max_tokens),
        out, ctx_->cancellation(cause.turn, "insight"));
    out.close();
  }

  lal::Context* ctx_ = nullptr;
  lp::ModelSettings settings_;
  std::shared_ptr<lal::LanguageModel> model_;  // null: phrase insights from the signal alone
  std::size_t window_ = 6;
  double entropy_before_min_ = 1.5, entropy_drop_ratio_ = 0.35;
  double disagree_min_confidence_ = 0.6, disagree_max_overlap_ = 0.1;
  double memory_min_overlap_ = 0.5, memory_max_intuition_overlap_ = 0.2;
  int max_per_turn_ = 1;
  std::map<lal::TurnId, TurnTrace> traces_;  // touched only on this module's strand
};

lal::PluginDescriptor describe() {
  lal::PluginDescriptor d{"insight", lal::ModuleKind::brain_region, "0.1.0",
                          "The aha step: fires on a measured signal (entropy drop, disagreement, a decisive memory)"};
  d.input<lal::ThoughtChunk>("thought", "intuition, analysis and recall chunks", lal::OverflowPolicy::block, 8192)
      .output<lal::ThoughtChunk>("insight", "stage insight, when a signal fires");
  lp::declare_model_config(d, 40, 0.7, 8);
  d.config_bool("phrase_with_model", false, "let the model phrase the insight (else it is phrased from the signal)")
      .config_int("window_tokens", 6, "entropy_drop: tokens in each of the two windows compared")
      .config_number("entropy_before_min", 1.5, "entropy_drop: mean entropy (nats) before the drop, at least")
      .config_number("entropy_drop_ratio", 0.35, "entropy_drop: mean after ≤ ratio × mean before")
      .config_number("disagree_min_confidence", 0.6, "disagreement: both intuition and analysis at least this sure")
      .config_number("disagree_max_overlap", 0.1, "disagreement: Jaccard overlap of their keys at most this")
      .config_number("memory_min_overlap", 0.5, "memory: share of the memory's keys found in the analysis")
      .config_number("memory_max_intuition_overlap", 0.2, "memory: share of its keys in the intuition, at most")
      .config_int("max_per_turn", 1, "insights per turn, at most");
  return d;
}

}  // namespace

LAL_PLUGIN(Insight, describe)
