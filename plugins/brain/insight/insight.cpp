// insight — the "aha" step, triggered only by a measured signal in the thought stream (never by chance). At most
// `max_per_turn` insights per turn; each is one stage=insight stage on `insight`.
//
// Signals (thresholds are config keys; their defaults are InsightOptions' initialisers below):
//   entropy_drop  The analysis was uncertain and suddenly became sure: over the analysis's per-token entropies
//                 (each chunk carries its token's entropy, lal.ThoughtChunk/2), the mean of the previous
//                 `window_tokens` tokens is ≥ `entropy_before_min` nats and the mean of the latest
//                 `window_tokens` is ≤ `entropy_drop_ratio` × that. Checked on every analysis token.
//   disagreement  Intuition and analysis, both closed and both measured at ≥ `disagree_min_confidence`, share
//                 few matching keys: Jaccard overlap of their keys (lal/plugins/text_features.hpp) ≤
//                 `disagree_max_overlap`. Checked when the later of the two closes.
//   memory        A recalled memory (stage=recall chunks) shaped the analysis but not the intuition: ≥
//                 `memory_min_overlap` of the memory's keys appear in the analysis and ≤
//                 `memory_max_intuition_overlap` in the intuition. Checked when the analysis closes.
// Every signal is a deterministic function of the token statistics and texts, so the same model output (same seed)
// gives the same insight. The insight is phrased from the signal itself, or — with `phrase_with_model` — by the model
// (seeded like every other region).
#include <algorithm>
#include <cstdio>
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

struct InsightOptions {
  lp::ModelSettings model = lp::ModelSettings::with(/*max_tokens=*/40, /*temperature=*/0.7, /*priority=*/8);
  bool phrase_with_model = false;
  int window_tokens = 6;
  double entropy_before_min = 1.5;
  double entropy_drop_ratio = 0.35;
  double disagree_min_confidence = 0.6;
  double disagree_max_overlap = 0.1;
  double memory_min_overlap = 0.5;
  double memory_max_intuition_overlap = 0.2;
  int max_per_turn = 1;

  static void declare(lal::Options<InsightOptions>& o) {
    o.nested(&InsightOptions::model);
    o.field("phrase_with_model", &InsightOptions::phrase_with_model,
            "let the model phrase the insight (else it is phrased from the signal)");
    o.field("window_tokens", &InsightOptions::window_tokens, "entropy_drop: tokens in each of the two windows compared")
        .min(1);
    o.field("entropy_before_min", &InsightOptions::entropy_before_min,
            "entropy_drop: mean entropy (nats) before the drop, at least")
        .min(0);
    o.field("entropy_drop_ratio", &InsightOptions::entropy_drop_ratio, "entropy_drop: mean after ≤ ratio × mean before")
        .range(0, 1);
    o.field("disagree_min_confidence", &InsightOptions::disagree_min_confidence,
            "disagreement: both intuition and analysis at least this sure")
        .range(0, 1);
    o.field("disagree_max_overlap", &InsightOptions::disagree_max_overlap,
            "disagreement: Jaccard overlap of their keys at most this")
        .range(0, 1);
    o.field("memory_min_overlap", &InsightOptions::memory_min_overlap,
            "memory: share of the memory's keys found in the analysis")
        .range(0, 1);
    o.field("memory_max_intuition_overlap", &InsightOptions::memory_max_intuition_overlap,
            "memory: share of its keys in the intuition, at most")
        .range(0, 1);
    o.field("max_per_turn", &InsightOptions::max_per_turn, "insights per turn, at most").min(0);
  }
};

class Insight final : public lal::Module {
 public:
  void start(lal::Context& ctx) override {
    ctx_ = &ctx;
    o_ = ctx.options<InsightOptions>();
    if (o_.phrase_with_model) model_ = lp::require_model(ctx, o_.model.model);
    ctx.on<lal::ThoughtChunk>("thought", [this](const lal::Delivery<lal::ThoughtChunk>& m) { observe(m); });
  }

 private:
  void observe(const lal::Delivery<lal::ThoughtChunk>& m) {
    const lal::ThoughtChunk& c = *m;
    if (c.stage != lal::Stage::intuition && c.stage != lal::Stage::analysis && c.stage != lal::Stage::recall) return;
    TurnTrace& t = *ctx_->turn_state<TurnTrace>(m.header.turn);  // freed by the runtime when the turn ends
    const bool ja = o_.model.language == lp::Language::ja;

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
      }
      return;
    }
    // analysis
    t.analysis += c.text;
    if (lp::measured(c)) t.analysis_confidence = c.confidence;
    if (c.has_token) {  // one chunk per token; the closing chunk carries none
      t.entropies.push_back(c.entropy);
      t.pieces.push_back(c.text);
      check_entropy_drop(t, m.header, ja);
    }
    if (c.last) {
      t.analysis_closed = true;
      check_disagreement(t, m.header, ja);
      check_memory(t, m.header, ja);
    }
  }

  void check_entropy_drop(TurnTrace& t, const lal::MessageHeader& cause, bool ja) {
    const std::size_t window = static_cast<std::size_t>(o_.window_tokens);
    const std::size_t n = t.entropies.size();
    if (n < 2 * window) return;
    const double before = mean(t.entropies, n - 2 * window, n - window);
    const double after = mean(t.entropies, n - window, n);
    if (before < o_.entropy_before_min || after > o_.entropy_drop_ratio * before) return;
    std::string clear;
    for (std::size_t i = n - window; i < n; ++i) clear += t.pieces[i];
    char nums[64];
    std::snprintf(nums, sizeof nums, "%.2f→%.2f", before, after);
    fire(t, cause,
         ja ? "あ、そうか。「" + excerpt(clear, 40) + "」— ここで迷いが晴れました（エントロピー " + nums + " nats）。"
            : "Oh, I see: \"" + excerpt(clear, 60) + "\" — the hesitation cleared here (entropy " + nums + " nats).");
  }

  void check_disagreement(TurnTrace& t, const lal::MessageHeader& cause, bool ja) {
    if (!t.intuition_closed || !t.analysis_closed) return;
    if (t.intuition_confidence < o_.disagree_min_confidence || t.analysis_confidence < o_.disagree_min_confidence)
      return;
    const double overlap = jaccard(lp::match_keys(t.intuition), lp::match_keys(t.analysis));
    if (overlap > o_.disagree_max_overlap) return;
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
      if (lp::key_overlap(analysis_keys, keys) < o_.memory_min_overlap) continue;
      if (lp::key_overlap(intuition_keys, keys) > o_.memory_max_intuition_overlap) continue;
      fire(t, cause,
           ja ? "思い出した「" + excerpt(memory, 30) + "」で考えが変わりました。直感にはなかった視点です。"
              : "Remembering \"" + excerpt(memory, 50) + "\" changed my mind: my intuition did not have it.");
      return;
    }
  }

  void fire(TurnTrace& t, const lal::MessageHeader& cause, const std::string& realisation) {
    if (t.fired >= o_.max_per_turn) return;
    ++t.fired;
    auto out = std::make_shared<lp::StageStream>(*ctx_, "insight", lal::Stage::insight, lal::ChunkKind::thought, cause);
    if (!model_) {
      out->close(realisation);
      return;
    }
    lp::PromptSections p(o_.model.language);
    p.add("気づきのきっかけ", "What triggered it", realisation).add("分析", "Analysis", t.analysis);
    lp::stream_into(*model_,
                    lp::make_request(o_.model, lp::Role::insight, p.str(), cause.turn, nullptr, o_.model.max_tokens),
                    out, ctx_->cancellation(cause.turn, "insight"), [out](const lal::GenerationOutcome& o) {
                      out->close();
                      if (!o) throw std::runtime_error(o.error);
                    });
  }

  lal::Context* ctx_ = nullptr;
  InsightOptions o_;
  std::shared_ptr<lal::LanguageModel> model_;  // null: phrase insights from the signal alone
};

lal::PluginDescriptor describe() {
  lal::PluginDescriptor d{"insight", lal::ModuleKind::brain_region, "0.2.0",
                          "The aha step: fires on a measured signal (entropy drop, disagreement, a decisive memory)"};
  d.input<lal::ThoughtChunk>("thought", "intuition, analysis and recall chunks", lal::OverflowPolicy::block, 8192)
      .output<lal::ThoughtChunk>("insight", "stage insight, when a signal fires")
      .options<InsightOptions>();
  return d;
}

}  // namespace

LAL_PLUGIN(Insight, describe)
