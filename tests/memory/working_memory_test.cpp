// working_memory: capacity, displacement by ACT-R activation (rehearsed chunks survive), per-user partitions.
#include "memory_harness.hpp"

using namespace lal;
using namespace lal::test;

namespace {
const char* kWorking = R"(
modules:
  wm:
    plugin: working_memory
    config: {capacity: 3}
    inputs: {percept: turn.input, recall: memory.working.recall}
)";

std::vector<std::string> held(MemoryPipeline& p, const std::string& user) {
  std::vector<std::string> out;
  for (const auto& i : p.recall("memory.working.recall", user, "", 100).items) out.push_back(i.text);
  std::sort(out.begin(), out.end());
  return out;
}

void say(MemoryPipeline& p, const std::string& text, const std::string& user) {
  p.rt().submit(text, user);
  p.idle();
  std::this_thread::sleep_for(5ms);  // distinct ages, so activations differ by more than rounding
}
}  // namespace

TEST_CASE("working memory holds `capacity` chunks and displaces the least active one") {
  MemoryPipeline p(kWorking);
  say(p, "東京の天気", "alice");
  say(p, "大阪のラーメン", "alice");
  say(p, "京都のお寺", "alice");
  CHECK(held(p, "alice").size() == 3);

  // Rehearse the oldest chunk: recalling it is a use, so it is now more active than the middle one.
  auto r = p.recall("memory.working.recall", "alice", "天気はどう？");
  REQUIRE_MESSAGE(r.items.size() == 1, dump(r));
  CHECK(r.items[0].text == "東京の天気");
  std::this_thread::sleep_for(5ms);

  say(p, "北海道の雪", "alice");
  // 大阪 was neither the newest nor rehearsed: it is the one displaced. 東京 (oldest, but rehearsed) stays.
  CHECK(held(p, "alice") == std::vector<std::string>{"京都のお寺", "北海道の雪", "東京の天気"});

  say(p, "沖縄の海", "alice");  // now 京都 is the least active (東京's recall keeps it above)
  CHECK(held(p, "alice") == std::vector<std::string>{"北海道の雪", "東京の天気", "沖縄の海"});
}

TEST_CASE("working memory is per user: one user's chunks neither displace nor appear in another's") {
  MemoryPipeline p(kWorking);
  say(p, "アリスの秘密の計画", "alice");
  for (const char* t : {"ボブの一", "ボブの二", "ボブの三", "ボブの四"}) say(p, t, "bob");
  CHECK(held(p, "alice") == std::vector<std::string>{"アリスの秘密の計画"});
  CHECK(held(p, "bob").size() == 3);
  CHECK_FALSE(has_text(p.recall("memory.working.recall", "bob", "秘密の計画"), "アリス"));
}

TEST_CASE("working memory capacity is configurable (7±2)") {
  for (int capacity : {5, 9}) {
    MemoryPipeline p(std::string(kWorking).replace(std::string(kWorking).find("capacity: 3"), 11,
                                                   "capacity: " + std::to_string(capacity)));
    for (int i = 0; i < 12; ++i) p.rt().submit("項目" + std::to_string(i), "alice");
    p.idle();
    CHECK(held(p, "alice").size() == static_cast<std::size_t>(capacity));
  }
}
