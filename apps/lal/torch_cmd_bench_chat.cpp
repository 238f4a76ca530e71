// lal bench chat — time to first visible output vs time to the final answer, per turn, for the thinking pipeline
// and for a think-then-answer baseline, in the same run.
#include <algorithm>
#include <iostream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <unistd.h>
#include <cstdio>

#include "chat_session.hpp"
#include "lal/messages.hpp"

namespace lal::cli {
namespace {

const std::vector<std::string> kPrompts = {
    "光合成とは何ですか？",          "オームの法則を説明してください。", "二分探索の計算量は？",
    "日本の首都はどこですか？",      "コンデンサの役割を教えて。",       "再帰関数とは何ですか？",
    "三角形の内角の和はいくつ？",    "TCPとUDPの違いは？",               "明日の予定を一緒に考えて。",
    "私の名前は太郎です。覚えてね。",
};

struct TurnTimes {
  double first_visible_ms = -1, recall_ms = -1, analysis_done_ms = -1, answer_first_ms = -1, answer_done_ms = -1;
  std::map<std::string, int> tokens;  // model tokens per stage: times compare only at equal counts
};

struct Measure {
  std::string config;
  double start_ms = 0;  // starting the pipeline: loading the model and preparing it (warm-up), before turn 1
  std::vector<TurnTimes> turns;
};

double median(std::vector<double> v) {
  v.erase(std::remove_if(v.begin(), v.end(), [](double x) { return x < 0; }), v.end());
  if (v.empty()) return -1;
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

Measure run_config(ChatOptions options, int turns) {
  runtime::RuntimeOptions ro;
  ro.output = [](std::string_view) {};  // measure, don't print
  const std::int64_t start = monotonic_ns();
  ChatSession session = start_chat_session(options, ro);
  const double start_ms = static_cast<double>(monotonic_ns() - start) / 1e6;
  runtime::Runtime& rt = *session.runtime;

  // Observe exactly what the output strategy shows: the topics wired to its inputs.
  std::mutex mu;
  std::map<TurnId, TurnTimes> times;
  std::map<TurnId, std::int64_t> submitted;
  auto ms_since = [&](TurnId turn, std::int64_t t) {
    return static_cast<double>(t - submitted[turn]) / 1e6;
  };
  for (const auto& m : rt.spec().modules) {
    if (m.loaded->descriptor->kind != ModuleKind::output_strategy) continue;
    // What this output shows: answer_only and hide_thoughts show only the answer.
    const bool shows_thoughts = m.plugin != "answer_only" && !(m.config.count("hide_thoughts") &&
                                                                m.config.at("hide_thoughts").is_bool() &&
                                                                m.config.at("hide_thoughts").as_bool());
    for (const auto& w : m.wires) {
      const PortSpec* p = m.loaded->descriptor->find_port(w.port);
      if (!p || p->type != ThoughtChunk::kTypeName) continue;
      rt.observe<ThoughtChunk>(w.topic, [&, shows_thoughts](const Delivery<ThoughtChunk>& d) {
        std::lock_guard<std::mutex> lk(mu);
        auto& t = times[d.header.turn];
        const double ms = ms_since(d.header.turn, d.header.timestamp_ns);
        const bool visible = shows_thoughts || d->kind == ChunkKind::answer;
        if (t.first_visible_ms < 0 && visible && !d->text.empty()) t.first_visible_ms = ms;
        if (d->stage == Stage::analysis && d->last) t.analysis_done_ms = ms;
        if (d->has_token) ++t.tokens[to_string(d->stage)];
        if (d->kind == ChunkKind::answer) {
          if (t.answer_first_ms < 0 && !d->text.empty()) t.answer_first_ms = ms;
          if (d->last) t.answer_done_ms = ms;
        }
      });
    }
    break;
  }
  for (const auto& m : rt.spec().modules)
    if (m.plugin == "hippocampus")
      if (const auto* w = m.wire("recollection"))
        rt.observe<Recollection>(w->topic, [&](const Delivery<Recollection>& d) {
          std::lock_guard<std::mutex> lk(mu);
          times[d.header.turn].recall_ms = ms_since(d.header.turn, d.header.timestamp_ns);
        });

  Measure out;
  out.config = session.config_file;
  out.start_ms = start_ms;
  for (int i = 0; i < turns; ++i) {
    TurnId turn;
    {
      std::lock_guard<std::mutex> lk(mu);
      const std::int64_t now = monotonic_ns();
      turn = rt.submit(kPrompts[static_cast<std::size_t>(i) % kPrompts.size()], "bench");
      submitted[turn] = now;
    }
    rt.wait_idle();
    std::lock_guard<std::mutex> lk(mu);
    out.turns.push_back(times[turn]);
  }
  rt.stop();
  return out;
}

nlohmann::json summarise(const Measure& m) {
  auto col = [&](double TurnTimes::*f) {
    std::vector<double> v;
    for (const auto& t : m.turns) v.push_back(t.*f);
    return v;
  };
  nlohmann::json turns = nlohmann::json::array();
  for (const auto& t : m.turns)
    turns.push_back({{"first_visible_ms", t.first_visible_ms},
                     {"recall_ms", t.recall_ms},
                     {"analysis_done_ms", t.analysis_done_ms},
                     {"answer_first_ms", t.answer_first_ms},
                     {"answer_done_ms", t.answer_done_ms},
                     {"tokens", t.tokens}});
  return {{"config", m.config},
          {"start_ms", m.start_ms},
          {"turns", turns},
          {"median_first_visible_ms", median(col(&TurnTimes::first_visible_ms))},
          {"median_recall_ms", median(col(&TurnTimes::recall_ms))},
          {"median_analysis_done_ms", median(col(&TurnTimes::analysis_done_ms))},
          {"median_answer_first_ms", median(col(&TurnTimes::answer_first_ms))},
          {"median_answer_done_ms", median(col(&TurnTimes::answer_done_ms))}};
}

int bench_chat_command(const std::vector<std::string>& args) {
  po::options_description desc("Options");
  add_common_options(desc);
  add_chat_options(desc);
  desc.add_options()("turns", po::value<int>()->default_value(5), "turns per configuration")(
      "baseline", po::value<std::string>(), "think-then-answer pipeline (default: configs/think-then-answer.yaml)")(
      "json", "print one JSON object");
  po::variables_map vm;
  if (!parse_command_line("bench chat",
                          "[--config FILE] [--baseline FILE] [--model_path DIR] [--turns N] [--json] "
                          "[--plugin_path DIR] [--set PATH=VALUE]",
                          args, desc, {}, vm))
    return 0;
  const int turns = vm["turns"].as<int>();
  if (turns < 1) throw UsageError("--turns must be at least 1");
  ChatOptions options = chat_options_from(vm);
  if (options.memory_db.empty()) options.memory_db = "/tmp/lal-bench-chat-" + std::to_string(::getpid()) + ".db";
  ChatOptions baseline = options;
  baseline.config = vm.count("baseline") ? vm["baseline"].as<std::string>() : data_dir() + "/configs/think-then-answer.yaml";

  const nlohmann::json thinking = summarise(run_config(options, turns));
  const nlohmann::json classic = summarise(run_config(baseline, turns));
  std::remove(options.memory_db.c_str());
  if (vm.count("json")) {
    std::cout << nlohmann::json{{"thinking", thinking}, {"think_then_answer", classic}}.dump() << "\n";
    return 0;
  }
  auto row = [](const char* name, const nlohmann::json& j) {
    char line[200];
    std::snprintf(line, sizeof line, "%-18s %10.1f %10.1f %12.1f %12.1f %12.1f\n", name,
                  j["median_first_visible_ms"].get<double>(), j["median_recall_ms"].get<double>(),
                  j["median_analysis_done_ms"].get<double>(), j["median_answer_first_ms"].get<double>(),
                  j["median_answer_done_ms"].get<double>());
    std::cout << line;
  };
  std::cout << "median over " << turns << " turns (ms)  first-visible     recall  analysis-end  answer-first   answer-done\n";
  row("thinking", thinking);
  row("think-then-answer", classic);
  std::cout << "before turn 1 (loading the model and preparing it): thinking " << thinking["start_ms"].get<double>()
            << " ms, think-then-answer " << classic["start_ms"].get<double>() << " ms\n";
  return 0;
}

}  // namespace

LAL_COMMAND("bench chat", "time to first visible output vs final answer, thinking vs think-then-answer",
            bench_chat_command);

}  // namespace lal::cli
