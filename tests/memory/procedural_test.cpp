// procedural: recurring requests and the strategy that worked; after repeated confident deep answers the tier
// suggests answering directly. Persistent and per user.
#include <sqlite3.h>

#include "memory_harness.hpp"

using namespace lal;
using namespace lal::test;

namespace {
std::string procedural_pipeline(const std::string& path, const std::string& extra = {}) {
  return R"(
modules:
  source:
    plugin: test_memory_source
    outputs: {episode: memory.episode}
  proc:
    plugin: procedural
    config: {path: ")" +
         path + "\"" + extra + R"(}
    inputs: {episode: memory.episode, recall: memory.procedural.recall}
)";
}

std::pair<std::string, double> suggestion(MemoryPipeline& p, const std::string& user, const std::string& cue) {
  auto r = p.recall("memory.procedural.recall", user, cue);
  if (r.items.empty()) return {"", 0.0};
  REQUIRE(r.items.size() == 1);
  CHECK(r.items[0].kind == "procedural");
  CHECK(r.items[0].tier == "procedural");
  return {r.items[0].text, r.items[0].score};
}
}  // namespace

TEST_CASE("after repeated confident deep answers to one kind of request, procedural memory suggests direct") {
  TempDir dir("procedural");
  const std::string db = dir.file("memory.db");
  {
    MemoryPipeline p(procedural_pipeline(db));
    CHECK(suggestion(p, "alice", "12+35は？").first.empty());  // unfamiliar

    p.publish("memory.episode", episode("12+35は？", "47", 0.5, Strategy::deep, 0.3),
              "alice");  // not confident: no success
    p.idle();
    CHECK(suggestion(p, "alice", "7+8は？").first.empty());

    p.publish("memory.episode", episode("12+35は？", "47", 0.5, Strategy::deep, 0.9), "alice");
    p.idle();
    auto s1 = suggestion(p, "alice", "7+8は？");  // numbers are masked: the same pattern
    CHECK(s1.first == "deep");
    CHECK(s1.second == doctest::Approx(0.9));

    p.publish("memory.episode", episode("3+4は", "7", 0.5, Strategy::deep, 0.8), "alice");
    p.idle();
    auto s2 = suggestion(p, "alice", "100+200は？");
    CHECK(s2.first == "direct");  // familiar: skip deep analysis
    CHECK(s2.second == doctest::Approx(0.85));
    CHECK(suggestion(p, "alice", "東京の天気は？").first.empty());  // another request entirely
    CHECK(suggestion(p, "bob", "7+8は？").first.empty());           // another user
    p.stop();
  }
  {
    // On disk the strategies keep the names earlier versions wrote and read: 'direct' and 'deep'.
    sqlite3* h = nullptr;
    REQUIRE(sqlite3_open(db.c_str(), &h) == SQLITE_OK);
    sqlite3_stmt* st = nullptr;
    REQUIRE(sqlite3_prepare_v2(h, "SELECT group_concat(strategy) FROM procedural_outcomes", -1, &st, nullptr) ==
            SQLITE_OK);
    REQUIRE(sqlite3_step(st) == SQLITE_ROW);
    CHECK(std::string(reinterpret_cast<const char*>(sqlite3_column_text(st, 0))) == "deep");
    sqlite3_finalize(st);
    sqlite3_close(h);
  }
  {
    MemoryPipeline p(procedural_pipeline(db));  // learned skills persist
    CHECK(suggestion(p, "alice", "9+9は？").first == "direct");
    // The shortcut failing sends the request back to deep analysis.
    p.publish("memory.episode", episode("9+9は？", "17", 0.5, Strategy::direct, 0.2), "alice");
    p.idle();
    auto s = suggestion(p, "alice", "9+9は？");
    CHECK(s.first == "deep");
    CHECK(s.second == doctest::Approx(0.8));
    // The /memory view lists the pattern with its template.
    auto all = p.recall("memory.procedural.recall", "alice", "");
    INFO(dump(all));
    REQUIRE(all.items.size() == 1);
    CHECK(all.items[0].text == "deep ← #+#は");
  }
}

TEST_CASE("procedural memory recognises paraphrases through the n-gram embedding") {
  TempDir dir("paraphrase");
  MemoryPipeline p(procedural_pipeline(dir.file("memory.db"), ", direct_after: 1"));
  p.publish("memory.episode", episode("今日の東京の天気を教えてください", "晴れ", 0.5, Strategy::deep, 0.9), "alice");
  p.idle();
  CHECK(suggestion(p, "alice", "今日の東京の天気を教えて").first == "direct");
  CHECK(suggestion(p, "alice", "量子力学について説明して").first.empty());
}
