// short_term — recent episodes per user, fading with time, strengthened by recall, consolidated to long-term memory
// by an explicit policy; with `path` set, kept in a crash-safe journal so that nothing told dies with the process.
//
// Strength of an episode: a = Σ_j 2^(−Δ_j / half_life) over its uses (the encoding and every recall that returned
// it), Δ_j the time since use j.
//
// Consolidation ("sleep") — the one policy that decides what short-term memory keeps:
//   * an episode that arrives with importance ≥ `importance_to_consolidate`, or is recalled
//     `rehearsals_to_consolidate` times, is consolidated at once;
//   * an episode that leaves short-term memory — it faded below `forget_below`, was pushed out by `capacity`, or the
//     session ended (exit, EOF, SIGTERM: the module's stop()) — is consolidated when its importance is
//     ≥ `keep_importance` or it was recalled at least once, and otherwise forgotten (logged at debug level);
//   * with `path` set, every episode is written to the journal (table short_term_journal of that database) when it
//     arrives; consolidation moves it to long_term_memories in the same transaction, forgetting deletes it. When
//     the process dies without stopping (crash, kill -9), the next start of a short_term module on that database
//     applies the same leave-policy to what the dead session left in the journal.
// Importance is the hippocampus's measure (self-disclosure, emotion, explicit requests; see its README).
//
// Where consolidated episodes go: with `path` set, straight into the long-term table of that database (the
// long_term module on the same file notices them; `path` must be long_term's file); without `path`, they are
// published on `consolidate` for a long_term module to store (nothing survives the process then).
//
// Time is the bus header's monotonic timestamp of the message being handled, multiplied by `time_scale`, so a test
// can make hours pass in milliseconds without any clock of its own.
#include <algorithm>
#include <cmath>
#include <map>
#include <optional>
#include <random>

#include "lal/memory/db_settings.hpp"
#include "lal/memory/episode_text.hpp"
#include "lal/memory/store.hpp"
#include "lal/memory/write_queue.hpp"
#include "lal/plugin.hpp"
#include "lal/plugins/text_features.hpp"

namespace {

struct StoredEpisode {
  std::uint64_t id = 0;
  std::shared_ptr<const lal::Episode> episode;
  std::int64_t wall_ns = 0;           // when it arrived, Unix ns (stored with it)
  std::vector<std::string> keys;      // of the user's words: cues are user words too
  std::vector<std::int64_t> uses_ns;  // encoding, then each recall
  int recalls = 0;
  bool consolidated = false;  // in long-term memory (or published for it)
  bool released = false;      // left short-term memory
  std::shared_ptr<std::int64_t> journal_id = std::make_shared<std::int64_t>(0);
};

std::int64_t wall_ns_of(const lal::MessageHeader& h) {
  const std::int64_t wall_now = lal::memory::wall_now_ns();
  const std::int64_t mono_now = lal::monotonic_ns();
  return h.timestamp_ns > 0 && h.timestamp_ns <= mono_now ? wall_now - (mono_now - h.timestamp_ns) : wall_now;
}

struct ShortTermOptions {
  lal::memory::DbSettings db = in_process();
  lal::memory::WriteQueueSettings writes;
  double half_life_s = 600;
  double time_scale = 1;
  double forget_below = 0.05;
  std::int64_t capacity = 64;
  std::int64_t rehearsals_to_consolidate = 3;
  double importance_to_consolidate = 0.8;
  double keep_importance = 0.35;
  bool extract_facts = true;
  double min_relevance = 0.2;

  /// short_term's `path` is empty by default: the journal is in-process only unless a file is given.
  static lal::memory::DbSettings in_process() {
    lal::memory::DbSettings db;
    db.path.clear();
    return db;
  }

  static void declare(lal::Options<ShortTermOptions>& o) {
    using O = ShortTermOptions;
    o.nested(&O::db);
    o.nested(&O::writes);
    o.field("half_life_s", &O::half_life_s, "seconds after which a use counts half as much").min(0.001);
    o.field("time_scale", &O::time_scale, "simulated seconds per real second (tests make time pass quickly)")
        .min(0.001);
    o.field("forget_below", &O::forget_below, "strength under which an episode leaves short-term memory").range(0, 1);
    o.field("capacity", &O::capacity, "episodes kept per user; the weakest leaves first when full").min(1);
    o.field("rehearsals_to_consolidate", &O::rehearsals_to_consolidate,
            "recalls after which an episode is consolidated at once")
        .min(1);
    o.field("importance_to_consolidate", &O::importance_to_consolidate,
            "importance at or above which an episode is consolidated at once");
    o.field("keep_importance", &O::keep_importance,
            "importance at or above which a leaving episode is consolidated rather than forgotten");
    o.field("extract_facts", &O::extract_facts, "extract facts when consolidating into the database (as long_term does)");
    o.field("min_relevance", &O::min_relevance, "share of the cue's keys an episode must match to be recalled")
        .range(0, 1);
  }
};
class ShortTermMemory final : public lal::Module {
 public:
  void start(lal::Context& ctx) override {
    ctx_ = &ctx;
    const auto options = ctx.options<ShortTermOptions>();
    half_life_s_ = options.half_life_s;
    time_scale_ = options.time_scale;
    forget_below_ = options.forget_below;
    capacity_ = options.capacity;
    rehearsals_ = options.rehearsals_to_consolidate;
    importance_threshold_ = options.importance_to_consolidate;
    keep_importance_ = options.keep_importance;
    min_relevance_ = options.min_relevance;
    extract_facts_ = options.extract_facts;
    if (!options.db.path.empty()) open_journal(options.db, options.writes);
    ctx.on<lal::Episode>("episode", [this](const lal::Delivery<lal::Episode>& m) { encode(m); });
    ctx.serve<lal::RecallRequest, lal::RecallReply>(
        "recall", [this](const lal::Delivery<lal::RecallRequest>& m) { return recall(m); });
  }

  void stop() override {
    if (!store_) return;
    // Sleep: every episode still in short-term memory leaves it by the policy, then the session is closed.
    for (auto& [user, episodes] : by_user_)
      for (auto& e : episodes) release(e, user, nullptr, "the session ended");
    by_user_.clear();
    if (!store_->read_only()) {
      queue_->finish(applied());
      try {
        if (queue_->size() == 0) store_->end_session(session_);
      } catch (const lal::memory::DbError& e) {
        ctx_->log(lal::LogLevel::warn, e.what());  // the next start sees a dead session with an empty journal
      }
    }
    queue_.reset();
    store_.reset();
  }

 private:
  void open_journal(const lal::memory::DbSettings& db, const lal::memory::WriteQueueSettings& writes) {
    store_.emplace(db.db_options("short_term memory (module '" + ctx_->module_id() + "')"));
    if (store_->read_only()) {
      ctx_->log(lal::LogLevel::warn,
                "journal database '" + store_->path() + "' is read-only: short-term memory lives in this process only");
      return;
    }
    queue_.emplace(*store_, writes, [this](bool error, const std::string& s) {
      ctx_->log(error ? lal::LogLevel::error : lal::LogLevel::warn, s);
    });
    lal::memory::recover_pending(*store_, [this](const std::string& s) { ctx_->log(lal::LogLevel::warn, s); });
    std::random_device rd;
    session_ = std::to_string(::getpid()) + "-" + std::to_string(rd()) + std::to_string(rd());
    store_->register_session(session_);
    recover_dead_sessions();
    data_version_ = store_->data_version();
  }

  /// What a crashed or killed process left in the journal leaves short-term memory now, by the same policy.
  void recover_dead_sessions() {
    std::size_t kept = 0, forgotten = 0;
    for (const std::string& dead : store_->dead_sessions()) {
      for (const auto& j : store_->journal(dead)) {
        if (j.consolidated) {
          store_->journal_forget(j.id);  // already in long-term memory
        } else if (j.episode.importance >= keep_importance_ || j.recalls > 0) {
          store_->store_episode(j.episode, extract_facts_, j.id, true);
          ++kept;
        } else {
          store_->journal_forget(j.id);
          ++forgotten;
        }
      }
      store_->end_session(dead);
    }
    if (kept + forgotten)
      ctx_->log(lal::LogLevel::info, "consolidated " + std::to_string(kept) + " and forgot " +
                                         std::to_string(forgotten) +
                                         " short-term episodes left by a session that did not end normally");
  }

  /// Episodes whose journal entry another connection deleted (`lal memory forget`, /forget) are forgotten here too.
  void sync_forgotten() {
    if (!store_ || !queue_ || queue_->size()) return;
    const std::int64_t v = store_->data_version();
    if (v == data_version_) return;
    data_version_ = v;
    const auto alive = store_->journal_ids(session_);
    for (auto& [user, episodes] : by_user_)
      episodes.erase(
          std::remove_if(episodes.begin(), episodes.end(),
                         [&](const StoredEpisode& e) { return *e.journal_id != 0 && alive.count(*e.journal_id) == 0; }),
          episodes.end());
  }

  lal::memory::WriteQueue::Applied applied() {
    return [](const lal::memory::PendingWrite&, const lal::memory::EpisodeWrite*) {};
  }

  lal::memory::EpisodeInput input_of(const StoredEpisode& e, const std::string& user) const {
    lal::memory::EpisodeInput in;
    in.user = user;
    in.user_text = e.episode->user_text;
    in.answer = e.episode->answer;
    in.importance = e.episode->importance;
    in.strategy = e.episode->strategy;
    in.emotion = e.episode->emotion;
    in.created_ns = e.wall_ns;
    return in;
  }

  double strength(const StoredEpisode& e, std::int64_t now_ns) const {
    double a = 0.0;
    for (std::int64_t t : e.uses_ns) {
      const double age_s = std::max(0.0, static_cast<double>(now_ns - t) * 1e-9) * time_scale_;
      a += std::exp2(-age_s / half_life_s_);
    }
    return a;
  }

  void consolidate(StoredEpisode& e, const std::string& user, const lal::MessageHeader* cause, const char* why) {
    if (e.consolidated) return;  // exactly once per episode
    e.consolidated = true;
    ctx_->log(lal::LogLevel::debug, "consolidating episode #" + std::to_string(e.id) + " (" + why + ")");
    if (store_ && queue_) {
      lal::memory::PendingWrite w;
      w.kind = lal::memory::PendingWrite::episode;
      w.input = input_of(e, user);
      w.extract_facts = extract_facts_;
      w.journal_id = e.journal_id;
      queue_->submit(std::move(w), applied());
    } else if (cause) {
      ctx_->publish("consolidate", *e.episode, cause);
    }
  }

  /// The episode leaves short-term memory: kept (consolidated) or forgotten, by the policy in the file comment.
  void release(StoredEpisode& e, const std::string& user, const lal::MessageHeader* cause, const char* why) {
    if (e.released) return;
    e.released = true;
    if (!e.consolidated && (e.episode->importance >= keep_importance_ || e.recalls > 0))
      consolidate(e, user, cause, why);
    else if (!e.consolidated)
      ctx_->log(lal::LogLevel::debug, "forgot episode #" + std::to_string(e.id) + " (" + why + ", importance " +
                                          std::to_string(e.episode->importance) + ", never recalled)");
    e.consolidated = true;
    if (store_ && queue_) {  // it leaves the journal (long-term memory has it, or the policy forgot it)
      lal::memory::PendingWrite w;
      w.kind = lal::memory::PendingWrite::forget_journal;
      w.input.user = user;
      w.journal_id = e.journal_id;
      queue_->submit(std::move(w), applied());
    }
  }

  // Episodes that faded below the threshold leave short-term memory (lazily, when the user's memory is touched).
  void release_faded(std::vector<StoredEpisode>& episodes, const lal::MessageHeader& cause, std::int64_t now_ns) {
    for (auto& e : episodes)
      if (strength(e, now_ns) < forget_below_) release(e, cause.user, &cause, "faded");
    episodes.erase(std::remove_if(episodes.begin(), episodes.end(),
                                  [&](const StoredEpisode& e) { return strength(e, now_ns) < forget_below_; }),
                   episodes.end());
  }

  void encode(const lal::Delivery<lal::Episode>& m) {
    sync_forgotten();
    auto& episodes = by_user_[m.header.user];  // partitioned per user: recall never crosses users
    const std::int64_t now = m.header.timestamp_ns;
    release_faded(episodes, m.header, now);
    if (static_cast<std::int64_t>(episodes.size()) >= capacity_) {
      auto weakest = std::min_element(episodes.begin(), episodes.end(), [&](const auto& a, const auto& b) {
        const double sa = strength(a, now), sb = strength(b, now);
        return sa != sb ? sa < sb : a.id < b.id;
      });
      release(*weakest, m.header.user, &m.header, "capacity");
      episodes.erase(weakest);
    }
    StoredEpisode e;
    e.id = ++next_id_;
    e.episode = m.body;
    e.wall_ns = wall_ns_of(m.header);
    e.keys = lal::plugins::match_keys(m->user_text);
    e.uses_ns.push_back(now);
    if (store_ && queue_) {
      lal::memory::PendingWrite w;
      w.kind = lal::memory::PendingWrite::journal;
      w.session = session_;
      w.input = input_of(e, m.header.user);
      w.journal_id = e.journal_id;
      queue_->submit(std::move(w), applied());
    }
    episodes.push_back(std::move(e));
    if (m->importance >= importance_threshold_) consolidate(episodes.back(), m.header.user, &m.header, "important");
  }

  lal::RecallReply recall(const lal::Delivery<lal::RecallRequest>& m) {
    lal::RecallReply reply;
    sync_forgotten();
    auto it = by_user_.find(m.header.user);
    if (it == by_user_.end() || m->limit <= 0) return reply;
    auto& episodes = it->second;
    const std::int64_t now = m.header.timestamp_ns;
    release_faded(episodes, m.header, now);
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
      item.created_ns = s.e->wall_ns;
      reply.items.push_back(std::move(item));
      if (introspect) continue;
      s.e->uses_ns.push_back(now);  // retrieval is rehearsal
      if (++s.e->recalls >= rehearsals_) consolidate(*s.e, m.header.user, &m.header, "rehearsed");
    }
    return reply;
  }

  lal::Context* ctx_ = nullptr;
  // From ShortTermOptions (start()).
  double half_life_s_ = 0, time_scale_ = 0, forget_below_ = 0, importance_threshold_ = 0, keep_importance_ = 0,
         min_relevance_ = 0;
  std::int64_t capacity_ = 0, rehearsals_ = 0;
  bool extract_facts_ = false;
  std::uint64_t next_id_ = 0;
  std::map<std::string, std::vector<StoredEpisode>> by_user_;
  std::optional<lal::memory::MemoryStore> store_;
  std::optional<lal::memory::WriteQueue> queue_;
  std::string session_;
  std::int64_t data_version_ = 0;
};

lal::PluginDescriptor describe() {
  lal::PluginDescriptor d{"short_term", lal::ModuleKind::memory_tier, "0.2.0",
                          "Short-term memory: recent episodes per user, fading with a half-life, kept in a crash-safe "
                          "journal, consolidated by importance and rehearsal"};
  d.input<lal::Episode>("episode", "episodes to remember (from the hippocampus)")
      .serves<lal::RecallRequest, lal::RecallReply>(
          "recall", "episodes sharing words/bigrams with the cue, by relevance × strength; empty cue = strongest")
      .output<lal::Episode>("consolidate",
                            "without `path`: each episode worth keeping, exactly once, for long-term memory")
      .options<ShortTermOptions>();
  return d;
}

}  // namespace

LAL_PLUGIN(ShortTermMemory, describe)
