// The brain regions and output strategies, run as real plugins in a real pipeline with a scripted language model:
// timing of the first visible output, concluding and cancelling, insight signals, emotion, hedging, failures and
// the jsonl schema.
#include <doctest/doctest.h>

#include <condition_variable>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <thread>

#include "lal/plugins/uncertainty.hpp"
#include "pipeline_harness.hpp"
#include "scripted_model.hpp"

using namespace lal;
using namespace lal::test;
using namespace std::chrono_literals;
using nlohmann::json;
using Role = lal::plugins::Role;

namespace {

const std::vector<runtime::fs::path> kDirs = {LAL_BUILD_PLUGIN_DIR, LAL_BRAIN_TEST_PLUGIN_DIR};

/// Module configs (YAML flow maps) of the standard brain pipeline; tests change what they test.
struct Layout {
  std::string emotion = "{half_life_ms: 60000}";
  std::string right = "{}";
  std::string left = "{recollection_deadline_ms: 200}";
  std::string insight = "{}";
  std::string frontal = "{budget_ms: 5000, insight_grace_ms: 200}";
  std::string output = "jsonl";
  std::string output_config = "{}";
  std::string recollector;  ///< config of a test_recollector standing in for the hippocampus; empty = none

  std::string yaml() const {
    const std::string recollection = recollector.empty() ? "" : ", recollection: memory.recollection";
    std::string y = "modules:\n";
    y += "  emotion:\n    plugin: emotion\n    config: " + emotion +
         "\n    inputs: {percept: turn.input, done: {topic: turn.done, feedback: true}}\n"
         "    outputs: {state: emotion.state, thought: thought.stream}\n";
    if (!recollector.empty())
      y += "  recall:\n    plugin: test_recollector\n    config: " + recollector +
           "\n    inputs: {percept: turn.input}\n"
           "    outputs: {recollection: memory.recollection, thought: thought.stream}\n";
    y += "  right:\n    plugin: right_brain\n    config: " + right +
         "\n    inputs: {percept: turn.input, emotion: emotion.state}\n    outputs: {thought: thought.stream}\n";
    y += "  left:\n    plugin: left_brain\n    config: " + left +
         "\n    inputs: {percept: turn.input, emotion: emotion.state" + recollection +
         "}\n    outputs: {thought: thought.stream}\n";
    y += "  insight:\n    plugin: insight\n    config: " + insight +
         "\n    inputs: {thought: thought.stream}\n    outputs: {insight: insight.stream}\n";
    y +=
        "  frontal:\n    plugin: frontal_lobe\n    config: " + frontal +
        "\n    inputs: {percept: turn.input, thought: thought.stream, insight: insight.stream, emotion: emotion.state" +
        recollection + "}\n    outputs: {answer: answer.stream, done: turn.done}\n";
    y += "  out:\n    plugin: " + output + "\n    config: " + output_config +
         "\n    inputs: {thought: thought.stream, insight: insight.stream, answer: answer.stream, done: turn.done" +
         (output == "jsonl" ? ", percept: turn.input" : "") + "}\n";
    return y;
  }
};

/// A running pipeline with the scripted model registered as `model`, and the turn.done / emotion.state observed.
class Session {
 public:
  Session(const std::string& yaml, ScriptedModel::Chooser chooser)
      : model(std::make_shared<ScriptedModel>(std::move(chooser))) {
    harness = std::make_unique<PipelineHarness>(yaml, kDirs, [this](runtime::Runtime& rt) {
      rt.register_service<LanguageModel>("model", std::static_pointer_cast<LanguageModel>(model));
      rt.observe<EmotionState>("emotion.state", [this](const Delivery<EmotionState>& m) {
        std::lock_guard<std::mutex> lk(mu_);
        emotions_.push_back(*m);
      });
    });
    // Observed after start, so this is turn.done's last subscriber: the frontal lobe publishes from its own thread,
    // and by the time this observer runs the message already sits in every output's mailbox, where wait_idle()
    // sees it. (Observed first, the bus could look idle before the outputs' copies were queued.)
    harness->rt->observe<TurnDone>("turn.done", [this](const Delivery<TurnDone>& m) {
      std::lock_guard<std::mutex> lk(mu_);
      done_.push_back(m);
      cv_.notify_all();
    });
  }

  /// Submit `text` and wait for its TurnDone (and for the outputs to write everything already published).
  Delivery<TurnDone> turn(const std::string& text, std::chrono::milliseconds timeout = 5s) {
    const TurnId id = harness->rt->submit(text, "alice");
    std::unique_lock<std::mutex> lk(mu_);
    const bool ok = cv_.wait_for(lk, timeout, [&] {
      return std::any_of(done_.begin(), done_.end(), [&](const auto& d) { return d.header.turn == id; });
    });
    REQUIRE_MESSAGE(ok, "no TurnDone for turn " << id << "; output so far:\n" << harness->text());
    lk.unlock();
    harness->rt->wait_idle(5s);
    lk.lock();
    for (const auto& d : done_)
      if (d.header.turn == id) return d;
    return {};
  }

  std::vector<json> lines() {
    std::vector<json> out;
    std::istringstream in(harness->text());
    for (std::string line; std::getline(in, line);) {
      INFO("line: " << line);
      REQUIRE_NOTHROW(out.push_back(json::parse(line)));
    }
    return out;
  }

  std::vector<EmotionState> emotions() {
    std::lock_guard<std::mutex> lk(mu_);
    return emotions_;
  }

  std::shared_ptr<ScriptedModel> model;
  std::unique_ptr<PipelineHarness> harness;

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Delivery<TurnDone>> done_;
  std::vector<EmotionState> emotions_;
};

std::vector<json> select(const std::vector<json>& lines, const std::string& stage, const std::string& kind = "") {
  std::vector<json> out;
  for (const auto& l : lines)
    if (l["stage"] == stage && (kind.empty() || l["kind"] == kind) && !l.contains("event")) out.push_back(l);
  return out;
}

std::string joined(const std::vector<json>& chunks) {
  std::string s;
  for (const auto& c : chunks) s += c["text"].get<std::string>();
  return s;
}

const json* turn_done_line(const std::vector<json>& lines, TurnId turn) {
  for (const auto& l : lines)
    if (l.value("event", "") == "turn_done" && l["turn"] == turn) return &l;
  return nullptr;
}

/// The standard scripts: a quick intuition, a slower exploration and analysis, a short confident answer.
Script standard(const GenerationRequest& r) {
  switch (role_of(r)) {
    case Role::intuition: return uniform({"天気", "の", "話", "です"}, -0.2f, 0.5f, 5);
    case Role::exploration: return uniform(repeat("探索", 5), -0.3f, 1.0f, 5);
    case Role::analysis: return uniform(repeat("分析", 30), -0.3f, 1.0f, 12);
    case Role::answer: return uniform({"晴れ", "です", "。"}, -0.1f, 0.2f, 3);
    case Role::insight: return uniform({"なるほど"}, -0.1f, 0.2f);
  }
  return {};
}

/// The standard scripts, except that the analysis says `analysis`.
ScriptedModel::Chooser with_analysis(const Script& analysis) {
  return [analysis](const GenerationRequest& r) { return role_of(r) == Role::analysis ? analysis : standard(r); };
}

}  // namespace

TEST_CASE("the intuition is visible long before the analysis ends; the turn ends with an answer and turn_done") {
  Session s(Layout{}.yaml(), standard);
  const auto done = s.turn("明日の天気は？");
  const auto lines = s.lines();
  const auto intuition = select(lines, "intuition");
  const auto analysis = select(lines, "analysis");
  const auto answer = select(lines, "conclusion", "answer");
  REQUIRE(!intuition.empty());
  REQUIRE(!analysis.empty());
  REQUIRE(!answer.empty());
  CHECK(joined(intuition) == "天気の話です");
  CHECK(joined(answer) == "晴れです。");
  CHECK(analysis.back()["last"] == true);
  // Start speaking before thinking is complete: the whole intuition is out before the analysis is half done.
  CHECK(intuition.back()["t_ms"].get<double>() < analysis.back()["t_ms"].get<double>() - 150.0);
  CHECK(intuition.front()["t_ms"].get<double>() < 100.0);
  // The answer comes after the analysis concluded, and the turn's last line is turn_done.
  CHECK(answer.front()["t_ms"].get<double>() >= analysis.back()["t_ms"].get<double>());
  const json* td = turn_done_line(lines, done.header.turn);
  REQUIRE(td);
  CHECK(&lines.back() == td);
  CHECK((*td)["strategy"] == "deep");
  CHECK((*td)["text"] == "晴れです。");
  CHECK((*td)["first_output_ms"].get<double>() <= intuition.front()["t_ms"].get<double>() + 0.1);
  CHECK((*td)["first_output_ms"].get<double>() < (*td)["answer_done_ms"].get<double>());
  // Measured, not invented: the chunks carry the confidence derived from the scripted statistics.
  CHECK(intuition.front()["confidence"].get<double>() ==
        doctest::Approx(plugins::confidence_from(-0.2f, 0.5f)).epsilon(1e-4));
  CHECK(done->confidence == doctest::Approx(plugins::confidence_from(-0.1f, 0.2f)).epsilon(1e-4));
  CHECK_FALSE(done->cancelled);
  CHECK(done->user_text == "明日の天気は？");
  // The answer prompt was built from what the regions thought.
  const auto answer_requests = s.model->requests(Role::answer);
  REQUIRE(answer_requests.size() == 1);
  const std::string& prompt = answer_requests[0].messages[1].content;
  CHECK(prompt.find("明日の天気は？") != std::string::npos);
  CHECK(prompt.find("天気の話です") != std::string::npos);
  CHECK(prompt.find("分析分析") != std::string::npos);
  // The intuition asks the shared model first.
  CHECK(s.model->requests(Role::intuition)[0].priority > s.model->requests(Role::analysis)[0].priority);
}

TEST_CASE("the frontal lobe stops the analysis when its budget is spent; the turn still ends with an answer") {
  const auto slow = with_analysis(uniform(repeat("考", 200), -0.8f, 1.5f, 20));  // 4 s unless stopped
  Layout layout;
  layout.frontal = "{budget_ms: 400, insight_grace_ms: 0}";
  Session s(layout.yaml(), slow);
  const auto t0 = std::chrono::steady_clock::now();
  const auto done = s.turn("難しい問題を考えて");
  CHECK(std::chrono::steady_clock::now() - t0 < 2s);
  std::this_thread::sleep_for(100ms);  // the left brain's worker publishes its closing chunk after the cancel
  s.harness->rt->wait_idle(2s);
  const auto lines = s.lines();
  const auto analysis = select(lines, "analysis");
  REQUIRE(!analysis.empty());
  CHECK(analysis.size() < 60);
  CHECK(analysis.back()["last"] == true);
  CHECK(analysis.back()["text"].get<std::string>().find("やめました") != std::string::npos);
  CHECK(joined(select(lines, "conclusion", "answer")) == "晴れです。");
  CHECK_FALSE(done->cancelled);
  CHECK(done->strategy == Strategy::deep);
  CHECK(done->answer == "晴れです。");
}

TEST_CASE("the frontal lobe concludes early once the analysis is measured confident") {
  const auto sure = with_analysis(uniform(repeat("確", 200), -0.02f, 0.05f, 10));
  Layout layout;
  layout.frontal = "{budget_ms: 5000, conclude_confidence: 0.9, min_analysis_tokens: 10, insight_grace_ms: 0}";
  Session s(layout.yaml(), sure);
  const auto t0 = std::chrono::steady_clock::now();
  const auto done = s.turn("1たす1は？");
  CHECK(std::chrono::steady_clock::now() - t0 < 1500ms);
  CHECK(done->answer == "晴れです。");
  std::this_thread::sleep_for(50ms);
  s.harness->rt->wait_idle(2s);
  CHECK(select(s.lines(), "analysis").size() < 40);
}

TEST_CASE("a cancelled turn still ends with TurnDone, marked cancelled") {
  const auto slow = with_analysis(uniform(repeat("考", 200), -0.8f, 1.5f, 20));
  Session s(Layout{}.yaml(), slow);
  const TurnId id = s.harness->rt->submit("長い話");
  std::this_thread::sleep_for(150ms);
  s.harness->rt->cancel_turn(id);
  const auto t0 = std::chrono::steady_clock::now();
  while (!turn_done_line(s.lines(), id) && std::chrono::steady_clock::now() - t0 < 3s)
    std::this_thread::sleep_for(20ms);
  const auto lines = s.lines();
  const json* td = turn_done_line(lines, id);
  REQUIRE_MESSAGE(td, s.harness->text());
  CHECK((*td)["cancelled"] == true);
  CHECK(select(lines, "conclusion", "answer").empty());
}

namespace {

Script drop_analysis() {
  Script s = uniform(repeat("えーと", 8), -2.0f, 3.0f, 2);
  return then(s, uniform({"答え", "は", "四", "です", "。", "確か"}, -0.05f, 0.2f, 2));
}

std::string insight_text(const std::function<Script(const GenerationRequest&)>& analysis_script,
                         const std::string& recollector = "") {
  auto chooser = [&](const GenerationRequest& r) {
    if (role_of(r) == Role::analysis) return analysis_script(r);
    return standard(r);
  };
  Layout layout;
  layout.recollector = recollector;
  Session s(layout.yaml(), chooser);
  s.turn("2たす2は？");
  return joined(select(s.lines(), "insight"));
}

}  // namespace

TEST_CASE("insight fires on a sharp entropy drop in the analysis, reproducibly, and not without it") {
  const std::string first = insight_text([](const GenerationRequest&) { return drop_analysis(); });
  CHECK_MESSAGE(first.find("迷いが晴れました") != std::string::npos, first);
  CHECK(first.find("答えは四です") != std::string::npos);  // the part where the model became sure
  CHECK(first.find("3.00→0.67 nats") !=
        std::string::npos);  // the measured windows: 3.0 before, (3.0 + 5 × 0.2) / 6 after
  const std::string again = insight_text([](const GenerationRequest&) { return drop_analysis(); });
  CHECK(again == first);
  // Uncertain throughout, or sure throughout (and agreeing with the intuition): no insight.
  CHECK(insight_text([](const GenerationRequest&) { return uniform(repeat("えーと", 14), -2.0f, 3.0f, 2); }) == "");
  CHECK(insight_text([](const GenerationRequest&) { return uniform(repeat("天気", 14), -0.05f, 0.2f, 2); }) == "");
}

TEST_CASE("insight fires when confident intuition and analysis disagree") {
  const std::string text =
      insight_text([](const GenerationRequest&) { return uniform(repeat("バナナ", 12), -0.05f, 0.2f, 2); });
  CHECK_MESSAGE(text.find("食い違っています") != std::string::npos, text);
}

TEST_CASE("insight fires when a recalled memory shapes the analysis but not the intuition") {
  auto analysis = [](const GenerationRequest& r) {
    // The left brain put the recollection into its prompt; this analysis uses it.
    CHECK(r.messages[1].content.find("猫の名前はタマ") != std::string::npos);
    return uniform({"猫", "の", "名前", "は", "タマ", "だった"}, -0.05f, 0.2f, 2);
  };
  auto unsure_intuition = [&](const GenerationRequest& r) {
    if (role_of(r) == Role::intuition) return uniform({"天気", "の", "話"}, -2.0f, 3.0f, 2);
    if (role_of(r) == Role::analysis) return analysis(r);
    return standard(r);
  };
  Layout layout;
  layout.recollector = "{items: [猫の名前はタマ]}";
  Session s(layout.yaml(), unsure_intuition);
  s.turn("うちの猫の名前は？");
  const std::string text = joined(select(s.lines(), "insight"));
  CHECK_MESSAGE(text.find("考えが変わりました") != std::string::npos, s.harness->text());
}

TEST_CASE("procedural memory suggesting 'direct' skips the deep analysis") {
  Layout layout;
  layout.recollector = "{items: [挨拶には挨拶で返す], strategy: direct, strategy_confidence: 0.9}";
  Session s(layout.yaml(), standard);
  const auto done = s.turn("こんにちは");
  const auto lines = s.lines();
  const auto analysis = select(lines, "analysis");
  REQUIRE(analysis.size() == 1);
  CHECK(analysis[0]["text"].get<std::string>().find("深い分析は省きます") != std::string::npos);
  CHECK(s.model->requests(Role::analysis).empty());
  REQUIRE(s.model->requests(Role::exploration).size() == 1);
  CHECK(s.model->requests(Role::exploration)[0].messages[1].content.find("挨拶には挨拶で返す") != std::string::npos);
  CHECK(done->strategy == Strategy::direct);
  CHECK(done->answer == "晴れです。");
  CHECK(select(lines, "recall", "memory").size() == 1);
}

TEST_CASE("emotion: positive words → joy, threat words → fear, then decay back to the baseline") {
  const std::string yaml = R"(modules:
  emotion:
    plugin: emotion
    config: {half_life_ms: 120}
    inputs: {percept: turn.input}
    outputs: {state: emotion.state, thought: thought.stream}
  out:
    plugin: jsonl
    inputs: {thought: thought.stream, percept: turn.input}
)";
  Session s(yaml, standard);
  auto submit = [&](const std::string& text) {
    s.harness->rt->submit(text);
    REQUIRE(s.harness->rt->wait_idle(2s));
  };
  submit("ありがとう、本当に嬉しい！");
  std::this_thread::sleep_for(700ms);  // ~6 half-lives: the joy has faded
  submit("怖い、助けて！地震だ");
  const double fear_valence = s.emotions().back().valence;
  std::this_thread::sleep_for(900ms);
  submit("はい");
  const auto states = s.emotions();
  REQUIRE(states.size() == 3);
  CHECK(states[0].label == "joy");
  CHECK(states[0].valence > 0.3);
  CHECK(states[1].label == "fear");
  CHECK(states[1].arousal > 0.4);
  CHECK(states[1].dominance < 0.0);
  CHECK(fear_valence < -0.2);
  CHECK(states[2].label == "neutral");
  CHECK(states[2].valence == doctest::Approx(0.1).epsilon(0.05));  // back at the baseline
  // One state thought per change of label: joy, fear, neutral.
  const auto reports = select(s.lines(), "emotion", "state");
  REQUIRE(reports.size() == 3);
  CHECK(reports[0]["text"].get<std::string>().rfind("喜び", 0) == 0);
  CHECK(reports[1]["text"].get<std::string>().rfind("恐れ", 0) == 0);
  CHECK(reports[2]["text"].get<std::string>().rfind("平静", 0) == 0);
}

TEST_CASE("emotion modulates expression: tone line and temperature of the regions' requests") {
  Session s(Layout{}.yaml(), standard);
  s.turn("怖い、助けて！");
  const auto fear = s.emotions().back();
  REQUIRE(fear.label == "fear");
  const auto answer = s.model->requests(Role::answer).at(0);
  CHECK(answer.messages[0].content.find("慎重に、相手を安心させる言葉で") != std::string::npos);
  CHECK(answer.temperature.value() == doctest::Approx(0.5 + 0.2 * fear.arousal).epsilon(1e-4));
  CHECK(answer.messages[1].content.find("fear") != std::string::npos);  // how it feels is part of the prompt
}

TEST_CASE("think_aloud hedges by the answer's measured uncertainty, never at random") {
  auto with_answer = [](float logprob, float entropy) {
    return [=](const GenerationRequest& r) {
      if (role_of(r) == Role::answer) return uniform({"答え", "は", "四", "です", "。"}, logprob, entropy, 1);
      if (role_of(r) == Role::analysis) return uniform(repeat("分析", 5), -0.3f, 1.0f, 2);
      return standard(r);
    };
  };
  auto run = [&](float logprob, float entropy, const std::string& config) {
    Layout layout;
    layout.output = "think_aloud";
    layout.output_config = config;
    Session s(layout.yaml(), with_answer(logprob, entropy));
    s.turn("2たす2は？");
    return s.harness->text();
  };
  const std::string sure = run(-0.05f, 0.1f, "{}");
  CHECK_MESSAGE(sure.find("[答え] 答えは四です。\n") != std::string::npos, sure);
  CHECK(sure.find("[直感] 天気の話です\n") != std::string::npos);
  CHECK(sure.find("[分析] 分析分析分析分析分析\n") != std::string::npos);
  const std::string unsure = run(-0.5f, 1.0f, "{}");  // confidence 0.61
  CHECK_MESSAGE(unsure.find("[答え] たぶん、答えは四です。\n") != std::string::npos, unsure);
  const std::string guess = run(-1.5f, 2.5f, "{}");  // confidence 0.25
  CHECK_MESSAGE(guess.find("[答え] 間違っているかもしれませんが、答えは四です。\n") != std::string::npos, guess);
  // Same statistics, same hedge: deterministic. (Only the answer line: with the scripted model the intuition and
  // the exploration start together, so which of them gets the screen first may differ between runs.)
  auto answer_line = [](const std::string& out) {
    const auto at = out.find("[答え]");
    return at == std::string::npos ? std::string() : out.substr(at, out.find('\n', at) - at);
  };
  CHECK(answer_line(run(-0.5f, 1.0f, "{}")) == answer_line(unsure));

  const std::string en = run(-0.5f, 1.0f, "{labels: en, hide_thoughts: true, show_confidence: true}");
  CHECK_MESSAGE(en.rfind("Probably, 答えは四です。\n(confidence 0.61, after deep thought)\n", 0) == 0, en);
  CHECK(en.find("[") == std::string::npos);
}

TEST_CASE("think_aloud: a turn that ends or is cancelled with a stream still open keeps neither the screen nor state") {
  // test_mumbler: "open:TEXT" leaves its intuition stream open; with conclude it then publishes the turn's TurnDone.
  auto yaml = [](bool conclude) {
    return std::string("modules:\n  mumble:\n    plugin: test_mumbler\n    config: {conclude: ") +
           (conclude ? "true" : "false") +
           "}\n    inputs: {percept: turn.input}\n    outputs: {thought: thought.stream, done: turn.done}\n"
           "  out:\n    plugin: think_aloud\n    inputs: {thought: thought.stream, done: turn.done}\n";
  };
  runtime::RuntimeOptions quick;
  quick.turn_linger = 20ms;
  auto slots_of_output = [](PipelineHarness& h) {
    for (const auto& m : h.rt->module_stats())
      if (m.id == "out") return m.turn_slots;
    return std::numeric_limits<std::size_t>::max();
  };
  auto run = [&](bool conclude) {
    PipelineHarness h(yaml(conclude), kDirs, {}, quick);
    std::string expected;
    for (int i = 0; i < 40; ++i) {
      const std::string n = std::to_string(i);
      const TurnId open = h.rt->submit("open:考え" + n, "alice");
      REQUIRE(h.rt->wait_idle(5s));
      if (!conclude) h.rt->cancel_turn(open);
      const TurnId next = h.rt->submit("次" + n, "alice");
      REQUIRE(h.rt->wait_idle(5s));
      if (!conclude) h.rt->cancel_turn(next);  // without a concluding module, only a cancel ends a turn
      expected += "[直感] 考え" + n + "\n[直感] 次" + n + "\n";
    }
    // Every turn's output, in order: the open streams were closed when their turns ended.
    CHECK(h.text() == expected);
    // And the output holds no state of the finished turns once the linger passed.
    const auto t0 = std::chrono::steady_clock::now();
    while (slots_of_output(h) != 0 && std::chrono::steady_clock::now() - t0 < 3s) std::this_thread::sleep_for(10ms);
    CHECK(slots_of_output(h) == 0);
  };
  SUBCASE("ended by its TurnDone") { run(true); }
  SUBCASE("cancelled, without a TurnDone") { run(false); }
}

TEST_CASE("answer_only writes just the answer, one line per turn") {
  Layout layout;
  layout.output = "answer_only";
  Session s(layout.yaml(), standard);
  s.turn("明日の天気は？");
  s.turn("明後日は？");
  CHECK(s.harness->text() == "晴れです。\n晴れです。\n");
}

TEST_CASE("a region whose model throws does not end the chat (failure_policy isolate)") {
  auto broken_intuition = [](const GenerationRequest& r) {
    if (role_of(r) == Role::intuition) return Script{{}, true};
    return standard(r);
  };
  Session s(Layout{}.yaml(), broken_intuition);
  const auto first = s.turn("こんにちは");
  const auto second = s.turn("元気？");
  CHECK(first->answer == "晴れです。");
  CHECK(second->answer == "晴れです。");
  CHECK_FALSE(s.harness->rt->failed());
  for (const auto& m : s.harness->rt->module_stats())
    if (m.id == "right") CHECK(m.failures == 2);
  // The failed stage was still closed for the outputs.
  const auto intuition = select(s.lines(), "intuition");
  REQUIRE(intuition.size() == 2);
  CHECK(intuition[0]["last"] == true);
  CHECK(intuition[0]["text"] == "");
}

TEST_CASE("when composing the answer fails, the turn still ends, with confidence 0") {
  auto broken_answer = [](const GenerationRequest& r) {
    if (role_of(r) == Role::answer) return Script{{}, true};
    return standard(r);
  };
  Session s(Layout{}.yaml(), broken_answer);
  const auto done = s.turn("こんにちは");
  CHECK(done->confidence == 0.0);
  CHECK(done->answer.find("まとめられませんでした") != std::string::npos);
}

TEST_CASE("jsonl: one JSON object per line, the documented fields, one closing turn_done line per turn") {
  Session s(Layout{}.yaml(), standard);
  const auto a = s.turn("明日の天気は？");
  const auto b = s.turn("ありがとう、嬉しい！");
  const auto lines = s.lines();
  const std::set<std::string> stages = {"intuition",  "exploration", "analysis", "insight",
                                        "conclusion", "recall",      "emotion"};
  const std::set<std::string> kinds = {"thought", "answer", "memory", "state"};
  for (const auto& l : lines) {
    INFO(l.dump());
    REQUIRE(l.contains("t_ms"));
    CHECK(l["t_ms"].is_number());
    CHECK(l["t_ms"].get<double>() >= 0.0);
    CHECK(l["turn"].is_number_unsigned());
    CHECK(stages.count(l["stage"].get<std::string>()) == 1);
    CHECK(kinds.count(l["kind"].get<std::string>()) == 1);
    CHECK(l["text"].is_string());
    if (l.contains("confidence")) CHECK((l["confidence"].get<double>() >= 0.0 && l["confidence"].get<double>() <= 1.0));
  }
  for (std::size_t i = 1; i < lines.size(); ++i)
    CHECK(lines[i]["t_ms"].get<double>() >=
          (lines[i]["turn"] == lines[i - 1]["turn"] ? lines[i - 1]["t_ms"].get<double>() : 0.0));
  for (TurnId t : {a.header.turn, b.header.turn}) {
    const json* td = turn_done_line(lines, t);
    REQUIRE(td);
    CHECK((*td)["stage"] == "conclusion");
    CHECK((*td)["kind"] == "state");
    for (const char* key : {"user_text", "strategy", "confidence", "cancelled", "first_output_ms", "answer_done_ms"})
      CHECK_MESSAGE(td->contains(key), key);
    // Spelled as before the enums: API clients read these strings.
    CHECK((*td)["finish_reason"] == "length");  // the scripted answer runs to its max_tokens
    CHECK((*td)["strategy"] == "deep");
    // Nothing of the turn after its turn_done line.
    bool after = false;
    for (const auto& l : lines) {
      if (&l == td)
        after = true;
      else if (after)
        CHECK(l["turn"] != t);
    }
  }
  // The second turn speaks with feeling: its emotion report precedes its answer.
  bool emotion_seen = false;
  for (const auto& l : lines)
    if (l["turn"] == b.header.turn && l["stage"] == "emotion") emotion_seen = true;
  CHECK(emotion_seen);
}

TEST_CASE("sampling seeds: the same seed and turn give the same seed, roles and turns differ") {
  Layout layout;
  layout.right = "{seed: 7}";
  layout.frontal = "{seed: 7, budget_ms: 5000, insight_grace_ms: 0}";
  auto seeds = [&] {
    Session s(layout.yaml(), standard);
    s.turn("一");
    s.turn("二");
    const auto intuition = s.model->requests(Role::intuition);
    const auto answer = s.model->requests(Role::answer);
    return std::vector<std::uint64_t>{intuition.at(0).seed, intuition.at(1).seed, answer.at(0).seed, answer.at(1).seed};
  };
  const auto first = seeds();
  CHECK(seeds() == first);
  CHECK(first[0] != first[1]);
  CHECK(first[0] != first[2]);
}
