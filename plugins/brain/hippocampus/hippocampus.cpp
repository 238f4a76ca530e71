// hippocampus — recalls from every memory tier for each percept, and turns each finished turn into an episode.
//
// Recall: the percept's text is the cue for every wired tier (working, short_term, long_term, procedural), asked at
// once with one deadline. When all have answered (or failed, or timed out) the declarative items are merged and
// ranked; procedural memory contributes the strategy suggestion instead of items. Tiers score on different scales
// (working: overlap + activation; short_term: relevance × strength; long_term: ACT-R activation + weighted
// relevance), so the merge uses ranks, not raw scores — reciprocal-rank fusion (Cormack et al., 2009):
//
//     fused(m) = Σ_tiers  weight_tier / (rank_constant + rank_tier(m))        rank from 1, per tier
//
// Items with the same text from several tiers are one memory whose fused scores add up: a memory that both
// short-term and long-term memory return outranks one that only one of them returns.
//
// Encoding: on `done` an Episode is published with importance = max(disclosure + arousal_importance ·
// max(0, arousal), remember_importance if the user asked to be remembered), clamped to 0..1, where disclosure is
// lal::memory::score_importance(user_text, base_importance): self-disclosure features (names, preferences,
// relations, plans, dates, places, feelings, corrections) in Japanese and English, see
// plugins/memory/common/include/lal/memory/importance.hpp.
#include <algorithm>
#include <map>

#include "lal/memory/importance.hpp"
#include "lal/plugin.hpp"

namespace {

const char* const kTiers[] = {"working", "short_term", "long_term", "procedural"};

std::string trimmed(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return {};
  return s.substr(b, s.find_last_not_of(" \t\r\n") - b + 1);
}

struct HippocampusOptions {
  std::int64_t deadline_ms = 150;
  int limit = 10;
  int max_items = 6;
  double rank_constant = 1.0;
  double weight_working = 1.0, weight_short_term = 1.0, weight_long_term = 1.0;
  double base_importance = 0.3, arousal_importance = 0.3, remember_importance = 0.9;
  std::vector<std::string> remember_markers = {"覚えておいて", "覚えといて",      "覚えてね",      "覚えてください",
                                               "忘れないで",   "please remember", "remember that", "don't forget"};

  static void declare(lal::Options<HippocampusOptions>& o) {
    o.field("deadline_ms", &HippocampusOptions::deadline_ms, "how long to wait for each tier").min(1);
    o.field("limit", &HippocampusOptions::limit, "memories asked from each tier").min(1);
    o.field("max_items", &HippocampusOptions::max_items, "memories in the recollection (and recall thoughts)").min(0);
    o.field("rank_constant", &HippocampusOptions::rank_constant, "k in the rank fusion weight / (k + rank)").min(0);
    o.field("weight_working", &HippocampusOptions::weight_working, "weight of working memory in the fusion").min(0);
    o.field("weight_short_term", &HippocampusOptions::weight_short_term, "weight of short-term memory in the fusion")
        .min(0);
    o.field("weight_long_term", &HippocampusOptions::weight_long_term, "weight of long-term memory in the fusion")
        .min(0);
    o.field("base_importance", &HippocampusOptions::base_importance,
            "importance of an utterance that discloses nothing (small talk)")
        .range(0, 1);
    o.field("arousal_importance", &HippocampusOptions::arousal_importance,
            "added importance per unit of positive arousal")
        .range(0, 1);
    o.field("remember_importance", &HippocampusOptions::remember_importance,
            "importance when the user asks to be remembered")
        .range(0, 1);
    o.field("remember_markers", &HippocampusOptions::remember_markers,
            "requests to be remembered (matched case-insensitively for ASCII); 「覚えていますか」 asks instead");
  }
};

/// One percept's recall: the tiers' answers as they arrive. Shared by the reply callbacks, freed with the last.
struct Gather {
  lal::MessageHeader cause;
  std::string cue;
  int outstanding = 0;
  std::map<std::string, std::vector<lal::MemoryItem>> by_tier;
};

class Hippocampus final : public lal::Module {
 public:
  void start(lal::Context& ctx) override {
    ctx_ = &ctx;
    options_ = ctx.options<HippocampusOptions>();
    weights_ = {{"working", options_.weight_working},
                {"short_term", options_.weight_short_term},
                {"long_term", options_.weight_long_term}};
    ctx.on<lal::Percept>("percept", [this](const lal::Delivery<lal::Percept>& m) { recall(m); });
    ctx.on<lal::TurnDone>("done", [this](const lal::Delivery<lal::TurnDone>& m) { encode(m); });
    ctx.on<lal::EmotionState>("emotion",
                              [this](const lal::Delivery<lal::EmotionState>& m) { emotion_[m.header.user] = m.body; });
  }

 private:
  void recall(const lal::Delivery<lal::Percept>& m) {
    auto gather = std::make_shared<Gather>();
    gather->cause = m.header;
    gather->cue = m->text;
    gather->outstanding = static_cast<int>(std::size(kTiers));
    const std::chrono::milliseconds deadline(options_.deadline_ms);
    lal::RecallRequest req;
    req.cue = m->text;
    req.limit = options_.limit;
    for (const char* tier : kTiers) {
      ctx_->request<lal::RecallRequest, lal::RecallReply>(
          tier, req, deadline,
          [this, gather, deadline, tier = std::string(tier)](lal::Reply<lal::RecallReply> reply) {
            if (reply) {
              gather->by_tier[tier] = reply->items;
            } else if (reply.timed_out) {
              ctx_->log(lal::LogLevel::warn, "tier '" + tier + "' did not answer within " +
                                                 std::to_string(deadline.count()) + " ms; recalling without it");
            } else {
              ctx_->log(lal::LogLevel::debug, "tier '" + tier + "': " + reply.error);  // unwired tiers land here
            }
            if (--gather->outstanding == 0) finish(*gather);
          },
          &m.header);
    }
  }

  void finish(const Gather& g) {
    struct Merged {
      lal::MemoryItem item;
      double fused = 0.0;
      std::size_t order = 0;
    };
    std::vector<Merged> merged;
    for (const char* tier : {"working", "short_term", "long_term"}) {
      auto it = g.by_tier.find(tier);
      if (it == g.by_tier.end()) continue;
      const double w = weights_.at(tier);
      for (std::size_t r = 0; r < it->second.size(); ++r) {
        const auto& item = it->second[r];
        // What was just said is in working memory already; echoing it back is not remembering.
        if (trimmed(item.text) == trimmed(g.cue)) continue;
        const double contribution = w / (options_.rank_constant + static_cast<double>(r + 1));
        auto same =
            std::find_if(merged.begin(), merged.end(), [&](const Merged& x) { return x.item.text == item.text; });
        if (same != merged.end()) {
          same->fused += contribution;
          continue;
        }
        merged.push_back({item, contribution, merged.size()});
      }
    }
    std::sort(merged.begin(), merged.end(), [](const Merged& a, const Merged& b) {
      return a.fused != b.fused ? a.fused > b.fused : a.order < b.order;
    });
    if (merged.size() > static_cast<std::size_t>(options_.max_items))
      merged.resize(static_cast<std::size_t>(options_.max_items));

    lal::Recollection rec;
    rec.cue = g.cue;
    for (auto& m : merged) {
      m.item.score = m.fused;
      rec.items.push_back(m.item);
    }
    auto proc = g.by_tier.find("procedural");
    if (proc != g.by_tier.end() && !proc->second.empty()) {
      const auto best = std::max_element(proc->second.begin(), proc->second.end(),
                                         [](const auto& a, const auto& b) { return a.score < b.score; });
      try {
        rec.suggested_strategy =
            lal::parse_enum<lal::Strategy>(best->text, "the procedural tier's recall item " + best->id);
        rec.strategy_confidence = std::clamp(best->score, 0.0, 1.0);
      } catch (const std::invalid_argument& e) {  // suggest nothing rather than something unknown
        ctx_->log(lal::LogLevel::error, e.what());
      }
    }
    ctx_->publish("recollection", rec, &g.cause);
    for (std::size_t i = 0; i < rec.items.size(); ++i) {
      lal::ThoughtChunk t;
      t.stage = lal::Stage::recall;
      t.kind = lal::ChunkKind::memory;
      // One line for all: memories after the first are set off by " ／ " so that outputs that join a stage's
      // chunks (think_aloud) show where one memory ends and the next begins.
      t.text = (i == 0 ? std::string() : std::string(" ／ ")) + rec.items[i].text;
      t.last = i + 1 == rec.items.size();
      t.origin = ctx_->module_id();
      ctx_->publish("thought", std::move(t), &g.cause);
    }
  }

  double importance(const std::string& user, const std::string& user_text) {
    const auto disclosure = lal::memory::score_importance(user_text, options_.base_importance);
    double imp = disclosure.score;
    if (!disclosure.reasons.empty()) {
      std::string why;
      for (const auto& r : disclosure.reasons) why += (why.empty() ? "" : ", ") + r;
      ctx_->log(lal::LogLevel::debug, "importance " + std::to_string(imp) + " (" + why + ")");
    }
    auto e = emotion_.find(user);
    if (e != emotion_.end()) imp += options_.arousal_importance * std::max(0.0, e->second->arousal);
    std::string lower = user_text;
    for (char& ch : lower)
      if (ch >= 'A' && ch <= 'Z') ch = static_cast<char>(ch - 'A' + 'a');
    for (const auto& marker : options_.remember_markers)
      if (!marker.empty() && lower.find(marker) != std::string::npos) imp = std::max(imp, options_.remember_importance);
    return std::clamp(imp, 0.0, 1.0);
  }

  void encode(const lal::Delivery<lal::TurnDone>& m) {
    if (m->cancelled || m->user_text.empty()) return;  // a cancelled turn has no answer worth remembering
    lal::Episode ep;
    ep.user_text = m->user_text;
    ep.answer = m->answer;
    ep.strategy = m->strategy;
    ep.confidence = m->confidence;
    ep.importance = importance(m.header.user, m->user_text);
    auto e = emotion_.find(m.header.user);
    if (e != emotion_.end()) ep.emotion = e->second->label;
    ctx_->publish("episode", std::move(ep), &m.header);
  }

  lal::Context* ctx_ = nullptr;
  HippocampusOptions options_;
  std::map<std::string, double> weights_;
  std::map<std::string, std::shared_ptr<const lal::EmotionState>> emotion_;  // latest per user
};

lal::PluginDescriptor describe() {
  lal::PluginDescriptor d{"hippocampus", lal::ModuleKind::brain_region, "0.2.0",
                          "Hippocampus: recalls from every memory tier per percept, stores each turn as an episode"};
  d.input<lal::Percept>("percept", "the cue for recall")
      .input<lal::TurnDone>("done", "finished turns, stored as episodes (wire with feedback: true)")
      .optional_input<lal::EmotionState>("emotion", "the emotional state, for the importance of episodes",
                                         lal::OverflowPolicy::keep_latest, 1)
      .output<lal::Recollection>("recollection", "one per percept: merged, ranked memories and a strategy suggestion")
      .output<lal::ThoughtChunk>("thought", "one stage=recall kind=memory chunk per recalled memory")
      .output<lal::Episode>("episode", "one per finished turn, for short_term and procedural")
      .requests<lal::RecallRequest, lal::RecallReply>("working", "working memory", true)
      .requests<lal::RecallRequest, lal::RecallReply>("short_term", "short-term memory", true)
      .requests<lal::RecallRequest, lal::RecallReply>("long_term", "long-term memory", true)
      .requests<lal::RecallRequest, lal::RecallReply>("procedural", "procedural memory (strategy suggestion)", true)
      .options<HippocampusOptions>();
  return d;
}

}  // namespace

LAL_PLUGIN(Hippocampus, describe)
