// long_term — persistent episodic and semantic memory per user, in SQLite (WAL), recalled by ACT-R activation plus
// relevance.
//
// Storage: one table, `long_term_memories`, every row owned by a `user`; every statement filters by user, and the
// in-memory index is one map entry per user, so one user's memories cannot reach another's recall. Writes run in
// IMMEDIATE transactions: a failed write (locked, read-only, disk full) rolls back to the last commit, is logged, and
// the tier keeps answering recall from what was committed.
//
// Recall score (ACT-R units): A = B + importance_weight·importance + relevance_weight·rel, where
//   B   = base-level activation ln(Σ t_j^-d) over the memory's uses (see lal/memory/activation.hpp),
//   rel = keyword_weight·overlap + (1 − keyword_weight)·max(0, cosine),
//   overlap = share of the cue's match keys (ASCII words, CJK bigrams) found in the memory,
//   cosine  = of the hashed character n-gram embeddings (lal/memory/embedding.hpp), stored per row as a BLOB.
// Only memories with rel ≥ min_relevance are candidates. Recalled memories are rehearsed (a use is recorded).
//
// Time is wall-clock (the message's publish time converted to Unix nanoseconds), because memories outlive the
// process and monotonic clocks restart with the machine.
#include <algorithm>
#include <chrono>
#include <map>
#include <optional>

#include "lal/memory/activation.hpp"
#include "lal/memory/embedding.hpp"
#include "lal/memory/episode_text.hpp"
#include "lal/memory/sqlite.hpp"
#include "lal/plugin.hpp"
#include "lal/plugins/text_features.hpp"
#include "semantic_facts.hpp"

namespace {

using lal::memory::Database;
using lal::memory::DbError;

constexpr int kSchemaVersion = 1;

std::int64_t wall_ns_of(const lal::MessageHeader& h) {
  const std::int64_t wall_now =
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
  const std::int64_t mono_now = lal::monotonic_ns();
  return h.timestamp_ns > 0 && h.timestamp_ns <= mono_now ? wall_now - (mono_now - h.timestamp_ns) : wall_now;
}

std::string join_keys(const std::vector<std::string>& keys) {
  std::string s;
  for (const auto& k : keys) (s += k) += '\n';
  return s;
}

std::vector<std::string> split_keys(const std::string& s) {
  std::vector<std::string> out;
  std::size_t b = 0;
  for (std::size_t e; (e = s.find('\n', b)) != std::string::npos; b = e + 1) out.push_back(s.substr(b, e - b));
  return out;  // stored sorted and unique (match_keys), so set operations work as loaded
}

/// Match keys as sorted 64-bit hashes: counting the overlap with a cue is then a merge of two integer arrays,
/// without the string comparisons and allocations of a set intersection (recall scans every memory of the user).
std::vector<std::uint64_t> hash_keys(const std::vector<std::string>& keys) {
  std::vector<std::uint64_t> out;
  out.reserve(keys.size());
  for (const auto& k : keys) {
    std::uint64_t h = 1469598103934665603ull;
    for (unsigned char c : k) h = (h ^ c) * 1099511628211ull;
    out.push_back(h);
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

/// |memory ∩ cue| / |cue|, as lal::plugins::key_overlap on the hashed keys.
double hashed_overlap(const std::vector<std::uint64_t>& memory, const std::vector<std::uint64_t>& cue) {
  if (cue.empty()) return 0.0;
  std::size_t i = 0, j = 0, common = 0;
  while (i < memory.size() && j < cue.size()) {
    if (memory[i] < cue[j])
      ++i;
    else if (cue[j] < memory[i])
      ++j;
    else
      ++common, ++i, ++j;
  }
  return static_cast<double>(common) / static_cast<double>(cue.size());
}

/// One memory as held in the in-memory index (the database is the truth; this mirrors committed rows).
struct Entry {
  std::int64_t id = 0;
  bool semantic = false;
  std::string text;                 // what recall shows
  std::vector<std::uint64_t> keys;  // hash_keys(match_keys(text))
  lal::memory::Embedding embedding{};
  double importance = 0.5;
  lal::memory::UseHistory uses;
};

class LongTermMemory final : public lal::Module {
 public:
  void start(lal::Context& ctx) override {
    ctx_ = &ctx;
    const auto& c = ctx.config();
    const lal::memory::DbOptions o =
        lal::memory::db_options_from(c, "long_term memory (module '" + ctx.module_id() + "')");
    decay_ = c.get<double>("decay");
    relevance_weight_ = c.get<double>("relevance_weight");
    keyword_weight_ = c.get<double>("keyword_weight");
    importance_weight_ = c.get<double>("importance_weight");
    min_relevance_ = c.get<double>("min_relevance");
    extract_facts_ = c.get<bool>("extract_facts");
    if (decay_ <= 0 || decay_ >= 1) throw lal::ConfigError("decay must be in (0, 1), got " + std::to_string(decay_));
    if (keyword_weight_ < 0 || keyword_weight_ > 1)
      throw lal::ConfigError("keyword_weight must be in [0, 1], got " + std::to_string(keyword_weight_));

    // A database that cannot be opened (locked past the timeout, corrupt, unreadable) fails the pipeline load here,
    // with the file named: running on without the memory the user expects would be worse.
    db_.emplace(o);
    if (db_->read_only()) {
      ctx.log(o.read_only ? lal::LogLevel::info : lal::LogLevel::error,
              "database '" + db_->path() + "' is read-only (" + db_->read_only_reason() +
                  "): recall works, new memories will not be stored");
    }
    ensure_schema();
    ctx.on<lal::Episode>("episode", [this](const lal::Delivery<lal::Episode>& m) { encode(m); });
    ctx.serve<lal::RecallRequest, lal::RecallReply>(
        "recall", [this](const lal::Delivery<lal::RecallRequest>& m) { return recall(m); });
  }

  void stop() override {
    update_uses_.reset();   // an open statement would keep the connection (and the file) open
    if (db_) db_->close();  // checkpoints the WAL into the main file and releases the file for the next process
  }

 private:
  void ensure_schema() {
    if (db_->has_table("long_term_memories")) {
      auto s = db_->prepare("SELECT version FROM lal_schema WHERE component = 'long_term'");
      const int v = s.step("reading the schema version") ? static_cast<int>(s.column_int(0)) : 0;
      if (v != kSchemaVersion)
        throw DbError(lal::memory::DbErrorKind::other,
                      "long_term memory database '" + db_->path() + "' has schema version " + std::to_string(v) +
                          ", this plugin reads version " + std::to_string(kSchemaVersion) +
                          "; use a matching lal or another file");
      return;
    }
    if (db_->read_only()) return;  // nothing stored yet and nothing can be: recall answers empty
    Database::Transaction tx(*db_);
    db_->exec(R"sql(
      CREATE TABLE IF NOT EXISTS lal_schema(component TEXT PRIMARY KEY, version INTEGER NOT NULL);
      CREATE TABLE long_term_memories(
        id INTEGER PRIMARY KEY,
        user TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('episodic', 'semantic')),
        text TEXT NOT NULL,
        answer TEXT NOT NULL DEFAULT '',
        keys TEXT NOT NULL,
        embedding BLOB NOT NULL,
        importance REAL NOT NULL,
        strategy TEXT NOT NULL DEFAULT '',
        emotion TEXT NOT NULL DEFAULT '',
        created_ns INTEGER NOT NULL,
        use_count INTEGER NOT NULL,
        recent_uses BLOB NOT NULL);
      CREATE INDEX long_term_by_user ON long_term_memories(user, kind);
      CREATE UNIQUE INDEX long_term_fact ON long_term_memories(user, text) WHERE kind = 'semantic';
      INSERT OR REPLACE INTO lal_schema(component, version) VALUES ('long_term', 1);
    )sql",
              "creating the long_term tables");
    tx.commit();
  }

  /// The user's memories, loaded from the database on first use.
  std::vector<Entry>& index_of(const std::string& user) {
    auto it = index_.find(user);
    if (it != index_.end()) return it->second;
    std::vector<Entry> entries;
    if (db_->has_table("long_term_memories")) {
      auto s = db_->prepare(
          "SELECT id, kind, text, answer, keys, embedding, importance, created_ns, use_count, recent_uses "
          "FROM long_term_memories WHERE user = ?1 ORDER BY id");
      s.bind(1, std::string_view(user));
      while (s.step("loading the user's memories")) {
        Entry e;
        e.id = s.column_int(0);
        e.semantic = s.column_text(1) == "semantic";
        const std::string text = s.column_text(2);
        e.text = e.semantic ? text : lal::memory::episode_text(text, s.column_text(3));
        e.keys = hash_keys(split_keys(s.column_text(4)));
        const auto [emb, emb_bytes] = s.column_blob(5);
        if (!lal::memory::decode_embedding(emb, emb_bytes, e.embedding)) e.embedding = lal::memory::embed_text(text);
        e.importance = s.column_double(6);
        e.uses.created_ns = s.column_int(7);
        e.uses.count = s.column_int(8);
        const auto [uses, uses_bytes] = s.column_blob(9);
        e.uses.recent = lal::memory::decode_times(uses, uses_bytes);
        entries.push_back(std::move(e));
      }
    }
    return index_.emplace(user, std::move(entries)).first->second;
  }

  void encode(const lal::Delivery<lal::Episode>& m) {
    if (m->user_text.empty()) return;
    if (db_->read_only()) {
      if (!warned_read_only_)
        ctx_->log(lal::LogLevel::warn, "database '" + db_->path() + "' is read-only: episodes are not being stored");
      warned_read_only_ = true;
      return;
    }
    const std::string& user = m.header.user;
    const std::int64_t now = wall_ns_of(m.header);
    std::vector<Entry> added;
    std::vector<std::pair<Entry*, lal::memory::UseHistory>> rehearsed;  // facts said again
    auto& entries = index_of(user);
    try {
      Database::Transaction tx(*db_);
      auto insert = db_->prepare(
          "INSERT INTO long_term_memories(user, kind, text, answer, keys, embedding, importance, strategy, emotion, "
          "created_ns, use_count, recent_uses) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 1, ?11)");
      auto add = [&](bool semantic, const std::string& text, const std::string& answer) {
        Entry e;
        e.semantic = semantic;
        e.text = semantic ? text : lal::memory::episode_text(text, answer);
        const auto keys = lal::plugins::match_keys(text);
        e.keys = hash_keys(keys);
        e.embedding = lal::memory::embed_text(text);
        e.importance = std::clamp(m->importance, 0.0, 1.0);
        e.uses = lal::memory::UseHistory::created_at(now);
        insert.reset();
        insert.bind(1, std::string_view(user))
            .bind(2, std::string_view(semantic ? "semantic" : "episodic"))
            .bind(3, std::string_view(text))
            .bind(4, std::string_view(answer))
            .bind(5, std::string_view(join_keys(keys)))
            .bind_blob(6, lal::memory::encode_embedding(e.embedding))
            .bind(7, e.importance)
            .bind(8, std::string_view(m->strategy))
            .bind(9, std::string_view(m->emotion))
            .bind(10, now)
            .bind_blob(11, lal::memory::encode_times(e.uses.recent));
        insert.step("storing a memory");
        e.id = sqlite3_last_insert_rowid(db_->handle());
        added.push_back(std::move(e));
      };
      add(false, m->user_text, m->answer);
      if (extract_facts_) {
        for (const auto& fact : lal::memory::self_statements(m->user_text)) {
          auto known = std::find_if(entries.begin(), entries.end(),
                                    [&](const Entry& e) { return e.semantic && e.text == fact; });
          const bool added_now =
              std::any_of(added.begin(), added.end(), [&](const Entry& e) { return e.semantic && e.text == fact; });
          if (added_now) continue;  // said twice in one breath: one fact
          if (known == entries.end()) {
            add(true, fact, {});
          } else {  // the same fact stated again strengthens it instead of duplicating it
            auto h = known->uses;
            h.use(now);
            store_uses(known->id, user, h);
            rehearsed.emplace_back(&*known, std::move(h));
          }
        }
      }
      tx.commit();
    } catch (const DbError& e) {
      // Rolled back: the database holds exactly what it held before this episode. Keep serving recall.
      ctx_->log(lal::LogLevel::error,
                std::string(e.what()) + " — this episode was not stored; stored memories are intact");
      return;
    }
    for (auto& [entry, h] : rehearsed) entry->uses = std::move(h);
    for (auto& e : added) entries.push_back(std::move(e));
  }

  void store_uses(std::int64_t id, const std::string& user, const lal::memory::UseHistory& h) {
    if (!update_uses_)
      update_uses_.emplace(
          db_->prepare("UPDATE long_term_memories SET use_count = ?1, recent_uses = ?2 WHERE id = ?3 AND user = ?4"));
    update_uses_->reset();
    update_uses_->bind(1, h.count)
        .bind_blob(2, lal::memory::encode_times(h.recent))
        .bind(3, id)
        .bind(4, std::string_view(user));
    update_uses_->step("recording a recall");
  }

  lal::RecallReply recall(const lal::Delivery<lal::RecallRequest>& m) {
    lal::RecallReply reply;
    if (m->limit <= 0) return reply;
    const std::string& user = m.header.user;
    auto& entries = index_of(user);
    const std::int64_t now = wall_ns_of(m.header);
    // An empty cue asks for the most active memories (the /memory view), without rehearsing them.
    const bool introspect = m->cue.find_first_not_of(" \t\r\n") == std::string::npos;
    const auto cue_keys = hash_keys(lal::plugins::match_keys(m->cue));
    const auto cue_embedding = lal::memory::embed_text(m->cue);
    struct Scored {
      double score, activation;
      Entry* e;
    };
    std::vector<Scored> scored;
    for (auto& e : entries) {
      double relevance = 0.0;
      if (!introspect) {
        const double overlap = hashed_overlap(e.keys, cue_keys);
        const double cos = std::max(0.0, lal::memory::cosine(e.embedding, cue_embedding));
        relevance = keyword_weight_ * overlap + (1.0 - keyword_weight_) * cos;
        if (relevance < min_relevance_) continue;
      }
      const double b = lal::memory::base_level_activation(e.uses, now, decay_);
      scored.push_back({b + importance_weight_ * e.importance + relevance_weight_ * relevance, b, &e});
    }
    const std::size_t n = std::min(scored.size(), static_cast<std::size_t>(m->limit));
    std::partial_sort(
        scored.begin(), scored.begin() + static_cast<long>(n), scored.end(),
        [](const Scored& a, const Scored& b) { return a.score != b.score ? a.score > b.score : a.e->id > b.e->id; });
    scored.resize(n);
    for (const auto& s : scored) {
      lal::MemoryItem item;
      item.id = std::to_string(s.e->id);
      item.tier = "long_term";
      item.kind = s.e->semantic ? "semantic" : "episodic";
      item.text = s.e->text;
      item.score = s.score;
      item.activation = s.activation;
      item.created_ns = s.e->uses.created_ns;
      reply.items.push_back(std::move(item));
    }
    if (!introspect && !scored.empty() && !db_->read_only()) rehearse(scored, user, now);
    return reply;
  }

  template <class Scored>
  void rehearse(const std::vector<Scored>& recalled, const std::string& user, std::int64_t now) {
    std::vector<lal::memory::UseHistory> updated;
    try {
      Database::Transaction tx(*db_);
      for (const auto& s : recalled) {
        updated.push_back(s.e->uses);
        updated.back().use(now);
        store_uses(s.e->id, user, updated.back());
      }
      tx.commit();
    } catch (const DbError& e) {
      ctx_->log(lal::LogLevel::error, std::string(e.what()) + " — this recall was answered but not recorded");
      return;
    }
    for (std::size_t i = 0; i < recalled.size(); ++i) recalled[i].e->uses = std::move(updated[i]);
  }

  lal::Context* ctx_ = nullptr;
  std::optional<Database> db_;
  std::optional<lal::memory::Statement> update_uses_;
  std::map<std::string, std::vector<Entry>> index_;  // per user
  double decay_ = 0.5, relevance_weight_ = 6.0, keyword_weight_ = 0.5, importance_weight_ = 1.0, min_relevance_ = 0.15;
  bool extract_facts_ = true, warned_read_only_ = false;
};

lal::PluginDescriptor describe() {
  lal::PluginDescriptor d{"long_term", lal::ModuleKind::memory_tier, "0.1.0",
                          "Long-term memory: episodes and facts per user in SQLite (WAL), recalled by ACT-R "
                          "activation + relevance"};
  d.optional_input<lal::Episode>("episode", "episodes to keep (from short_term's consolidate); unwired = recall only")
      .serves<lal::RecallRequest, lal::RecallReply>(
          "recall", "memories by activation + relevance, best first; empty cue = most active")
      .config_string("path", "~/.local/share/lal/memory.db", "SQLite file; `~` is the home directory")
      .config_bool("read_only", false, "open read-only: recall works, nothing is stored")
      .config_int("busy_timeout_ms", 2000, "how long to wait for another program's lock before failing")
      .config_string("synchronous", "normal", "normal (fsync at checkpoints) or full (fsync every commit)")
      .config_bool("check_on_open", true, "run PRAGMA quick_check when opening (refuses a damaged file)")
      .config_number("decay", 0.5, "ACT-R decay d in B = ln(Σ t^-d)")
      .config_number("relevance_weight", 6.0, "weight of relevance (0..1) against activation in the score")
      .config_number("keyword_weight", 0.5, "share of keyword overlap in relevance; the rest is embedding cosine")
      .config_number("importance_weight", 1.0, "weight of the episode's importance (0..1) in the score")
      .config_number("min_relevance", 0.15, "relevance a memory needs to be recalled")
      .config_bool("extract_facts", true, "store the user's statements about themselves as semantic memories");
  return d;
}

}  // namespace

LAL_PLUGIN(LongTermMemory, describe)
