// What the runtime owns for modules: resources created from the pipeline (and shared across runtimes), the output
// slot and wildcard overrides, and the strand-side waiting of the SDK (await, timers, turn state, on_cancel).
#include <doctest/doctest.h>

#include <atomic>
#include <thread>

#include "lal/runtime/pipeline.hpp"
#include "lal/runtime/resources.hpp"
#include "lal/runtime/runtime.hpp"
#include "pipeline_harness.hpp"

using namespace lal;
using namespace lal::runtime;
using namespace std::chrono_literals;

namespace {

const std::vector<fs::path> kDirs = {LAL_BUILD_PLUGIN_DIR, LAL_TEST_PLUGIN_DIR};

struct Counter {
  static constexpr const char* kServiceName = "test.Counter/1";
  std::string label;
};
std::atomic<int> g_created{0};

void register_counter_kind() {
  ResourceKind k;
  k.kind = "test_counter";
  k.service_type = Counter::kServiceName;
  k.keys = {ConfigKeySpec::optional("label", ConfigType::string, "\"plain\"", "a label"),
            ConfigKeySpec::mandatory("size", ConfigType::integer, "required")};
  k.create = [](const std::string&, const Config& c) -> std::shared_ptr<void> {
    if (c.get<std::int64_t>("size") < 0) throw std::runtime_error("size must be ≥ 0");
    ++g_created;
    return std::make_shared<Counter>(Counter{c.get<std::string>("label")});
  };
  resource_kinds().add(k);
}

const char* kWithResource = R"(
resources:
  counter: {kind: test_counter, size: 3}
modules:
  speaker:
    plugin: transcript
    inputs: {thought: thought.stream}
  relay:
    plugin: test_relay
    inputs: {percept: turn.input}
    outputs: {thought: thought.stream}
)";

}  // namespace

TEST_CASE("resources: validated against the registered kind, created once, shared across runtimes") {
  register_counter_kind();
  auto l = load_pipeline_text(kWithResource, "r.yaml", kDirs);
  REQUIRE_MESSAGE(l.ok(), lal::test::dump_errors(l));
  CHECK(l.spec.resources.at("counter").as_map().at("label").as_string() == "plain");  // default filled in

  g_created = 0;
  const ResourceSet shared = create_resources(l.spec);
  REQUIRE(g_created == 1);
  {
    RuntimeOptions o;
    o.resources = shared;
    o.output = [](std::string_view) {};
    Runtime a(l.spec, o), b(l.spec, o);
    a.start();
    b.start();
    CHECK(g_created == 1);  // neither runtime created its own
    CHECK(a.resources().at("counter").service == b.resources().at("counter").service);
  }
  {
    RuntimeOptions o;
    o.output = [](std::string_view) {};
    Runtime c(l.spec, o);
    c.start();
    CHECK(g_created == 2);  // a runtime without shared resources creates them
  }

  auto bad = load_pipeline_text(R"(
resources:
  counter: {kind: test_countr, size: 1}
  other: {kind: test_counter, sise: 1}
  third: {kind: test_counter, size: "x"}
modules:
  speaker: {plugin: transcript, inputs: {thought: thought.stream}}
)",
                                "bad.yaml", kDirs);
  const std::string errors = lal::test::dump_errors(bad);
  INFO(errors);
  CHECK(errors.find("bad.yaml:3:12: resource 'counter' has kind 'test_countr'") != std::string::npos);
  CHECK(errors.find("did you mean 'test_counter'") != std::string::npos);
  CHECK(errors.find("unknown config key 'sise'") != std::string::npos);
  CHECK(errors.find("required config key 'size'") != std::string::npos);
  CHECK(errors.find("bad.yaml:5:37: resource 'third': config key 'size' must be int") != std::string::npos);

  auto failing = load_pipeline_text(
      "resources:\n  counter: {kind: test_counter, size: -1}\nmodules:\n"
      "  relay: {plugin: test_relay, inputs: {percept: turn.input}}\n",
      "neg.yaml", kDirs);
  REQUIRE_MESSAGE(failing.ok(), lal::test::dump_errors(failing));
  try {
    create_resources(failing.spec);
    FAIL("a failing factory must throw");
  } catch (const std::runtime_error& e) {
    CHECK(std::string(e.what()).find("neg.yaml:2:12: resource 'counter' (test_counter): size must be") !=
          std::string::npos);
  }
}

TEST_CASE("the output slot: one of `outputs:` runs as module `output`; wildcard overrides apply where declared") {
  const char* yaml = R"(
modules:
  relay:
    plugin: test_relay
    inputs: {percept: turn.input}
    outputs: {thought: thought.stream}
outputs:
  plain: {plugin: transcript, config: {labels: en}, inputs: {thought: thought.stream}}
  other: {plugin: transcript, inputs: {thought: thought.stream}}
)";
  auto first = load_pipeline_text(yaml, "slot.yaml", kDirs);
  REQUIRE_MESSAGE(first.ok(), lal::test::dump_errors(first));
  CHECK(first.spec.output_choice == "plain");
  REQUIRE(first.spec.modules.size() == 2);
  CHECK(first.spec.modules[1].id == "output");
  CHECK(first.spec.modules[1].config.at("labels").as_string() == "en");

  auto chosen = load_pipeline_text(yaml, "slot.yaml", kDirs, {{"output", "other"}, {"modules.*.config.labels", "ja"}});
  REQUIRE_MESSAGE(chosen.ok(), lal::test::dump_errors(chosen));
  CHECK(chosen.spec.output_choice == "other");
  CHECK(chosen.spec.modules[1].config.at("labels").as_string() == "ja");  // declared by transcript: set
  CHECK(!chosen.spec.modules[0].config.count("labels"));                  // test_relay has no such key: untouched

  // Values set on module `output` (as `lal serve` and --set do) go to the chosen entry.
  auto set = load_pipeline_text(yaml, "slot.yaml", kDirs, {{"modules.output.config.show_turn", "true"}});
  REQUIRE_MESSAGE(set.ok(), lal::test::dump_errors(set));
  CHECK(set.spec.modules[1].config.at("show_turn").as_bool());
  CHECK(set.spec.modules[1].config.at("labels").as_string() == "en");

  auto wrong = load_pipeline_text(yaml, "slot.yaml", kDirs, {{"output", "plian"}});
  REQUIRE(!wrong.ok());
  CHECK(lal::test::dump_errors(wrong).find("output 'plian' is not in the pipeline's `outputs:` (did you mean "
                                           "'plain'?); choose one of: plain, other") != std::string::npos);
}

namespace {
const char* kAsync = R"(
modules:
  probe:
    plugin: test_async
    config: {deadline_ms: 150}
    inputs: {percept: turn.input, thought_in: reply.stream}
    outputs: {thought: thought.stream}
  replier:                # declares the producer of reply.stream; the tests publish on it from the host
    plugin: test_relay
    outputs: {thought: reply.stream}
  speaker:
    plugin: transcript
    config: {labels: en}
    inputs: {thought: thought.stream}
)";
}

TEST_CASE("await: the value when it comes in time, the timeout otherwise; busy until then") {
  lal::test::PipelineHarness h(kAsync, kDirs);
  auto reply = h.rt->bus().topic("reply.stream", ThoughtChunk::kTypeName);

  // Nothing comes: the timeout runs after the deadline, and the pipeline counted as busy meanwhile.
  const auto t0 = std::chrono::steady_clock::now();
  h.rt->submit("one");
  REQUIRE(h.rt->wait_idle(5s));
  CHECK(std::chrono::steady_clock::now() - t0 >= 140ms);
  CHECK(h.text().find("timeout (n=1)") != std::string::npos);

  // The thought arrives after the await began.
  const TurnId second = h.rt->submit("two");
  std::this_thread::sleep_for(30ms);
  MessageHeader hdr;
  hdr.turn = second;
  ThoughtChunk c;
  c.text = "late";
  h.rt->bus().publish(reply, std::make_shared<const ThoughtChunk>(c), hdr);
  REQUIRE(h.rt->wait_idle(5s));
  CHECK(h.text().find("got late (n=1)") != std::string::npos);

  // The thought arrived before the await: kept for the turn, answered at once.
  MessageHeader early;
  early.turn = 99;
  c.text = "early";
  h.rt->bus().publish(reply, std::make_shared<const ThoughtChunk>(c), early);
  REQUIRE(h.rt->wait_idle(5s));
  Percept p;
  p.text = "three";
  h.rt->bus().publish(h.rt->bus().topic("turn.input", Percept::kTypeName), std::make_shared<const Percept>(p), early);
  REQUIRE(h.rt->wait_idle(5s));
  CHECK(h.text().find("got early (n=1)") != std::string::npos);
}

TEST_CASE("on_cancel runs on the strand; every() repeats until cancelled") {
  lal::test::PipelineHarness h(kAsync, kDirs);
  const TurnId turn = h.rt->submit("wait");
  std::this_thread::sleep_for(20ms);
  h.rt->cancel_turn(turn);
  REQUIRE(h.rt->wait_idle(5s));
  CHECK(h.text().find("cancelled") != std::string::npos);
  CHECK(h.text().find("timeout") == std::string::npos);

  h.rt->submit("tick");
  REQUIRE(h.rt->wait_idle(5s));
  INFO(h.text());
  CHECK(h.text().find("tick x3") != std::string::npos);
}

TEST_CASE("list options: declared defaults filled in, every element checked") {
  const char* yaml = R"(
modules:
  probe:
    plugin: test_async
    config: {tags: [a, c], weights: [0.2, 1.5, x]}
    inputs: {percept: turn.input}
    outputs: {thought: thought.stream}
  speaker: {plugin: transcript, inputs: {thought: thought.stream}}
)";
  auto bad = load_pipeline_text(yaml, "lists.yaml", kDirs);
  const std::string errors = lal::test::dump_errors(bad);
  INFO(errors);
  CHECK(errors.find("lists.yaml:5:24: module 'probe': config key 'tags' element 1 must be one of a, b, found 'c'") !=
        std::string::npos);
  CHECK(errors.find("config key 'weights' element 1 must be in [0, 1], found 1.5") != std::string::npos);
  CHECK(errors.find("config key 'weights' element 2 must be number, found string") != std::string::npos);

  auto good = load_pipeline_text(R"(
modules:
  probe: {plugin: test_async, inputs: {percept: turn.input}, outputs: {thought: thought.stream}}
  speaker: {plugin: transcript, inputs: {thought: thought.stream}}
)",
                                 "lists.yaml", kDirs);
  REQUIRE_MESSAGE(good.ok(), lal::test::dump_errors(good));
  const auto& weights = good.spec.modules[0].config.at("weights").as_list();
  REQUIRE(weights.size() == 2);
  CHECK(weights[1].as_number() == 1.0);
  CHECK(good.spec.modules[0].config.at("tags").as_list().at(0).as_string() == "a");
}
