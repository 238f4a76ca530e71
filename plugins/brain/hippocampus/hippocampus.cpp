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
    const auto& c = ctx.config();
    deadline_ = std::chrono::milliseconds(c.get<std::int64_t>("deadline_ms"));
    limit_ = static_cast<int>(c.get<std::int64_t>("limit"));
    max_items_ = static_cast<std::size_t>(std::max<std::int64_t>(0, c.get<std::int64_t>("max_items")));
    rank_constant_ = c.get<double>("rank_constant");
    weights_["working"] = c.get<double>("weight_working");
    weights_["short_term"] = c.get<double>("weight_short_term");
    weights_["long_term"] = c.get<double>("weight_long_term");
    base_importance_ = c.get<double>("base_importance");
    arousal_importance_ = c.get<double>("arousal_importance");
    remember_importance_ = c.get<double>("remember_importance");
    remember_markers_ = c.get<std::vector<std::string>>("remember_markers");
    if (deadline_.count() <= 0) throw lal::ConfigError("deadline_ms must be positive");
    if (rank_constant_ < 0) throw lal::ConfigError("rank_constant must not be negative");
    ctx.on<lal::Percept>("percept", [this](const lal::Delivery<lal::Percept>& m) { recall(m); });
    ctx.on<lal::TurnDone>("done", [this](const lal::Delivery<lal::TurnDone>& m) { encode(m); });
    ctx.on<lal::EmotionState>("emotion",
                              [this](const lal::Delivery<lal::EmotionState>& m) { emotion_[m.header.user] = m.body; });
  }

 private:
  void recall(const lal::Delivery<lal::Percept>& m) {
    const std::uint64_t key = ++next_gather_;
    Gather& g = pending_[key];
    g.cause = m.header;
    g.cue = m->text;
    g.outstanding = static_cast<int>(std::size(kTiers));
    lal::RecallRequest req;
    req.cue = m->text;
    req.limit = limit_;
    for (const char* tier : kTiers) {
      ctx_->request<lal::RecallRequest, lal::RecallReply>(
          tier, req, deadline_,
          [this, key, tier = std::string(tier)](lal::Reply<lal::RecallReply> reply) {
            auto it = pending_.find(key);
            if (it == pending_.end()) return;
            if (reply) {
              it->second.by_tier[tier] = reply->items;
            } else if (reply.timed_out) {
              ctx_->log(lal::LogLevel::warn, "tier '" + tier + "' did not answer within " +
                                                 std::to_string(deadline_.count()) + " ms; recalling without it");
            } else {
              ctx_->log(lal::LogLevel::debug, "tier '" + tier + "': " + reply.error);  // unwired tiers land here
            }
            if (--it->second.outstanding == 0) {
              finish(it->second);
              pending_.erase(it);
            }
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
        const double contribution = w / (rank_constant_ + static_cast<double>(r + 1));
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
    if (merged.size() > max_items_) merged.resize(max_items_);

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
      rec.suggested_strategy = best->text;
      rec.strategy_confidence = std::clamp(best->score, 0.0, 1.0);
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
    const auto disclosure = lal::memory::score_importance(user_text, base_importance_);
    double imp = disclosure.score;
    if (!disclosure.reasons.empty()) {
      std::string why;
      for (const auto& r : disclosure.reasons) why += (why.empty() ? "" : ", ") + r;
      ctx_->log(lal::LogLevel::debug, "importance " + std::to_string(imp) + " (" + why + ")");
    }
    auto e = emotion_.find(user);
    if (e != emotion_.end()) imp += arousal_importance_ * std::max(0.0, e->second->arousal);
    std::string lower = user_text;
    for (char& ch : lower)
      if (ch >= 'A' && ch <= 'Z') ch = static_cast<char>(ch - 'A' + 'a');
    for (const auto& marker : remember_markers_)
      if (!marker.empty() && lower.find(marker) != std::string::npos) imp = std::max(imp, remember_importance_);
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
  std::chrono::milliseconds deadline_{150};
  int limit_ = 10;
  std::size_t max_items_ = 6;
  double rank_constant_ = 1.0, base_importance_ = 0.3, arousal_importance_ = 0.3, remember_importance_ = 0.9;
  std::map<std::string, double> weights_;
  std::vector<std::string> remember_markers_;
  std::uint64_t next_gather_ = 0;
  std::map<std::uint64_t, Gather> pending_;
  std::map<std::string, std::shared_ptr<const lal::EmotionState>> emotion_;  // latest per user
};

lal::PluginDescriptor describe() {
  lal::PluginDescriptor d{"hippocampus", lal::ModuleKind::brain_region, "0.1.0",
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
      .config_int("deadline_ms", 150, "how long to wait for each tier")
      .config_int("limit", 10, "memories asked from each tier")
      .config_int("max_items", 6, "memories in the recollection (and recall thoughts)")
      .config_number("rank_constant", 1.0, "k in the rank fusion weight / (k + rank)")
      .config_number("weight_working", 1.0, "weight of working memory in the fusion")
      .config_number("weight_short_term", 1.0, "weight of short-term memory in the fusion")
      .config_number("weight_long_term", 1.0, "weight of long-term memory in the fusion")
      .config_number("base_importance", 0.3, "importance of an utterance that discloses nothing (small talk)")
      .config_number("arousal_importance", 0.3, "added importance per unit of positive arousal")
      .config_number("remember_importance", 0.9, "importance when the user asks to be remembered")
      .config_key(
          "remember_markers", lal::ConfigType::list,
          "[\"覚えておいて\", \"覚えといて\", \"覚えてね\", \"覚えてください\", \"忘れないで\", \"please remember\", "
          "\"remember that\", \"don't forget\"]",
          "requests to be remembered (matched case-insensitively for ASCII); 「覚えていますか」 asks instead");
  return d;
}

}  // namespace

LAL_PLUGIN(Hippocampus, describe)
