// hippocampus: one Recollection per percept merging every tier by rank fusion, recall thoughts, the strategy
// suggestion from procedural memory, and an Episode for each finished turn — in the full memory pipeline.
#include "memory_harness.hpp"

using namespace lal;
using namespace lal::test;

namespace {
std::string memory_pipeline(const std::string& db) {
  return R"(
modules:
  source:
    plugin: test_memory_source
    outputs: {done: turn.done, emotion: emotion.state}
  working:
    plugin: working_memory
    inputs: {percept: turn.input, recall: memory.working.recall}
  short:
    plugin: short_term
    config: {importance_to_consolidate: 0.8}
    inputs: {episode: memory.episode, recall: memory.short.recall}
    outputs: {consolidate: memory.consolidate}
  long:
    plugin: long_term
    config: {path: ")" +
         db + R"("}
    inputs: {episode: memory.consolidate, recall: memory.long.recall}
  skills:
    plugin: procedural
    config: {path: ")" +
         db + R"(", direct_after: 2}
    inputs: {episode: memory.episode, recall: memory.procedural.recall}
  hippocampus:
    plugin: hippocampus
    config: {deadline_ms: 2000}
    inputs: {percept: turn.input, done: {topic: turn.done, feedback: true}, emotion: emotion.state}
    outputs:
      recollection: memory.recollection
      thought: thought.stream
      episode: memory.episode
      working: memory.working.recall
      short_term: memory.short.recall
      long_term: memory.long.recall
      procedural: memory.procedural.recall
)";
}

TurnDone done(const std::string& user_text, const std::string& answer, Strategy strategy = Strategy::deep,
              double confidence = 0.9) {
  TurnDone d;
  d.user_text = user_text;
  d.answer = answer;
  d.strategy = strategy;
  d.confidence = confidence;
  return d;
}
}  // namespace

TEST_CASE("the hippocampus merges every tier into one recollection, thinks each memory, stores each turn") {
  TempDir dir("hippocampus");
  MemoryPipeline p(memory_pipeline(dir.file("memory.db")));
  auto recollections = p.record<Recollection>("memory.recollection");
  auto thoughts = p.record<ThoughtChunk>("thought.stream");
  auto episodes = p.record<Episode>("memory.episode");

  // A finished turn becomes an episode; 「覚えて」 makes it important enough to be consolidated at once.
  p.publish("turn.done", done("東京の天気を覚えておいて", "晴れです"), "alice", 1);
  p.idle();
  REQUIRE(episodes->size() == 1);
  auto ep = episodes->all()[0];
  CHECK(ep->user_text == "東京の天気を覚えておいて");
  CHECK(ep->answer == "晴れです");
  CHECK(ep->strategy == Strategy::deep);
  CHECK(ep->confidence == doctest::Approx(0.9));
  CHECK(ep->importance == doctest::Approx(0.9));
  CHECK(ep.header.user == "alice");

  p.rt().submit("東京の天気の話をしたね", "alice");  // enters working memory too
  p.idle();
  const TurnId turn = p.rt().submit("東京の天気は？", "alice");
  p.idle();
  auto recs = recollections->for_turn(turn);
  REQUIRE(recs.size() == 1);  // exactly one per percept
  const Recollection& rec = *recs[0].body;
  CHECK(rec.cue == "東京の天気は？");
  std::string listing;
  for (const auto& i : rec.items) listing += i.tier + " " + std::to_string(i.score) + " " + i.text + "\n";
  INFO(listing);
  REQUIRE(rec.items.size() == 2);
  // The episode was returned first by both short_term and long_term: fused 1/(1+1) + 1/(1+1) = 1.0. The working
  // memory chunk was first in its tier only: 0.5.
  CHECK(rec.items[0].text == "東京の天気を覚えておいて → 晴れです");
  CHECK(rec.items[0].score == doctest::Approx(1.0));
  CHECK(rec.items[1].text == "東京の天気の話をしたね");
  CHECK(rec.items[1].tier == "working");
  CHECK(rec.items[1].score == doctest::Approx(0.5));
  // 「東京の天気を覚えておいて」 was another kind of request than 「東京の天気は？」: no strategy to suggest.
  CHECK(!rec.suggested_strategy);

  auto chunks = thoughts->for_turn(turn);
  REQUIRE(chunks.size() == rec.items.size());
  for (std::size_t i = 0; i < chunks.size(); ++i) {
    CHECK(chunks[i]->stage == Stage::recall);
    CHECK(chunks[i]->kind == ChunkKind::memory);
    CHECK(chunks[i]->text == (i ? " ／ " : "") + rec.items[i].text);  // later memories set off by " ／ "
    CHECK(chunks[i]->origin == "hippocampus");
    CHECK(chunks[i]->last == (i + 1 == chunks.size()));
  }

  // Another user remembers nothing of alice's: an empty recollection, and no recall thoughts at all.
  const TurnId bobs = p.rt().submit("東京の天気は？", "bob");
  p.idle();
  REQUIRE(recollections->for_turn(bobs).size() == 1);
  CHECK(recollections->for_turn(bobs)[0]->items.empty());
  CHECK(!recollections->for_turn(bobs)[0]->suggested_strategy);
  CHECK(thoughts->for_turn(bobs).empty());
}

TEST_CASE(
    "episode importance comes from self-disclosure, arousal and explicit requests; cancelled turns are not stored") {
  TempDir dir("importance");
  MemoryPipeline p(memory_pipeline(dir.file("memory.db")));
  auto episodes = p.record<Episode>("memory.episode");

  p.publish("turn.done", done("今日は普通の日", "そうですね"), "carol", 1);
  p.idle();
  EmotionState excited;
  excited.arousal = 1.0;
  excited.label = "surprise";
  p.publish("emotion.state", excited, "carol");
  p.idle();
  p.publish("turn.done", done("宝くじが当たった！", "すごい！"), "carol", 2);
  TurnDone cancelled = done("途中でやめた", "");
  cancelled.cancelled = true;
  p.publish("turn.done", cancelled, "carol", 3);
  p.publish("turn.done", done("Please remember my sister is called Hana", "I will"), "dave", 4);
  p.idle();

  auto got = episodes->all();
  REQUIRE(got.size() == 3);
  CHECK(got[0]->importance == doctest::Approx(0.3));  // discloses nothing: base_importance
  CHECK(got[1]->importance == doctest::Approx(0.6));  // 0.3 + 0.3 × arousal 1.0
  CHECK(got[1]->emotion == "surprise");
  // "please remember" (0.45) + relation "sister" (0.30) + name "my … is called"? no: + self "my" (0.10) + base 0.3
  CHECK(got[2]->importance == doctest::Approx(1.0));
  CHECK(got[2].header.user == "dave");
}

TEST_CASE("familiar requests: after two confident deep answers the recollection suggests direct") {
  TempDir dir("familiar");
  MemoryPipeline p(memory_pipeline(dir.file("memory.db")));
  auto recollections = p.record<Recollection>("memory.recollection");
  p.publish("turn.done", done("12×3は？", "36", Strategy::deep, 0.95), "alice", 1);
  p.publish("turn.done", done("7×8は？", "56", Strategy::deep, 0.85), "alice", 2);
  p.idle();
  const TurnId turn = p.rt().submit("4×9は？", "alice");
  p.idle();
  auto recs = recollections->for_turn(turn);
  REQUIRE(recs.size() == 1);
  CHECK(recs[0]->suggested_strategy == Strategy::direct);
  CHECK(recs[0]->strategy_confidence == doctest::Approx(0.9));
}
