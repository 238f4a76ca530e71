// The memory database: one SQLite file (WAL) holding long-term memories, the short-term journal and the sessions
// that own journal entries. Shared by the long_term and short_term plugins, `lal memory` and `lal bench recall`, so
// there is one schema and one set of write rules.
//
// Tables (every memory row has a `user`; every statement filters by it):
//   long_term_memories  episodic and semantic memories: text, answer, importance, strategy, emotion, creation time,
//                       use history (ACT-R), hashed n-gram embedding (BLOB); facts have a `slot` and, once updated,
//                       `superseded_by` (the newer fact's id); `source_id` is the episode a fact came from.
//   short_term_journal  episodes of running (or crashed) sessions, written when they arrive, so that nothing told is
//                       lost when a process dies: the next start consolidates what a dead session left behind.
//   memory_sessions     who owns journal entries: host, pid, the process's start time (from /proc) and boot id, so a
//                       dead owner is recognised even when its pid has been reused.
//   lal_schema          schema versions per component.
//
// Writes are IMMEDIATE transactions: all of one episode (the episode, its facts, the facts it supersedes, the journal
// entry it replaces) commits or none of it does. Schema version 1 files (long_term before facts had slots) are
// upgraded in place, in one transaction, the first time a writer opens them.
//
// Threading: one MemoryStore per module (or command), used from one thread at a time.
#pragma once

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "lal/memory/activation.hpp"
#include "lal/memory/embedding.hpp"
#include "lal/memory/facts.hpp"
#include "lal/memory/sqlite.hpp"
#include "lal/messages.hpp"

namespace lal::memory {

constexpr int kLongTermSchemaVersion = 2;

inline std::int64_t wall_now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

/// One long-term memory row.
struct StoredMemory {
  std::int64_t id = 0;
  std::string user;
  bool semantic = false;
  std::string text;    ///< the user's words (episodic) or the fact sentence (semantic)
  std::string answer;  ///< what was answered (episodic)
  double importance = 0.5;
  std::optional<Strategy> strategy;  ///< how the turn was answered; none for a memory stored without one
  std::string emotion;
  UseHistory uses;  ///< uses.created_ns is the creation time (Unix ns)
  std::string slot;
  std::int64_t superseded_by = 0;  ///< id of the newer fact in the same slot, 0 = current
  std::int64_t source_id = 0;      ///< the episode a fact was stated in
  bool has_embedding = false;      ///< `embedding` holds the stored embed_text(text) (set by load())
  Embedding embedding{};
};

/// An episode to store (from the hippocampus via short_term, from the journal, from `lal memory import`).
struct EpisodeInput {
  std::string user, user_text, answer, emotion;
  std::optional<Strategy> strategy;  ///< stored as its name, '' for none
  double importance = 0.5;
  std::int64_t created_ns = 0;  ///< Unix ns; 0 = now
};

/// One short-term journal row.
struct JournalEntry {
  std::int64_t id = 0;
  std::string session;
  EpisodeInput episode;
  std::int64_t recalls = 0;
  bool consolidated = false;  ///< already in long-term memory; the entry goes when it leaves short-term memory
};

/// What one stored episode changed, for the in-memory indexes.
struct EpisodeWrite {
  std::vector<StoredMemory> added;                                ///< the episode, then its new facts
  std::vector<std::pair<std::int64_t, UseHistory>> rehearsed;     ///< facts stated again
  std::vector<std::pair<std::int64_t, std::int64_t>> superseded;  ///< (old fact id, new fact id)
};

class MemoryStore {
 public:
  explicit MemoryStore(DbOptions options) : db_(std::move(options)) { ensure_schema(); }

  Database& db() { return db_; }
  bool read_only() const { return db_.read_only(); }
  const std::string& path() const { return db_.path(); }

  /// PRAGMA data_version: changes whenever another connection commits. Cheap; used to notice writers elsewhere.
  std::int64_t data_version() {
    auto s = db_.prepare("PRAGMA data_version");
    s.step("reading data_version");
    return s.column_int(0);
  }

  // ---- long-term memories --------------------------------------------------------------------------------------

  /// The user's memories with id > after_id, oldest first.
  std::vector<StoredMemory> load(const std::string& user, std::int64_t after_id = 0) {
    std::vector<StoredMemory> out;
    if (!has_long_term_) return out;
    auto s = db_.prepare(
        "SELECT id, kind, text, answer, importance, strategy, emotion, created_ns, use_count, recent_uses, slot, "
        "superseded_by, source_id, embedding FROM long_term_memories WHERE user = ?1 AND id > ?2 ORDER BY id");
    s.bind(1, std::string_view(user)).bind(2, after_id);
    while (s.step("loading the user's memories")) {
      StoredMemory m;
      m.id = s.column_int(0);
      m.user = user;
      m.semantic = s.column_text(1) == "semantic";
      m.text = s.column_text(2);
      m.answer = s.column_text(3);
      m.importance = s.column_double(4);
      m.strategy = strategy_column(s.column_text(5), "long_term_memories row " + std::to_string(m.id));
      m.emotion = s.column_text(6);
      m.uses.created_ns = s.column_int(7);
      m.uses.count = s.column_int(8);
      const auto [uses, bytes] = s.column_blob(9);
      m.uses.recent = decode_times(uses, bytes);
      m.slot = s.column_text(10);
      m.superseded_by = s.column_int(11);
      m.source_id = s.column_int(12);
      const auto [emb, emb_bytes] = s.column_blob(13);
      m.has_embedding = decode_embedding(emb, emb_bytes, m.embedding);  // a foreign or damaged blob: recomputed
      out.push_back(std::move(m));
    }
    return out;
  }

  /// Number of the user's long-term rows (to notice deletions by another connection).
  std::int64_t count(const std::string& user) {
    if (!has_long_term_) return 0;
    auto s = db_.prepare("SELECT count(*) FROM long_term_memories WHERE user = ?1");
    s.bind(1, std::string_view(user));
    s.step("counting memories");
    return s.column_int(0);
  }

  /// (id, superseded_by) of the user's facts that have been superseded.
  std::vector<std::pair<std::int64_t, std::int64_t>> superseded_facts(const std::string& user) {
    std::vector<std::pair<std::int64_t, std::int64_t>> out;
    if (!has_long_term_) return out;
    auto s = db_.prepare(
        "SELECT id, superseded_by FROM long_term_memories WHERE user = ?1 AND kind = 'semantic' AND superseded_by != "
        "0");
    s.bind(1, std::string_view(user));
    while (s.step("reading fact updates")) out.emplace_back(s.column_int(0), s.column_int(1));
    return out;
  }

  /// Store one episode and the facts it states, in one transaction (see EpisodeWrite). `extract_facts` = false
  /// stores the episode alone. `journal_id` ≠ 0: that journal entry is marked consolidated in the same transaction
  /// (it stays while the episode is in short-term memory; `delete_journal` = true removes it instead).
  EpisodeWrite store_episode(const EpisodeInput& in, bool extract_facts, std::int64_t journal_id = 0,
                             bool delete_journal = false) {
    Database::Transaction tx(db_);
    EpisodeWrite w = store_episode_in_transaction(in, extract_facts);
    if (journal_id && delete_journal) delete_journal_in_transaction(journal_id);
    if (journal_id && !delete_journal) {
      auto s = db_.prepare("UPDATE short_term_journal SET consolidated = 1 WHERE id = ?1");
      s.bind(1, journal_id);
      s.step("marking a journal entry consolidated");
    }
    tx.commit();
    return w;
  }

  /// Ids of the journal entries of `session` (to notice entries forgotten by another connection).
  std::set<std::int64_t> journal_ids(const std::string& session) {
    std::set<std::int64_t> out;
    auto s = db_.prepare("SELECT id FROM short_term_journal WHERE session = ?1");
    s.bind(1, std::string_view(session));
    while (s.step("reading the short-term journal")) out.insert(s.column_int(0));
    return out;
  }

  /// Record the use histories of recalled memories, in one transaction.
  void record_uses(const std::string& user, const std::vector<std::pair<std::int64_t, UseHistory>>& uses) {
    if (uses.empty()) return;
    Database::Transaction tx(db_);
    auto s = db_.prepare("UPDATE long_term_memories SET use_count = ?1, recent_uses = ?2 WHERE id = ?3 AND user = ?4");
    for (const auto& [id, h] : uses) {
      s.reset();
      s.bind(1, h.count).bind_blob(2, encode_times(h.recent)).bind(3, id).bind(4, std::string_view(user));
      s.step("recording a recall");
    }
    tx.commit();
  }

  /// Insert a row exactly as given (import): keeps `id` when it is free, else assigns a new one. Returns the id.
  std::int64_t insert_raw(const StoredMemory& m) {
    auto s = db_.prepare(
        "INSERT INTO long_term_memories(id, user, kind, text, answer, keys, embedding, importance, strategy, emotion, "
        "created_ns, use_count, recent_uses, slot, superseded_by, source_id) VALUES (?1, ?2, ?3, ?4, ?5, '', ?6, ?7, "
        "?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)");
    bool free_id = m.id > 0;
    if (free_id) {
      auto q = db_.prepare("SELECT 1 FROM long_term_memories WHERE id = ?1");
      q.bind(1, m.id);
      free_id = !q.step("checking an id");
    }
    if (free_id)
      s.bind(1, m.id);
    else
      s.bind_null(1);
    s.bind(2, std::string_view(m.user))
        .bind(3, std::string_view(m.semantic ? "semantic" : "episodic"))
        .bind(4, std::string_view(m.text))
        .bind(5, std::string_view(m.answer))
        .bind_blob(6, encode_embedding(embed_text(m.text)))
        .bind(7, m.importance)
        .bind(8, std::string_view(to_string(m.strategy)))
        .bind(9, std::string_view(m.emotion))
        .bind(10, m.uses.created_ns)
        .bind(11, m.uses.count)
        .bind_blob(12, encode_times(m.uses.recent))
        .bind(13, std::string_view(m.slot))
        .bind(14, m.superseded_by)
        .bind(15, m.source_id);
    s.step("importing a memory");
    return sqlite3_last_insert_rowid(db_.handle());
  }

  /// Point a row's superseded_by / source_id at other rows (import remaps ids).
  void set_links(std::int64_t id, std::int64_t superseded_by, std::int64_t source_id) {
    auto s = db_.prepare("UPDATE long_term_memories SET superseded_by = ?1, source_id = ?2 WHERE id = ?3");
    s.bind(1, superseded_by).bind(2, source_id).bind(3, id);
    s.step("linking imported memories");
  }

  // ---- short-term journal --------------------------------------------------------------------------------------

  /// Write an episode to the journal of `session`; returns its id.
  std::int64_t journal_add(const std::string& session, const EpisodeInput& e) {
    Database::Transaction tx(db_);
    const std::int64_t id = journal_add_in_transaction(session, e, 0);
    tx.commit();
    return id;
  }
  std::int64_t journal_add_in_transaction(const std::string& session, const EpisodeInput& e, std::int64_t recalls,
                                          bool consolidated = false) {
    auto s = db_.prepare(
        "INSERT INTO short_term_journal(user, session, user_text, answer, importance, strategy, emotion, created_ns, "
        "recalls, consolidated) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)");
    s.bind(1, std::string_view(e.user))
        .bind(2, std::string_view(session))
        .bind(3, std::string_view(e.user_text))
        .bind(4, std::string_view(e.answer))
        .bind(5, e.importance)
        .bind(6, std::string_view(to_string(e.strategy)))
        .bind(7, std::string_view(e.emotion))
        .bind(8, e.created_ns ? e.created_ns : wall_now_ns())
        .bind(9, recalls)
        .bind(10, static_cast<std::int64_t>(consolidated ? 1 : 0));
    s.step("writing the short-term journal");
    return sqlite3_last_insert_rowid(db_.handle());
  }

  void journal_set_recalls(std::int64_t id, std::int64_t recalls) {
    auto s = db_.prepare("UPDATE short_term_journal SET recalls = ?1 WHERE id = ?2");
    s.bind(1, recalls).bind(2, id);
    s.step("recording a short-term recall");
  }

  /// Forget a journal entry (the explicit short-term forgetting policy decided so).
  void journal_forget(std::int64_t id) {
    Database::Transaction tx(db_);
    delete_journal_in_transaction(id);
    tx.commit();
  }

  /// Journal entries of `session` ("" = of every session), or of one user (`user` non-empty), oldest first.
  std::vector<JournalEntry> journal(const std::string& session, const std::string& user = {}) {
    std::vector<JournalEntry> out;
    auto s = db_.prepare(
        "SELECT id, session, user, user_text, answer, importance, strategy, emotion, created_ns, recalls, consolidated "
        "FROM "
        "short_term_journal WHERE (?1 = '' OR session = ?1) AND (?2 = '' OR user = ?2) ORDER BY id");
    s.bind(1, std::string_view(session)).bind(2, std::string_view(user));
    while (s.step("reading the short-term journal")) {
      JournalEntry j;
      j.id = s.column_int(0);
      j.session = s.column_text(1);
      j.episode.user = s.column_text(2);
      j.episode.user_text = s.column_text(3);
      j.episode.answer = s.column_text(4);
      j.episode.importance = s.column_double(5);
      j.episode.strategy = strategy_column(s.column_text(6), "short_term_journal row " + std::to_string(j.id));
      j.episode.emotion = s.column_text(7);
      j.episode.created_ns = s.column_int(8);
      j.recalls = s.column_int(9);
      j.consolidated = s.column_int(10) != 0;
      out.push_back(std::move(j));
    }
    return out;
  }

  // ---- sessions ------------------------------------------------------------------------------------------------

  /// Register this process as the owner of `session`.
  void register_session(const std::string& session) {
    Database::Transaction tx(db_);
    auto s = db_.prepare(
        "INSERT OR REPLACE INTO memory_sessions(session, host, pid, boot_id, proc_start, started_ns) VALUES (?1, ?2, "
        "?3, ?4, ?5, ?6)");
    s.bind(1, std::string_view(session))
        .bind(2, std::string_view(host_name()))
        .bind(3, static_cast<std::int64_t>(::getpid()))
        .bind(4, std::string_view(boot_id()))
        .bind(5, std::string_view(process_start(::getpid())))
        .bind(6, wall_now_ns());
    s.step("registering the session");
    tx.commit();
  }

  void end_session(const std::string& session) {
    Database::Transaction tx(db_);
    auto s = db_.prepare("DELETE FROM memory_sessions WHERE session = ?1");
    s.bind(1, std::string_view(session));
    s.step("ending the session");
    tx.commit();
  }

  /// Sessions whose process is gone (crashed, killed): same host, and the pid is not running, or runs another
  /// program (different start time), or the machine rebooted since. Journal entries of unknown sessions count too.
  std::vector<std::string> dead_sessions() {
    std::vector<std::string> out;
    std::set<std::string> known;
    auto s = db_.prepare("SELECT session, host, pid, boot_id, proc_start FROM memory_sessions");
    while (s.step("reading sessions")) {
      const std::string session = s.column_text(0);
      known.insert(session);
      if (s.column_text(1) != host_name()) continue;  // another machine's process: cannot tell, leave it
      const auto pid = static_cast<pid_t>(s.column_int(2));
      const bool same_boot = s.column_text(3) == boot_id();
      const bool alive = same_boot && process_start(pid) == s.column_text(4) && !s.column_text(4).empty();
      if (!alive) out.push_back(session);
    }
    auto j = db_.prepare("SELECT DISTINCT session FROM short_term_journal");
    while (j.step("reading the journal's sessions"))
      if (!known.count(j.column_text(0))) out.push_back(j.column_text(0));
    return out;
  }

  // ---- forgetting ------------------------------------------------------------------------------------------------

  /// Delete memories of `user`: every row (`ids` empty and `match` empty), the given ids, or those whose text or
  /// answer contains `match`. Facts stated in a deleted episode are deleted with it. Journal entries are matched the
  /// same way. Then VACUUM and truncate the WAL, so that nothing of the deleted text stays in the files. Returns the
  /// number of rows deleted.
  std::int64_t forget(const std::string& user, const std::vector<std::int64_t>& ids, const std::string& match,
                      bool all) {
    std::int64_t n = 0;
    {
      Database::Transaction tx(db_);
      auto del_lt = [&](const char* sql, auto&& bind) {
        if (!has_long_term_) return;
        auto s = db_.prepare(sql);
        bind(s);
        s.step("forgetting memories");
        n += sqlite3_changes(db_.handle());
      };
      auto del_j = [&](const char* sql, auto&& bind) {
        auto s = db_.prepare(sql);
        bind(s);
        s.step("forgetting short-term memories");
        n += sqlite3_changes(db_.handle());
      };
      if (all) {
        del_lt("DELETE FROM long_term_memories WHERE user = ?1",
               [&](Statement& s) { s.bind(1, std::string_view(user)); });
        del_j("DELETE FROM short_term_journal WHERE user = ?1",
              [&](Statement& s) { s.bind(1, std::string_view(user)); });
      } else if (!match.empty()) {
        // instr() is exact and case-sensitive, unlike LIKE (whose % and _ would be wildcards in the user's text).
        del_lt(
            "DELETE FROM long_term_memories WHERE user = ?1 AND (instr(text, ?2) > 0 OR instr(answer, ?2) > 0 OR "
            "source_id IN (SELECT id FROM long_term_memories WHERE user = ?1 AND (instr(text, ?2) > 0 OR "
            "instr(answer, ?2) > 0)))",
            [&](Statement& s) { s.bind(1, std::string_view(user)).bind(2, std::string_view(match)); });
        del_j("DELETE FROM short_term_journal WHERE user = ?1 AND (instr(user_text, ?2) > 0 OR instr(answer, ?2) > 0)",
              [&](Statement& s) { s.bind(1, std::string_view(user)).bind(2, std::string_view(match)); });
      } else {
        for (std::int64_t id : ids) {
          del_lt("DELETE FROM long_term_memories WHERE user = ?1 AND (id = ?2 OR source_id = ?2)",
                 [&](Statement& s) { s.bind(1, std::string_view(user)).bind(2, id); });
        }
      }
      if (has_long_term_) {  // a fact whose newer value was deleted is current again
        auto s = db_.prepare(
            "UPDATE long_term_memories SET superseded_by = 0 WHERE user = ?1 AND superseded_by != 0 AND superseded_by "
            "NOT IN (SELECT id FROM long_term_memories WHERE user = ?1)");
        s.bind(1, std::string_view(user));
        s.step("updating facts after forgetting");
      }
      tx.commit();
    }
    compact();
    return n;
  }

  /// VACUUM and checkpoint the WAL to zero length: deleted content leaves the main file, the free pages and the WAL.
  void compact() {
    db_.exec("VACUUM", "compacting the database (VACUUM)");
    db_.exec("PRAGMA wal_checkpoint(TRUNCATE)", "truncating the write-ahead log");
  }

  // ---- overview ----------------------------------------------------------------------------------------------------

  /// Users with memories (long-term or journal), sorted.
  std::vector<std::string> users() {
    std::set<std::string> u;
    if (has_long_term_) {
      auto s = db_.prepare("SELECT DISTINCT user FROM long_term_memories");
      while (s.step("listing users")) u.insert(s.column_text(0));
    }
    auto j = db_.prepare("SELECT DISTINCT user FROM short_term_journal");
    while (j.step("listing users")) u.insert(j.column_text(0));
    return {u.begin(), u.end()};
  }

  bool has_user(const std::string& user) {
    const auto u = users();
    return std::find(u.begin(), u.end(), user) != u.end();
  }

 private:
  /// A strategy column: the strategy's name, '' for none. An unknown name is refused (std::invalid_argument) naming
  /// the database and the row.
  std::optional<Strategy> strategy_column(const std::string& text, const std::string& row) const {
    return parse_optional_enum<Strategy>(text, "memory database '" + db_.path() + "', " + row);
  }

  /// The long_term schema version in the file (0: no long_term tables); refuses versions this lal cannot read.
  int long_term_version() {
    has_long_term_ = db_.has_table("long_term_memories");
    if (!has_long_term_) return 0;
    auto s = db_.prepare("SELECT version FROM lal_schema WHERE component = 'long_term'");
    const int version = s.step("reading the schema version") ? static_cast<int>(s.column_int(0)) : 0;
    if (version > kLongTermSchemaVersion || version < 1)
      throw DbError(DbErrorKind::other, "memory database '" + db_.path() + "' has long_term schema version " +
                                            std::to_string(version) + ", this lal reads versions 1 to " +
                                            std::to_string(kLongTermSchemaVersion) +
                                            "; use a matching lal or another file");
    return version;
  }

  void ensure_schema() {
    int version = long_term_version();
    const bool journal = db_.has_table("short_term_journal") && db_.has_table("memory_sessions");
    if (has_long_term_ && version == kLongTermSchemaVersion && journal) return;
    if (db_.read_only()) {
      if (has_long_term_ && version != kLongTermSchemaVersion)
        throw DbError(DbErrorKind::read_only,
                      "memory database '" + db_.path() + "' has schema version " + std::to_string(version) +
                          " and is read-only, so it cannot be upgraded to version " +
                          std::to_string(kLongTermSchemaVersion) + "; open it once writable (e.g. `lal memory stats`)");
      return;
    }
    Database::Transaction tx(db_);
    // Read again under the write lock: another process may have created or upgraded the tables meanwhile (two
    // processes upgrading a version-1 file at once must not both add the columns).
    version = long_term_version();
    db_.exec(R"sql(
      CREATE TABLE IF NOT EXISTS lal_schema(component TEXT PRIMARY KEY, version INTEGER NOT NULL);
      CREATE TABLE IF NOT EXISTS short_term_journal(
        id INTEGER PRIMARY KEY,
        user TEXT NOT NULL,
        session TEXT NOT NULL,
        user_text TEXT NOT NULL,
        answer TEXT NOT NULL,
        importance REAL NOT NULL,
        strategy TEXT NOT NULL,
        emotion TEXT NOT NULL,
        created_ns INTEGER NOT NULL,
        recalls INTEGER NOT NULL DEFAULT 0,
        consolidated INTEGER NOT NULL DEFAULT 0);
      CREATE INDEX IF NOT EXISTS short_term_by_session ON short_term_journal(session);
      CREATE TABLE IF NOT EXISTS memory_sessions(
        session TEXT PRIMARY KEY, host TEXT NOT NULL, pid INTEGER NOT NULL, boot_id TEXT NOT NULL,
        proc_start TEXT NOT NULL, started_ns INTEGER NOT NULL);
      INSERT OR REPLACE INTO lal_schema(component, version) VALUES ('short_term', 1);
    )sql",
             "creating the short-term journal tables");
    if (!has_long_term_) {
      db_.exec(R"sql(
        CREATE TABLE IF NOT EXISTS long_term_memories(
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
          recent_uses BLOB NOT NULL,
          slot TEXT NOT NULL DEFAULT '',
          superseded_by INTEGER NOT NULL DEFAULT 0,
          source_id INTEGER NOT NULL DEFAULT 0);
        CREATE INDEX IF NOT EXISTS long_term_by_user ON long_term_memories(user, kind);
        CREATE UNIQUE INDEX IF NOT EXISTS long_term_fact ON long_term_memories(user, text) WHERE kind = 'semantic';
      )sql",
               "creating the long_term tables");
    } else if (version == 1) {
      db_.exec(R"sql(
        ALTER TABLE long_term_memories ADD COLUMN slot TEXT NOT NULL DEFAULT '';
        ALTER TABLE long_term_memories ADD COLUMN superseded_by INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE long_term_memories ADD COLUMN source_id INTEGER NOT NULL DEFAULT 0;
      )sql",
               "upgrading the long_term tables from schema version 1");
    }
    db_.exec("INSERT OR REPLACE INTO lal_schema(component, version) VALUES ('long_term', " +
                 std::to_string(kLongTermSchemaVersion) + ")",
             "recording the schema version");
    tx.commit();
    has_long_term_ = true;
  }

  EpisodeWrite store_episode_in_transaction(const EpisodeInput& in, bool extract_facts) {
    EpisodeWrite w;
    const std::int64_t now = in.created_ns ? in.created_ns : wall_now_ns();
    auto add = [&](bool semantic, const std::string& text, const std::string& answer, const std::string& slot,
                   std::int64_t source) {
      StoredMemory m;
      m.user = in.user;
      m.semantic = semantic;
      m.text = text;
      m.answer = answer;
      m.importance = std::clamp(in.importance, 0.0, 1.0);
      m.strategy = in.strategy;
      m.emotion = in.emotion;
      m.uses = UseHistory::created_at(now);
      m.slot = slot;
      m.source_id = source;
      m.id = insert_raw(m);
      w.added.push_back(m);
      return m.id;
    };
    const std::int64_t episode_id = add(false, in.user_text, in.answer, {}, 0);
    if (!extract_facts) return w;
    for (const auto& fact : self_statements(in.user_text)) {
      if (std::any_of(w.added.begin(), w.added.end(),
                      [&](const StoredMemory& m) { return m.semantic && m.text == fact; }))
        continue;  // said twice in one breath: one fact
      auto known = db_.prepare(
          "SELECT id, use_count, recent_uses, created_ns, superseded_by FROM long_term_memories WHERE user = ?1 AND "
          "kind = 'semantic' AND text = ?2");
      known.bind(1, std::string_view(in.user)).bind(2, std::string_view(fact));
      const std::string slot = fact_slot(fact);
      if (known.step("looking up a fact")) {
        // The same fact stated again strengthens it instead of duplicating it; if it had been replaced by another
        // value, it is current again (「大阪に引っ越した」 … 「東京に住んでいます」 again).
        UseHistory h;
        const std::int64_t id = known.column_int(0);
        h.count = known.column_int(1);
        const auto [p, n] = known.column_blob(2);
        h.recent = decode_times(p, n);
        h.created_ns = known.column_int(3);
        const bool was_superseded = known.column_int(4) != 0;
        h.use(now);
        auto up = db_.prepare("UPDATE long_term_memories SET use_count = ?1, recent_uses = ?2 WHERE id = ?3");
        up.bind(1, h.count).bind_blob(2, encode_times(h.recent)).bind(3, id);
        up.step("strengthening a fact");
        w.rehearsed.emplace_back(id, h);
        if (was_superseded && !slot.empty()) supersede_slot(in.user, slot, id, w);
        continue;
      }
      const std::int64_t fact_id = add(true, fact, {}, slot, episode_id);
      if (!slot.empty()) supersede_slot(in.user, slot, fact_id, w);
    }
    return w;
  }

  /// Mark every other current fact of `slot` as superseded by `newest`; `newest` becomes current.
  void supersede_slot(const std::string& user, const std::string& slot, std::int64_t newest, EpisodeWrite& w) {
    auto q = db_.prepare(
        "SELECT id FROM long_term_memories WHERE user = ?1 AND kind = 'semantic' AND slot = ?2 AND id != ?3 AND "
        "superseded_by = 0");
    q.bind(1, std::string_view(user)).bind(2, std::string_view(slot)).bind(3, newest);
    std::vector<std::int64_t> old;
    while (q.step("finding the facts a new one updates")) old.push_back(q.column_int(0));
    auto up = db_.prepare("UPDATE long_term_memories SET superseded_by = ?1 WHERE id = ?2");
    for (std::int64_t id : old) {
      up.reset();
      up.bind(1, newest).bind(2, id);
      up.step("updating a fact");
      w.superseded.emplace_back(id, newest);
    }
    auto cur = db_.prepare("UPDATE long_term_memories SET superseded_by = 0 WHERE id = ?1");
    cur.bind(1, newest);
    cur.step("updating a fact");
  }

  void delete_journal_in_transaction(std::int64_t id) {
    auto s = db_.prepare("DELETE FROM short_term_journal WHERE id = ?1");
    s.bind(1, id);
    s.step("removing a short-term journal entry");
  }

  static std::string read_first_line(const char* file) {
    std::ifstream in(file);
    std::string line;
    std::getline(in, line);
    return line;
  }
  static std::string host_name() {
    char buf[256] = {};
    if (gethostname(buf, sizeof buf - 1) != 0) return "?";
    return buf;
  }
  static std::string boot_id() { return read_first_line("/proc/sys/kernel/random/boot_id"); }
  /// Field 22 of /proc/PID/stat (start time in clock ticks since boot), "" when the process does not exist.
  static std::string process_start(pid_t pid) {
    const std::string stat = read_first_line(("/proc/" + std::to_string(pid) + "/stat").c_str());
    const auto close = stat.rfind(')');
    if (close == std::string::npos) return {};
    std::size_t field = 3, pos = close + 1;  // pos: the space before `field`
    while (pos < stat.size() && field < 22) {
      pos = stat.find(' ', pos + 1);
      if (pos == std::string::npos) return {};
      ++field;
    }
    const auto end = stat.find(' ', pos + 1);
    return stat.substr(pos + 1, end == std::string::npos ? std::string::npos : end - pos - 1);
  }

  Database db_;
  bool has_long_term_ = false;
};

}  // namespace lal::memory
