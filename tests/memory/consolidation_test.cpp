// Issue 9 and issue 14 item 4: importance from self-disclosure, facts that update, recall that does not lock in,
// the short-term journal (sleep at stop, recovery after a crash), and writes that are never dropped (a locked
// database, two processes writing one file).
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <random>
#include <set>

#include "lal/memory/importance.hpp"
#include "lal/memory/recall.hpp"
#include "lal/memory/write_queue.hpp"
#include "memory_harness.hpp"

using namespace lal;
using namespace lal::test;
using namespace lal::memory;

namespace {

constexpr std::int64_t kSec = 1'000'000'000LL;
constexpr std::int64_t kDay = 86400 * kSec;
constexpr std::int64_t kT0 = 1'767'225'600LL * kSec;  // 2026-01-01

MemoryStore open_store(const std::string& path, int busy_ms = 2000) {
  DbOptions o;
  o.path = path;
  o.busy_timeout_ms = busy_ms;
  return MemoryStore(o);
}

EpisodeInput said(const std::string& user, const std::string& text, std::int64_t t, double importance = -1) {
  EpisodeInput e;
  e.user = user;
  e.user_text = text;
  e.importance = importance >= 0 ? importance : score_importance(text).score;
  e.created_ns = t;
  return e;
}

UserIndex index_of(MemoryStore& s, const std::string& user) {
  UserIndex index;
  for (auto& m : s.load(user)) index.add(std::move(m));
  return index;
}

std::int64_t count(const std::string& db, const std::string& sql) {
  sqlite3* h = nullptr;
  REQUIRE(sqlite3_open(db.c_str(), &h) == SQLITE_OK);
  sqlite3_stmt* s = nullptr;
  REQUIRE(sqlite3_prepare_v2(h, sql.c_str(), -1, &s, nullptr) == SQLITE_OK);
  REQUIRE(sqlite3_step(s) == SQLITE_ROW);
  const auto n = sqlite3_column_int64(s, 0);
  sqlite3_finalize(s);
  sqlite3_close(h);
  return n;
}

/// Run `body(i)` in `n` child processes at once; each child's exit status is body's return value (3 if it throws).
/// Checks that every child exited with 0.
template <class Body>
void in_processes(int n, Body body) {
  std::vector<pid_t> children;
  for (int p = 0; p < n; ++p) {
    const pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) {
      int rc = 3;
      try {
        rc = body(p);
      } catch (const std::exception& e) {
        std::fprintf(stderr, "child %d: %s\n", p, e.what());
      } catch (...) {
      }
      ::_exit(rc);
    }
    children.push_back(child);
  }
  for (pid_t c : children) {
    int status = 0;
    REQUIRE(::waitpid(c, &status, 0) == c);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
  }
}

}  // namespace

TEST_CASE("importance: self-disclosure counts, small talk does not, asking is not telling") {
  const auto run1 = score_importance("私の名前は太郎です。好きな食べ物はカレーです。");
  INFO(run1.score);
  CHECK(run1.score >= 0.8);  // consolidated at once by short_term's default importance_to_consolidate
  CHECK(std::count(run1.reasons.begin(), run1.reasons.end(), "name") == 1);
  CHECK(std::count(run1.reasons.begin(), run1.reasons.end(), "preference") == 1);
  CHECK(score_importance("こんにちは").score == doctest::Approx(0.3));
  CHECK(score_importance("thanks!").score == doctest::Approx(0.3));
  CHECK(score_importance("My sister lives in Kyoto and I'm worried about her.").score >= 0.8);
  CHECK(score_importance("来週、大阪に引っ越す予定です。").score > 0.6);  // plan + place
  // Pets and possessions are told once and kept: over short_term's default keep_importance (0.35), subject-less too.
  for (const char* pets : {"猫を二匹飼っています。", "I have two dogs.", "車を持っています。"}) {
    const auto s = score_importance(pets);
    INFO(pets);
    CHECK(s.score > 0.35 + 1e-9);
    CHECK(std::count(s.reasons.begin(), s.reasons.end(), "belongings") == 1);
  }
  CHECK(score_importance("猫は好きですか？").score < score_importance("猫を飼っています。").score);
  // A question about a preference discloses less than a statement of it.
  CHECK(score_importance("私の好きな食べ物を覚えていますか？").score <
        score_importance("私の好きな食べ物はカレーです。").score);
  // 「覚えていますか」 asks; 「覚えておいて」 requests.
  const auto ask = score_importance("覚えていますか？");
  CHECK(std::find(ask.reasons.begin(), ask.reasons.end(), "remember") == ask.reasons.end());
  const auto req = score_importance("これを覚えておいてね。");
  CHECK(std::find(req.reasons.begin(), req.reasons.end(), "remember") != req.reasons.end());
}

TEST_CASE("facts: slots, subject-less Japanese, relations keep their own slots") {
  CHECK(fact_slot("東京に住んでいます。") == "residence");
  CHECK(fact_slot("大阪に引っ越しました。") == "residence");
  CHECK(fact_slot("I moved to Osaka last week.") == "residence");
  CHECK(fact_slot("私の名前は太郎です。") == "name");
  CHECK(fact_slot("妹の名前は花子です。") == "妹.name");
  CHECK(fact_slot("My sister's name is Hannah.") == "sister.name");
  CHECK(fact_slot("好きな食べ物はカレーです。") == "favorite_food");
  CHECK(fact_slot("今日は晴れです。").empty());
  CHECK(self_statements("大阪に引っ越しました。どこがいいですか？") ==
        std::vector<std::string>{"大阪に引っ越しました。"});
}

TEST_CASE("facts update: the newest value first, the old one kept as history with its time and source") {
  TempDir dir("update");
  auto store = open_store(dir.file("m.db"));
  store.store_episode(said("alice", "東京に住んでいます。", kT0), true);
  store.store_episode(said("alice", "大阪に引っ越しました。", kT0 + 30 * kDay), true);
  auto rows = store.load("alice");
  std::int64_t old_fact = 0, new_fact = 0, new_episode = 0;
  for (const auto& m : rows) {
    if (m.semantic && m.text == "東京に住んでいます。") old_fact = m.id;
    if (m.semantic && m.text == "大阪に引っ越しました。") new_fact = m.id;
    if (!m.semantic && m.text.find("大阪") != std::string::npos) new_episode = m.id;
  }
  REQUIRE(old_fact);
  REQUIRE(new_fact);
  for (const auto& m : rows) {
    if (m.id == old_fact) CHECK(m.superseded_by == new_fact);  // history, not deleted
    if (m.id == new_fact) {
      CHECK(m.superseded_by == 0);
      CHECK(m.source_id == new_episode);  // the episode it was stated in
      CHECK(m.uses.created_ns == kT0 + 30 * kDay);
    }
  }
  const auto index = index_of(store, "alice");
  for (const char* cue : {"どこに住んでいますか？", "私の住まいは東京でしたっけ？"}) {
    const auto r = index.recall(cue, 5, kT0 + 40 * kDay, RecallSettings{});
    INFO(cue);
    REQUIRE(!r.empty());
    CHECK(r[0].memory->row.id == new_fact);
    CHECK(r[0].text == "大阪に引っ越しました。（以前: 東京に住んでいます。）");
    for (const auto& x : r)
      if (x.memory->row.id == old_fact) CHECK(x.text.find("更新済み") != std::string::npos);
  }
}

TEST_CASE("recall does not lock in: 200 questions over 1000 memories, rehearsal on") {
  TempDir dir("lockin");
  auto store = open_store(dir.file("m.db"));
  // 1000 memories: 200 distinct facts (each the evidence of one question) among 800 of shared everyday words.
  const char* things[] = {"自転車", "傘", "時計", "辞書", "鍵", "財布", "眼鏡", "帽子", "手帳", "鞄"};
  const char* places[] = {"駅",     "図書館", "公園", "会社", "学校", "病院", "銀行", "空港", "港", "市場",
                          "美術館", "映画館", "書店", "花屋", "薬局", "神社", "寺",   "城",   "橋", "川"};
  std::vector<std::pair<std::string, std::string>> qa;  // question, evidence text
  {
    Database::Transaction tx(store.db());
    int n = 0;
    for (int i = 0; i < 10; ++i)
      for (int j = 0; j < 20; ++j) {
        const std::string fact = std::string("私は") + things[i] + "を" + places[j] + "に置き忘れました。";
        qa.emplace_back(std::string(places[j]) + "に" + things[i] + "を置き忘れたのはいつ？", fact);
        StoredMemory m;
        m.user = "u";
        m.text = fact;
        m.importance = 0.5;
        m.uses = UseHistory::created_at(kT0 + (n++) * 60 * kSec);
        store.insert_raw(m);
      }
    for (int k = 0; k < 800; ++k) {
      StoredMemory m;
      m.user = "u";
      m.text = std::string("今日は") + places[k % 20] + "の近くで" + things[(k / 20) % 10] + "の話をしました。" +
               std::to_string(k);
      m.importance = 0.3;
      m.uses = UseHistory::created_at(kT0 + (n++) * 60 * kSec);
      store.insert_raw(m);
    }
    tx.commit();
  }
  UserIndex index = index_of(store, "u");
  REQUIRE(index.size() == 1000);
  std::mt19937 rng(3);
  std::shuffle(qa.begin(), qa.end(), rng);
  std::map<std::int64_t, int> appearances;
  std::vector<std::int64_t> previous;
  double jaccard = 0;
  int first = 0;
  std::int64_t now = kT0 + 30 * kDay;
  for (const auto& [question, evidence] : qa) {
    now += 2 * kSec;  // asked in a row, two seconds apart
    const auto r = index.recall(question, 10, now, RecallSettings{});
    REQUIRE(!r.empty());
    if (r[0].memory->row.text == evidence)
      ++first;
    else
      MESSAGE("for '" << question << "' first came '" << r[0].memory->row.text << "'");
    for (const auto& [id, h] : rehearsals(r, now)) index.set_uses(id, h);  // recall is rehearsal
    std::vector<std::int64_t> ids;
    for (const auto& x : r) ids.push_back(x.memory->row.id), ++appearances[x.memory->row.id];
    if (!previous.empty()) {
      std::set<std::int64_t> a(previous.begin(), previous.end()), b(ids.begin(), ids.end()), u(a);
      u.insert(b.begin(), b.end());
      std::size_t common = 0;
      for (auto x : a) common += b.count(x);
      jaccard += static_cast<double>(common) / static_cast<double>(u.size());
    }
    previous = ids;
  }
  int most = 0;
  for (const auto& [id, c] : appearances) most = std::max(most, c);
  MESSAGE("evidence first: " << first << "/200; mean consecutive top-10 Jaccard " << jaccard / 199
                             << "; the most frequent memory appeared in " << most << " of 200 top-10s");
  CHECK(first == 200);          // each question's own evidence ranks first, after all the others were asked
  CHECK(jaccard / 199 < 0.25);  // consecutive questions do not get the same top 10
  CHECK(most <= 40);            // no memory crowds into every answer
}

TEST_CASE("temporal cues and a second hop") {
  TempDir dir("time");
  auto store = open_store(dir.file("m.db"));
  store.store_episode(said("a", "今日は水族館に行きました。", kT0), true);
  store.store_episode(said("a", "今日は動物園に行きました。", kT0 + 5 * kDay), true);
  store.store_episode(said("a", "今日は美術館に行きました。", kT0 + 9 * kDay), true);
  store.store_episode(said("a", "妹の名前は花子です。", kT0 + 1 * kDay), true);
  store.store_episode(said("a", "花子は最近パン屋で働き始めました。", kT0 + 6 * kDay), true);
  const auto index = index_of(store, "a");
  const std::int64_t now = kT0 + 10 * kDay;
  auto top = [&](const std::string& cue) {
    const auto r = index.recall(cue, 3, now, RecallSettings{});
    for (const auto& x : r)
      MESSAGE(cue << " → " << x.text << " score " << x.score << " bm25 " << x.bm25 << " cos " << x.cosine
                  << (x.in_time_window ? std::string(" in window") : std::string()));
    return r.at(0).memory->row.text;
  };
  CHECK(top("5日前に何をしましたか？") == "今日は動物園に行きました。");
  CHECK(top("What did I do 10 days ago?") == "今日は水族館に行きました。");
  CHECK(top("前回話したとき、何をしていましたか？") == "今日は美術館に行きました。");
  CHECK(top("昨日は何をした？") == "今日は美術館に行きました。");
  const auto hop = index.recall("妹はどこで働いていますか？", 5, now, RecallSettings{});
  bool found_work = false;
  for (const auto& r : hop) found_work = found_work || r.memory->row.text.find("パン屋") != std::string::npos;
  CHECK(found_work);  // 妹 → 花子 → パン屋
}

namespace {
std::string journal_pipeline(const std::string& db, const std::string& extra = {}) {
  return R"(
modules:
  source:
    plugin: test_memory_source
    outputs: {episode: memory.episode}
  stm:
    plugin: short_term
    config: {path: ")" +
         db + "\"" + extra + R"(}
    inputs: {episode: memory.episode, recall: memory.short.recall}
    outputs: {consolidate: memory.consolidate}
  ltm:
    plugin: long_term
    config: {path: ")" +
         db + R"("}
    inputs: {episode: memory.consolidate, recall: memory.long.recall}
)";
}
}  // namespace

TEST_CASE("sleep at the end of a session: short-term episodes are consolidated by importance, small talk forgotten") {
  TempDir dir("sleep");
  const std::string db = dir.file("m.db");
  {
    MemoryPipeline p(journal_pipeline(db));
    p.publish("memory.episode", episode("週末は京都に行く予定です。", "いいですね", 0.55), "alice");
    p.publish("memory.episode", episode("こんにちは", "こんにちは！", 0.3), "alice");
    p.idle();
    CHECK(count(db, "SELECT count(*) FROM short_term_journal") == 2);  // journaled on arrival
    CHECK(count(db, "SELECT count(*) FROM long_term_memories") == 0);
    p.stop();  // exit, EOF, SIGTERM all end here
  }
  CHECK(count(db, "SELECT count(*) FROM short_term_journal") == 0);
  CHECK(
      count(
          db,
          "SELECT count(*) FROM long_term_memories WHERE kind = 'episodic' AND text = '週末は京都に行く予定です。'") ==
      1);
  CHECK(count(db, "SELECT count(*) FROM long_term_memories WHERE text = 'こんにちは'") == 0);  // forgotten by policy
  MemoryPipeline again(journal_pipeline(db));
  CHECK(has_text(again.recall("memory.long.recall", "alice", "京都に行く予定"), "京都"));
}

TEST_CASE("after a crash (kill -9), the next start consolidates what the dead session left in the journal") {
  TempDir dir("crash");
  const std::string db = dir.file("m.db");
  {
    auto store = open_store(db);  // creates the tables
  }
  // A child process journals two episodes and dies without stopping anything (as kill -9 would leave it).
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    auto store = open_store(db);
    store.register_session("crashed-session");
    store.journal_add("crashed-session", said("alice", "週末は京都に行く予定です。", kT0, 0.55));
    store.journal_add("crashed-session", said("alice", "ふーん", kT0 + kSec, 0.3));
    ::_exit(0);  // no stop, no destructors: the session is never ended
  }
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  REQUIRE(count(db, "SELECT count(*) FROM short_term_journal") == 2);
  REQUIRE(count(db, "SELECT count(*) FROM memory_sessions WHERE session = 'crashed-session'") == 1);
  {
    MemoryPipeline p(journal_pipeline(db));  // short_term's start finds the dead session
    CHECK(count(db, "SELECT count(*) FROM memory_sessions WHERE session = 'crashed-session'") == 0);
    CHECK(count(db, "SELECT count(*) FROM short_term_journal WHERE session = 'crashed-session'") == 0);
    CHECK(has_text(p.recall("memory.long.recall", "alice", "京都に行く予定"), "京都に行く予定"));
    CHECK(count(db, "SELECT count(*) FROM long_term_memories WHERE text = 'ふーん'") == 0);
  }
}

TEST_CASE("a locked database delays writes, never drops them; at shutdown they wait in the pending file") {
  TempDir dir("queue");
  const std::string db = dir.file("m.db");
  auto store = open_store(db, 20);
  std::vector<std::string> logs;
  WriteQueueSettings settings;
  settings.capacity = 4;
  settings.retries = 1;
  settings.full_wait_ms = 200;
  settings.shutdown_wait_ms = 100;
  WriteQueue q(store, settings, [&](bool, const std::string& s) { logs.push_back(s); });
  auto applied = [](const PendingWrite&, const EpisodeWrite*) {};
  sqlite3* other = nullptr;
  REQUIRE(sqlite3_open(db.c_str(), &other) == SQLITE_OK);
  REQUIRE(sqlite3_exec(other, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr) == SQLITE_OK);
  PendingWrite w;
  w.input = said("alice", "鍵は玄関の棚にあります。", kT0);
  q.submit(w, applied);
  CHECK(q.size() == 1);  // queued, not dropped
  REQUIRE(!logs.empty());
  CHECK(logs.back().find("queued, retrying") != std::string::npos);
  REQUIRE(sqlite3_exec(other, "COMMIT", nullptr, nullptr, nullptr) == SQLITE_OK);
  CHECK(q.flush(applied));
  CHECK(count(db, "SELECT count(*) FROM long_term_memories WHERE text = '鍵は玄関の棚にあります。'") == 1);

  // Locked until the end: the memory goes to the pending file, the failure is reported, the next open stores it.
  REQUIRE(sqlite3_exec(other, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr) == SQLITE_OK);
  w.input = said("alice", "傘は車の中です。", kT0 + kSec);
  q.submit(w, applied);
  CHECK_FALSE(q.finish(applied));
  CHECK(logs.back().find("kept in") != std::string::npos);
  CHECK(fs::exists(pending_file_of(store.path())));
  REQUIRE(sqlite3_exec(other, "COMMIT", nullptr, nullptr, nullptr) == SQLITE_OK);
  sqlite3_close(other);
  auto reopened = open_store(db);
  CHECK(recover_pending(reopened, [](const std::string&) {}) == 1);
  CHECK_FALSE(fs::exists(pending_file_of(store.path())));
  CHECK(count(db, "SELECT count(*) FROM long_term_memories WHERE text = '傘は車の中です。'") == 1);
}

TEST_CASE("two processes writing one database at once: nothing is lost") {
  TempDir dir("two");
  const std::string db = dir.file("m.db");
  { auto store = open_store(db); }
  constexpr int kEach = 150;
  in_processes(2, [&](int p) {
    auto store = open_store(db, 5);  // a short busy timeout: contention is certain, the queue must retry
    WriteQueueSettings settings;
    settings.capacity = 8;
    settings.retries = 6;
    settings.full_wait_ms = 30000;
    settings.shutdown_wait_ms = 30000;
    WriteQueue q(store, settings, [](bool, const std::string&) {});
    auto applied = [](const PendingWrite&, const EpisodeWrite*) {};
    for (int i = 0; i < kEach; ++i) {
      PendingWrite w;
      w.input = said(p == 0 ? "alice" : "bob", "記録 " + std::to_string(p) + "-" + std::to_string(i) + "。",
                     kT0 + i * kSec, 0.5);
      w.extract_facts = false;
      q.submit(std::move(w), applied);
    }
    return q.finish(applied) ? 0 : 2;
  });
  CHECK(count(db, "SELECT count(*) FROM long_term_memories WHERE user = 'alice'") == kEach);
  CHECK(count(db, "SELECT count(*) FROM long_term_memories WHERE user = 'bob'") == kEach);
  CHECK_FALSE(fs::exists(pending_file_of(db)));
}

TEST_CASE("a version-1 database is upgraded once, even when several processes open it at the same moment") {
  TempDir dir("v1");
  const std::string db = dir.file("m.db");
  {
    sqlite3* h = nullptr;
    REQUIRE(sqlite3_open(db.c_str(), &h) == SQLITE_OK);
    const char* v1 = R"sql(
      CREATE TABLE lal_schema(component TEXT PRIMARY KEY, version INTEGER NOT NULL);
      CREATE TABLE long_term_memories(
        id INTEGER PRIMARY KEY, user TEXT NOT NULL, kind TEXT NOT NULL CHECK (kind IN ('episodic', 'semantic')),
        text TEXT NOT NULL, answer TEXT NOT NULL DEFAULT '', keys TEXT NOT NULL, embedding BLOB NOT NULL,
        importance REAL NOT NULL, strategy TEXT NOT NULL DEFAULT '', emotion TEXT NOT NULL DEFAULT '',
        created_ns INTEGER NOT NULL, use_count INTEGER NOT NULL, recent_uses BLOB NOT NULL);
      INSERT INTO lal_schema VALUES ('long_term', 1);
      INSERT INTO long_term_memories(user, kind, text, keys, embedding, importance, created_ns, use_count,
                                     recent_uses)
        VALUES ('alice', 'episodic', '猫を飼っています。', '', x'', 0.8, 1767225600000000000, 0, x'');
    )sql";
    REQUIRE(sqlite3_exec(h, v1, nullptr, nullptr, nullptr) == SQLITE_OK);
    sqlite3_close(h);
  }
  in_processes(4, [&](int) {
    auto store = open_store(db, 10000);
    return 0;
  });
  CHECK(count(db, "SELECT version FROM lal_schema WHERE component = 'long_term'") == 2);
  CHECK(count(db, "SELECT count(*) FROM long_term_memories WHERE slot = '' AND superseded_by = 0") == 1);
  auto store = open_store(db);
  const auto alice = store.load("alice");
  REQUIRE(alice.size() == 1);
  CHECK(alice[0].text == "猫を飼っています。");
}

TEST_CASE("strategy columns keep their names: rows written before the enums load, unknown names are refused") {
  TempDir dir("strategy");
  const std::string db = dir.file("m.db");
  auto exec = [&](const char* sql) {
    sqlite3* h = nullptr;
    REQUIRE(sqlite3_open(db.c_str(), &h) == SQLITE_OK);
    REQUIRE(sqlite3_exec(h, sql, nullptr, nullptr, nullptr) == SQLITE_OK);
    sqlite3_close(h);
  };
  {
    auto store = open_store(db);
    EpisodeInput deep = said("alice", "猫を飼っています。", kT0);
    deep.strategy = Strategy::deep;
    store.store_episode(deep, false);
    store.store_episode(said("alice", "犬も好きです。", kT0 + kDay), false);  // no strategy
    EpisodeInput direct = said("alice", "こんにちは", kT0 + 2 * kDay);
    direct.strategy = Strategy::direct;
    store.journal_add("s1", direct);
  }
  // On disk: the names an earlier lal wrote and reads ('' for none).
  CHECK(count(db, "SELECT count(*) FROM long_term_memories WHERE strategy = 'deep'") == 1);
  CHECK(count(db, "SELECT count(*) FROM long_term_memories WHERE strategy = ''") == 1);
  CHECK(count(db, "SELECT count(*) FROM short_term_journal WHERE strategy = 'direct'") == 1);
  // Rows as an earlier lal wrote them read back as enums.
  exec("UPDATE long_term_memories SET strategy = 'direct' WHERE strategy = ''");
  {
    auto store = open_store(db);
    const auto alice = store.load("alice");
    REQUIRE(alice.size() == 2);
    CHECK(alice[0].strategy == Strategy::deep);
    CHECK(alice[1].strategy == Strategy::direct);
    const auto journal = store.journal("s1");
    REQUIRE(journal.size() == 1);
    CHECK(journal[0].episode.strategy == Strategy::direct);
  }
  // A name this lal does not know is refused, naming the database, the table and the row.
  exec("UPDATE long_term_memories SET strategy = 'fast' WHERE strategy = 'direct'");
  auto store = open_store(db);
  CHECK_THROWS_WITH_AS(store.load("alice"),
                       doctest::Contains("m.db', long_term_memories row 2: unknown strategy 'fast' (expected direct "
                                         "or deep)"),
                       std::invalid_argument);
}
