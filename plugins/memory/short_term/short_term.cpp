// short_term — recent episodes per user, fading with time, strengthened by recall, consolidated to long-term memory.
//
// Strength of an episode: a = Σ_j 2^(−Δ_j / half_life) over its uses (the encoding and every recall that returned
// it), Δ_j the time since use j. An episode whose strength falls below `forget_below` is forgotten; one that was
// recalled `rehearsals_to_consolidate` times, or arrived with importance ≥ `importance_to_consolidate`, is published
// once on `consolidate` for long-term memory. Nothing here is persisted: what is not consolidated is meant to be lost.
//
// Time is the bus header's monotonic timestamp of the message being handled, multiplied by `time_scale`, so a test
// can make hours pass in milliseconds without any clock of its own.
#include <algorithm>
#include <cmath>
#include <map>

#include "lal/memory/episode_text.hpp"
#include "lal/plugin.hpp"
#include "lal/plugins/text_features.hpp"

namespace {

struct StoredEpisode {
  std::uint64_t id = 0;
  std::shared_ptr<const lal::Episode> episode;
  std::vector<std::string> keys;      // of the user's words: cues are user words too
  std::vector<std::int64_t> uses_ns;  // encoding, then each recall
  int recalls = 0;
  bool consolidated = false;
};

class ShortTermMemory final : public lal::Module {
 public:
  void start(lal::Context& ctx) override {
    ctx_ = &ctx;
    const auto& c = ctx.config();
    half_life_s_ = c.get<double>("half_life_s");
    time_scale_ = c.get<double>("time_scale");
    forget_below_ = c.get<double>("forget_below");
    capacity_ = c.get<std::int64_t>("capacity");
    rehearsals_ = c.get<std::int64_t>("rehearsals_to_consolidate");
    importance_threshold_ = c.get<double>("importance_to_consolidate");
    min_relevance_ = c.get<double>("min_relevance");
    if (half_life_s_ <= 0) throw lal::ConfigError("half_life_s must be positive, got " + std::to_string(half_life_s_));
    if (time_scale_ <= 0) throw lal::ConfigError("time_scale must be positive, got " + std::to_string(time_scale_));
    if (capacity_ < 1) throw lal::ConfigError("capacity must be at least 1, got " + std::to_string(capacity_));
    if (rehearsals_ < 1)
      throw lal::ConfigError("rehearsals_to_consolidate must be at least 1, got " + std::to_string(rehearsals_));
    ctx.on<lal::Episode>("episode", [this](const lal::Delivery<lal::Episode>& m) { encode(m); });
    ctx.serve<lal::RecallRequest, lal::RecallReply>(
        "recall", [this](const lal::Delivery<lal::RecallRequest>& m) { return recall(m); });
  }

 private:
  double strength(const StoredEpisode& e, std::int64_t now_ns) const {
    double a = 0.0;
    for (std::int64_t t : e.uses_ns) {
      const double age_s = std::max(0.0, static_cast<double>(now_ns - t) * 1e-9) * time_scale_;
      a += std::exp2(-age_s / half_life_s_);
    }
    return a;
  }

  // Forget what has faded below the threshold (forgetting is lazy: it happens when the user's memory is touched).
  void forget_faded(std::vector<StoredEpisode>& episodes, std::int64_t now_ns) {
    episodes.erase(std::remove_if(episodes.begin(), episodes.end(),
                                  [&](const StoredEpisode& e) {
                                    const bool gone = strength(e, now_ns) < forget_below_;
                                    if (gone)
                                      ctx_->log(lal::LogLevel::debug, "forgot episode #" + std::to_string(e.id));
                                    return gone;
                                  }),
                   episodes.end());
  }

  void consolidate(StoredEpisode& e, const lal::MessageHeader& cause, const char* why) {
    if (e.consolidated) return;  // exactly once per episode
    e.consolidated = true;
    ctx_->log(lal::LogLevel::debug, "consolidating episode #" + std::to_string(e.id) + " (" + why + ")");
    ctx_->publish("consolidate", *e.episode, &cause);
  }

  void encode(const lal::Delivery<lal::Episode>& m) {
    auto& episodes = by_user_[m.header.user];  // partitioned per user: recall never crosses users
    const std::int64_t now = m.header.timestamp_ns;
    forget_faded(episodes, now);
    if (static_cast<std::int64_t>(episodes.size()) >= capacity_) {
      auto weakest = std::min_element(episodes.begin(), episodes.end(), [&](const auto& a, const auto& b) {
        const double sa = strength(a, now), sb = strength(b, now);
        return sa != sb ? sa < sb : a.id < b.id;
      });
      episodes.erase(weakest);
    }
    StoredEpisode e;
    e.id = ++next_id_;
    e.episode = m.body;
    e.keys = lal::plugins::match_keys(m->user_text);
    e.uses_ns.push_back(now);
    episodes.push_back(std::move(e));
    if (m->importance >= importance_threshold_) consolidate(episodes.back(), m.header, "important");
  }

  lal::RecallReply recall(const lal::Delivery<lal::RecallRequest>& m) {
    lal::RecallReply reply;
    auto it = by_user_.find(m.header.user);
    if (it == by_user_.end() || m->limit <= 0) return reply;
    auto& episodes = it->second;
    const std::int64_t now = m.header.timestamp_ns;
    forget_faded(episodes, now);
    // An empty cue asks "what is on your mind" (the /memory view): the strongest episodes, without rehearsing them,
    // because looking at the list is not remembering.
    const bool introspect = m->cue.find_first_not_of(" \t\r\n") == std::string::npos;
    const auto cue = lal::plugins::match_keys(m->cue);
    struct Scored {
      double score, strength;
      StoredEpisode* e;
    };
    std::vector<Scored> scored;
    for (auto& e : episodes) {
      const double a = strength(e, now);
      if (introspect) {
        scored.push_back({a, a, &e});
        continue;
      }
      const double relevance = lal::plugins::key_overlap(e.keys, cue);
      if (relevance < min_relevance_ || relevance <= 0.0) continue;
      scored.push_back({relevance * a, a, &e});
    }
    std::sort(scored.begin(), scored.end(), [](const Scored& a, const Scored& b) {
      return a.score != b.score ? a.score > b.score : a.e->id > b.e->id;
    });
    if (scored.size() > static_cast<std::size_t>(m->limit)) scored.resize(static_cast<std::size_t>(m->limit));
    for (const auto& s : scored) {
      lal::MemoryItem item;
      item.id = std::to_string(s.e->id);
      item.tier = "short_term";
      item.kind = "episodic";
      item.text = lal::memory::episode_text(s.e->episode->user_text, s.e->episode->answer);
      item.score = s.score;
      item.activation = s.strength;
      item.created_ns = s.e->uses_ns.front();
      reply.items.push_back(std::move(item));
      if (introspect) continue;
      s.e->uses_ns.push_back(now);  // retrieval is rehearsal
      if (++s.e->recalls >= rehearsals_) consolidate(*s.e, m.header, "rehearsed");
    }
    return reply;
  }

  lal::Context* ctx_ = nullptr;
  double half_life_s_ = 600, time_scale_ = 1, forget_below_ = 0.05, importance_threshold_ = 0.8, min_relevance_ = 0.2;
  std::int64_t capacity_ = 64, rehearsals_ = 3;
  std::uint64_t next_id_ = 0;
  std::map<std::string, std::vector<StoredEpisode>> by_user_;
};

lal::PluginDescriptor describe() {
  lal::PluginDescriptor d{"short_term", lal::ModuleKind::memory_tier, "0.1.0",
                          "Short-term memory: recent episodes per user, fading with a half-life, consolidated when "
                          "rehearsed or important"};
  d.input<lal::Episode>("episode", "episodes to remember (from the hippocampus)")
      .serves<lal::RecallRequest, lal::RecallReply>(
          "recall", "episodes sharing words/bigrams with the cue, by relevance × strength; empty cue = strongest")
      .output<lal::Episode>("consolidate", "each episode worth keeping, exactly once, for long-term memory")
      .config_number("half_life_s", 600.0, "seconds after which a use counts half as much")
      .config_number("time_scale", 1.0, "simulated seconds per real second (tests make time pass quickly)")
      .config_number("forget_below", 0.05, "strength under which an episode is forgotten")
      .config_int("capacity", 64, "episodes kept per user; the weakest goes first when full")
      .config_int("rehearsals_to_consolidate", 3, "recalls after which an episode is consolidated")
      .config_number("importance_to_consolidate", 0.8,
                     "importance at or above which an episode is consolidated at once")
      .config_number("min_relevance", 0.2, "share of the cue's keys an episode must match to be recalled");
  return d;
}

}  // namespace

LAL_PLUGIN(ShortTermMemory, describe)
