// Pipelines: validation errors with file:line:col, real plugins loaded from the build tree, ABI refusal, failure
// policies, cancellation, and the hello pipeline end to end.
#include <doctest/doctest.h>

#include <mutex>
#include <sstream>
#include <thread>

#include "lal/runtime/pipeline.hpp"
#include "lal/runtime/runtime.hpp"
#include "pipeline_harness.hpp"

using namespace lal;
using namespace lal::runtime;
using namespace std::chrono_literals;

namespace {

const std::vector<fs::path> kDirs = {LAL_BUILD_PLUGIN_DIR, LAL_TEST_PLUGIN_DIR};

PipelineLoad load(const std::string& yaml) { return load_pipeline_text(yaml, "test.yaml", kDirs); }

/// True when some error is at `line` and contains every fragment.
bool has_error(const PipelineLoad& l, int line, std::initializer_list<const char*> fragments) {
  for (const auto& e : l.errors) {
    if (e.where.line != line) continue;
    bool all = true;
    for (const char* f : fragments) all = all && e.message.find(f) != std::string::npos;
    if (all) return true;
  }
  return false;
}

std::string dump(const PipelineLoad& l) { return lal::test::dump_errors(l); }

struct Harness : lal::test::PipelineHarness {
  explicit Harness(const std::string& yaml) : PipelineHarness(yaml, kDirs) {}
};

const char* kHello = R"(
modules:
  memory:
    plugin: working_memory
    inputs: {percept: turn.input, recall: memory.recall}
  intuition:
    plugin: first_impression
    inputs: {percept: turn.input}
    outputs: {recall: memory.recall, thought: thought.stream}
  speaker:
    plugin: transcript
    inputs: {thought: thought.stream}
)";

}  // namespace

TEST_CASE("a valid pipeline loads with defaults filled in") {
  auto l = load(kHello);
  REQUIRE_MESSAGE(l.ok(), dump(l));
  REQUIRE(l.spec.modules.size() == 3);
  CHECK(l.spec.modules[0].config.at("capacity").as_int() == 7);  // declared default
  CHECK(l.spec.modules[2].config.at("labels").as_string() == "ja");
}

TEST_CASE("YAML syntax errors carry line and column") {
  auto l = load("modules:\n  a: {plugin: x\n  b: [\n");
  REQUIRE(l.errors.size() == 1);
  CHECK(l.errors[0].message.find("YAML syntax error") != std::string::npos);
  CHECK(l.errors[0].where.file == "test.yaml");
  CHECK(l.errors[0].where.line >= 2);
}

TEST_CASE("unknown plugin: says where it looked and what it meant") {
  auto l = load("modules:\n  m:\n    plugin: working_memroy\n");
  CHECK_MESSAGE(has_error(l, 3, {"unknown plugin 'working_memroy'", "did you mean 'working_memory'",
                                 "libworking_memroy.so", LAL_BUILD_PLUGIN_DIR}),
                dump(l));
  CHECK(l.errors[0].where.column == 13);
}

TEST_CASE("config keys: unknown, ill-typed and required") {
  auto l = load(R"(modules:
  memory:
    plugin: working_memory
    config:
      capacty: 7
      decay: "fast"
    inputs: {percept: turn.input, recall: memory.recall}
)");
  CHECK_MESSAGE(has_error(l, 5, {"unknown config key 'capacty'", "did you mean 'capacity'"}), dump(l));
  CHECK_MESSAGE(has_error(l, 6, {"'decay' must be number, found string"}), dump(l));
  CHECK(l.errors.size() == 2);
}

TEST_CASE("ports: unknown port, wrong section, required input unwired") {
  auto l = load(R"(modules:
  intuition:
    plugin: first_impression
    inputs: {percpt: turn.input, thought: x}
)");
  CHECK_MESSAGE(has_error(l, 4, {"has no port 'percpt'", "did you mean 'percept'"}), dump(l));
  CHECK_MESSAGE(
      has_error(l, 4, {"port 'thought'", "is an output port: it belongs under `outputs:`, not under `inputs:`"}),
      dump(l));
  CHECK_MESSAGE(has_error(l, 2, {"required input port 'percept'", "is not wired"}), dump(l));
}

TEST_CASE("an input nobody produces") {
  auto l = load(R"(modules:
  speaker:
    plugin: transcript
    inputs: {thought: thought.strem}
  intuition:
    plugin: first_impression
    inputs: {percept: turn.input}
    outputs: {thought: thought.stream}
)");
  CHECK_MESSAGE(has_error(l, 4, {"topic 'thought.strem' that nobody produces", "did you mean 'thought.stream'"}),
                dump(l));
}

TEST_CASE("producer/consumer type mismatch names both modules and both types") {
  auto l = load(R"(modules:
  intuition:
    plugin: first_impression
    inputs: {percept: turn.input}
    outputs: {thought: thought.stream}
  memory:
    plugin: working_memory
    inputs: {percept: thought.stream, recall: memory.recall}
  speaker:
    plugin: transcript
    inputs: {thought: turn.input}
)");
  CHECK_MESSAGE(has_error(l, 8,
                          {"type mismatch on topic 'thought.stream'", "module 'intuition' (port 'thought')",
                           "produces lal.ThoughtChunk/2", "module 'memory' (port 'percept')", "expects lal.Percept/1"}),
                dump(l));
  CHECK_MESSAGE(
      has_error(l, 11, {"the pipeline input produces lal.Percept/1", "module 'speaker'", "expects lal.ThoughtChunk/2"}),
      dump(l));
  // The consumer came first: the mismatch is reported at the producer's wiring, which introduced it.
  auto later = load(R"(modules:
  memory:
    plugin: working_memory
    inputs: {percept: thought.stream, recall: memory.recall}
  intuition:
    plugin: first_impression
    inputs: {percept: turn.input}
    outputs: {thought: thought.stream}
)");
  CHECK_MESSAGE(has_error(later, 8, {"type mismatch on topic 'thought.stream'"}), dump(later));
}

TEST_CASE("options declared once: defaults, ranges and list elements are checked at load time") {
  auto l = load(R"(modules:
  intuition:
    plugin: first_impression
    config: {recall_deadline_ms: -5, language: jp}
    inputs: {percept: turn.input}
    outputs: {thought: thought.stream}
  speaker:
    plugin: transcript
    inputs: {thought: thought.stream}
)");
  CHECK_MESSAGE(has_error(l, 4, {"config key 'recall_deadline_ms' must be in [0, 60000], found -5"}), dump(l));
  CHECK_MESSAGE(has_error(l, 4, {"config key 'language' must be one of auto, ja, en, found 'jp'"}), dump(l));
  auto ok = load(kHello);
  REQUIRE(ok.ok());
  CHECK(ok.spec.modules[1].config.at("recall_deadline_ms").as_int() == 200);  // FirstImpressionOptions' initialiser
}

TEST_CASE("request without a server") {
  auto l = load(R"(modules:
  intuition:
    plugin: first_impression
    inputs: {percept: turn.input}
    outputs: {recall: nobody.recall, thought: t}
)");
  CHECK_MESSAGE(has_error(l, 5, {"topic 'nobody.recall' that no module serves"}), dump(l));
}

TEST_CASE("a module reading the topic it writes needs feedback: true, and then receives its own messages") {
  // The plugin guide's rule: such a module must filter its own `origin`, because the bus hands it what it published.
  const std::string self_loop = R"(modules:
  r:
    plugin: test_relay
    inputs: {percept: turn.input, thought_in: loop.thought}
    outputs: {thought: loop.thought, percept_out: echoes}
)";
  auto refused = load(self_loop);
  CHECK_MESSAGE(has_error(refused, 4, {"cycle: r → r", "feedback: true"}), dump(refused));

  std::string ok = self_loop;
  ok.replace(ok.find("thought_in: loop.thought"), 24, "thought_in: {topic: loop.thought, feedback: true}");
  Harness h(ok);
  std::mutex mu;
  std::vector<std::string> echoes;
  h.rt->observe<Percept>("echoes", [&](const Delivery<Percept>& m) {
    std::lock_guard<std::mutex> lk(mu);
    echoes.push_back(m->text);
  });
  h.rt->submit("hi");
  REQUIRE(h.rt->wait_idle(5s));
  std::lock_guard<std::mutex> lk(mu);
  CHECK(echoes == std::vector<std::string>{"relay: hi"});  // its own thought came back on thought_in
}

TEST_CASE("cycles are refused unless an edge is marked feedback") {
  const std::string cyclic = R"(modules:
  a:
    plugin: test_relay
    inputs: {percept: loop.percept}
    outputs: {thought: loop.thought}
  b:
    plugin: test_relay
    inputs: {thought_in: loop.thought}
    outputs: {percept_out: loop.percept}
)";
  auto l = load(cyclic);
  CHECK_MESSAGE(has_error(l, 4, {"cycle: a → b → a", "feedback: true"}), dump(l));
  CHECK(l.errors.size() == 1);

  std::string ok = cyclic;
  ok.replace(ok.find("{percept: loop.percept}"), 23, "{percept: {topic: loop.percept, feedback: true}}");
  auto l2 = load(ok);
  CHECK_MESSAGE(l2.ok(), dump(l2));
  // Both drawings mark the feedback edge the same way: dotted and grey.
  const std::string dot = runtime::render_graph(l2.spec, "dot");
  CHECK_MESSAGE(dot.find("\"b\" -> \"a\" [label=\"loop.percept\\nlal.Percept/1\", style=dotted, constraint=false, "
                         "color=gray]") != std::string::npos,
                dot);
  const std::string mermaid = runtime::render_graph(l2.spec, "mermaid");
  CHECK_MESSAGE(mermaid.find("m_b ..->|\"feedback: loop.percept: lal.Percept/1\"| m_a") != std::string::npos, mermaid);
  std::istringstream lines(mermaid);
  int edge = 0, feedback_edge = -1;
  for (std::string line; std::getline(lines, line);)
    if (line.find("->|") != std::string::npos) {
      if (line.find("feedback:") != std::string::npos) feedback_edge = edge;
      ++edge;
    }
  REQUIRE(feedback_edge >= 0);
  CHECK_MESSAGE(mermaid.find("  linkStyle " + std::to_string(feedback_edge) + " stroke:gray,stroke-dasharray:2 4\n") !=
                    std::string::npos,
                mermaid);
}

TEST_CASE("every error is reported at once, in file order") {
  auto l = load(R"(nmae: x
modules:
  memory:
    plugin: working_memory
    config: {capacity: "7"}
    inputs: {percept: turn.input, recall: memory.recall}
    failure_policy: explode
  ghost:
    plugin: no_such_plugin
)");
  CHECK_MESSAGE(has_error(l, 1, {"unknown key 'nmae'", "did you mean 'name'"}), dump(l));
  CHECK_MESSAGE(has_error(l, 5, {"'capacity' must be int, found string"}), dump(l));
  CHECK_MESSAGE(has_error(l, 7, {"failure_policy of module 'memory' must be isolate, disable or fail"}), dump(l));
  CHECK_MESSAGE(has_error(l, 9, {"unknown plugin 'no_such_plugin'"}), dump(l));
  REQUIRE(l.errors.size() == 4);
  for (std::size_t i = 1; i < l.errors.size(); ++i) CHECK(l.errors[i - 1].where.line <= l.errors[i].where.line);
}

TEST_CASE("a plugin built for another ABI is refused before anything in it runs") {
  CHECK_THROWS_WITH_AS(PluginRegistry::load_file(fs::path(LAL_TEST_PLUGIN_DIR) / "libtest_abi_mismatch.so"),
                       doctest::Contains("built for lal SDK ABI 99, but this host speaks ABI 3"), PluginError);
  auto l = load("modules:\n  m:\n    plugin: test_abi_mismatch\n");
  CHECK_MESSAGE(has_error(l, 3, {"ABI 99"}), dump(l));
}

TEST_CASE("a library that is not a lal plugin is refused") {
  const fs::path tmp = fs::temp_directory_path() / "lal_not_a_plugin";
  fs::create_directories(tmp);
  fs::copy_file("/lib/x86_64-linux-gnu/libz.so.1", tmp / "libz.so", fs::copy_options::overwrite_existing);
  CHECK_THROWS_WITH_AS(PluginRegistry::load_file(tmp / "libz.so"), doctest::Contains("not a lal plugin"), PluginError);
  PluginRegistry reg({tmp, LAL_BUILD_PLUGIN_DIR});
  auto found = reg.discover();
  bool refused = false, loaded = false;
  for (const auto& d : found) {
    if (d.file.filename() == "libz.so") refused = !d.plugin && !d.error.empty();
    if (d.plugin && d.plugin->name == "working_memory") loaded = true;
  }
  CHECK(refused);
  CHECK(loaded);
}

TEST_CASE("modules keep their library loaded until they are destroyed") {
  std::unique_ptr<ModuleInstance> instance;
  {
    PluginRegistry reg({LAL_BUILD_PLUGIN_DIR});
    auto plugin = reg.load("transcript");
    instance = std::make_unique<ModuleInstance>(plugin);
  }  // registry and our reference gone; the instance still holds the library
  CHECK(instance->plugin().descriptor->name == "transcript");
  instance.reset();  // destroyed by the plugin's deleter, then the library is unloaded
}

TEST_CASE("the hello pipeline runs real plugins end to end") {
  Harness h(kHello);
  h.rt->submit("東京の天気はどうですか？", "alice");
  REQUIRE(h.rt->wait_idle(5s));
  h.rt->submit("明日の天気が気になる", "alice");
  REQUIRE(h.rt->wait_idle(5s));
  h.rt->submit("明日の天気が気になる", "bob");  // bob has no memories of alice's
  REQUIRE(h.rt->wait_idle(5s));
  h.rt->stop();
  const std::string out = h.text();
  CHECK_MESSAGE(out.find("[直感] 質問のようです。気になる言葉: 東京、天気。\n") != std::string::npos, out);
  CHECK_MESSAGE(out.find("前に聞いた「東京の天気はどうですか？」を思い出しました。") != std::string::npos, out);
  // Exactly one association: alice's second turn; bob's identical line recalls nothing.
  std::size_t count = 0;
  for (auto p = out.find("思い出しました"); p != std::string::npos; p = out.find("思い出しました", p + 1)) ++count;
  CHECK(count == 1);
}

TEST_CASE("failure policies: isolate keeps the module, disable stops it, fail stops the pipeline") {
  auto yaml = [](const char* policy) {
    return std::string(R"(modules:
  risky:
    plugin: test_thrower
    inputs: {percept: turn.input}
    outputs: {thought: thought.stream}
    failure_policy: )") + policy + R"(
  intuition:
    plugin: first_impression
    config: {language: en}
    inputs: {percept: turn.input}
    outputs: {thought: thought.stream}
  speaker:
    plugin: transcript
    config: {labels: en}
    inputs: {thought: thought.stream}
)";
  };
  SUBCASE("isolate") {
    Harness h(yaml("isolate"));
    h.rt->submit("boom");
    h.rt->submit("fine");
    REQUIRE(h.rt->wait_idle(5s));
    CHECK_FALSE(h.rt->failed());
    CHECK(h.rt->module_stats()[0].failures == 1);
    const std::string out = h.text();
    CHECK(out.find("survived: fine") != std::string::npos);
    CHECK(out.find("[intuition] You are telling me something. Words that stand out: boom.") != std::string::npos);
  }
  SUBCASE("disable") {
    Harness h(yaml("disable"));
    h.rt->submit("boom");
    REQUIRE(h.rt->wait_idle(5s));
    h.rt->submit("fine");
    REQUIRE(h.rt->wait_idle(5s));
    CHECK(h.rt->module_stats()[0].disabled);
    const std::string out = h.text();
    CHECK(out.find("survived") == std::string::npos);
    CHECK(out.find("Words that stand out: fine") != std::string::npos);  // the others keep working
  }
  SUBCASE("fail") {
    Harness h(yaml("fail"));
    h.rt->submit("boom");
    REQUIRE(h.rt->wait_idle(5s));
    CHECK(h.rt->failed());
    CHECK(h.rt->failure().find("module 'risky' failed: kaboom on 'boom'") != std::string::npos);
  }
}

TEST_CASE("cancelling a turn reaches a handler that is running") {
  Harness h(R"(modules:
  worker:
    plugin: test_relay
    inputs: {percept: turn.input}
    outputs: {thought: thought.stream}
  speaker:
    plugin: transcript
    config: {labels: en}
    inputs: {thought: thought.stream}
)");
  const auto t0 = std::chrono::steady_clock::now();
  const TurnId turn = h.rt->submit("slow task");
  std::this_thread::sleep_for(100ms);
  h.rt->cancel_turn(turn);
  REQUIRE(h.rt->wait_idle(5s));
  CHECK(std::chrono::steady_clock::now() - t0 < 1500ms);  // the task alone takes 2 s
  CHECK_MESSAGE(h.text().find("[analysis] cancelled after") != std::string::npos, h.text());

  const TurnId other = h.rt->submit("slow but not cancelled");
  CHECK(other != turn);
  REQUIRE(h.rt->wait_idle(5s));
  CHECK(h.text().find("[analysis] finished") != std::string::npos);
}

TEST_CASE("cancelling a scope stops work in that scope while the turn goes on") {
  Harness h(R"(modules:
  worker:
    plugin: test_relay
    inputs: {percept: turn.input}
    outputs: {thought: thought.stream}
  speaker:
    plugin: transcript
    config: {labels: en}
    inputs: {thought: thought.stream}
)");
  const TurnId turn = h.rt->submit("slowscope task");
  std::this_thread::sleep_for(100ms);
  h.rt->cancel_scope(turn, "analysis");
  REQUIRE(h.rt->wait_idle(5s));
  CHECK_MESSAGE(h.text().find("cancelled after") != std::string::npos, h.text());
  CHECK_MESSAGE(h.text().find("(turn goes on)") != std::string::npos, h.text());
}

TEST_CASE("overrides change a pipeline before validation; bad ones are reported") {
  auto l = load_pipeline_text(kHello, "test.yaml", kDirs,
                              {{"modules.memory.config.capacity", "3"}, {"modules.speaker.config.labels", "en"}});
  REQUIRE_MESSAGE(l.ok(), dump(l));
  CHECK(l.spec.modules[0].config.at("capacity").as_int() == 3);
  CHECK(l.spec.modules[2].config.at("labels").as_string() == "en");
  auto bad = load_pipeline_text(kHello, "test.yaml", kDirs, {{"modules.speaker.plugin.x", "1"}});
  REQUIRE(bad.errors.size() == 1);
  CHECK(bad.errors[0].str().find("cannot set 'modules.speaker.plugin.x': 'plugin' is not a map") != std::string::npos);
}

TEST_CASE("the host can observe topics and make requests") {
  Harness h(kHello);
  std::vector<std::string> seen;
  std::mutex mu;
  h.rt->observe<ThoughtChunk>("thought.stream", [&](const Delivery<ThoughtChunk>& m) {
    std::lock_guard<std::mutex> lk(mu);
    seen.push_back(m->text);
  });
  h.rt->submit("東京の天気", "carol");
  REQUIRE(h.rt->wait_idle(5s));
  {
    std::lock_guard<std::mutex> lk(mu);
    CHECK(seen.size() == 1);
  }
  RecallRequest req;
  req.cue = "天気";
  auto reply = h.rt->request<RecallRequest, RecallReply>("memory.recall", req, "carol", 1000ms);
  REQUIRE(reply->items.size() == 1);
  CHECK(reply->items[0].text == "東京の天気");
  CHECK(h.rt->request<RecallRequest, RecallReply>("memory.recall", req, "dave", 1000ms)->items.empty());
}
