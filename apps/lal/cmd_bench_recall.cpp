// lal bench recall — does long-term recall find what was said? Turn-level recall@1/5/10 per question type, lal's
// recall next to a plain BM25 baseline in the same run, and recall latency at scale.
//
// Quality (--data FILE.jsonl, from tests/memory/gen_recall_bench.py): for each conversation (one user each), every
// turn is stored as an episode in a fresh memory database exactly as the long_term plugin stores it (facts
// extracted; importance from lal::memory::score_importance; the turn's time as its creation time). Then its
// questions are asked in order, at their time, with the recall the long_term plugin runs (lal/memory/recall.hpp,
// default settings), returning 10 memories; with rehearsal on (the default, as in a chat) each recall records a use
// of what it returned before the next question. A recalled fact counts as the turn it was stated in; recall@k = the
// share of a question's evidence turns among the first k distinct turns recalled. The baseline is BM25 (same
// segmentation, k1 = 1.2, b = 0.75) over the same turns' text and answer, nothing else.
//
// Latency (--scale N): one user with N memories (the data's turns, repeated at different times over two years),
// then --recalls questions from the data, each with its rehearsal write, timed; p50/p95/p99 in ms.
#include <time.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <set>

#include "command.hpp"
#include "lal/memory/importance.hpp"
#include "memory_cli.hpp"

namespace lal::cli {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

struct Turn {
  int id = 0;
  std::int64_t time_ns = 0;
  std::string user, answer;
};
struct Question {
  std::string type, text;
  std::int64_t time_ns = 0;
  std::vector<int> evidence;
};
struct Conversation {
  std::string id;
  std::vector<Turn> turns;
  std::vector<Question> questions;
};

std::vector<Conversation> read_data(const std::string& file) {
  std::ifstream in(file);
  if (!in) throw std::runtime_error("cannot read '" + file + "' (make it with tests/memory/gen_recall_bench.py)");
  std::vector<Conversation> out;
  std::string line;
  for (std::size_t n = 1; std::getline(in, line); ++n) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    try {
      const json j = json::parse(line);
      Conversation c;
      c.id = j.at("conversation").get<std::string>();
      for (const auto& t : j.at("turns"))
        c.turns.push_back({t.at("id").get<int>(), t.at("time_ns").get<std::int64_t>(), t.at("user").get<std::string>(),
                           t.value("answer", std::string())});
      for (const auto& q : j.at("questions"))
        c.questions.push_back({q.at("type").get<std::string>(), q.at("text").get<std::string>(),
                               q.at("time_ns").get<std::int64_t>(), q.at("evidence").get<std::vector<int>>()});
      out.push_back(std::move(c));
    } catch (const std::exception& e) {
      throw std::runtime_error(file + ":" + std::to_string(n) + ": " + e.what());
    }
  }
  if (out.empty()) throw std::runtime_error("'" + file + "' holds no conversations");
  return out;
}

struct Score {
  std::size_t n = 0;
  double r1 = 0, r5 = 0, r10 = 0;
  void add(const std::vector<int>& turns, const std::vector<int>& evidence) {
    auto at = [&](std::size_t k) {
      std::size_t hit = 0;
      for (int e : evidence)
        if (std::find(turns.begin(), turns.begin() + static_cast<long>(std::min(k, turns.size())), e) !=
            turns.begin() + static_cast<long>(std::min(k, turns.size())))
          ++hit;
      return static_cast<double>(hit) / static_cast<double>(evidence.size());
    };
    ++n;
    r1 += at(1);
    r5 += at(5);
    r10 += at(10);
  }
  double mean(double v) const { return n ? v / static_cast<double>(n) : 0.0; }
};

std::string load_average() {
  std::ifstream in("/proc/loadavg");
  std::string a;
  in >> a;
  return a;
}

double percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<std::size_t>(q * static_cast<double>(v.size())))];
}

std::string temp_db(const std::string& tag) {
  return (fs::temp_directory_path() / ("lal-bench-recall-" + tag + "-" + std::to_string(::getpid()) + ".db")).string();
}

void remove_db(const std::string& path) {
  std::error_code ec;
  for (const char* s : {"", "-wal", "-shm"}) fs::remove(path + s, ec);
}

memory::MemoryStore open_store(const std::string& path) {
  memory::DbOptions o;
  o.path = path;
  o.owner = "bench";
  return memory::MemoryStore(o);
}

int quality(const std::vector<Conversation>& data, bool rehearse, bool as_json) {
  const std::string db = temp_db("quality");
  remove_db(db);
  std::map<std::string, Score> lal_by_type, bm25_by_type;
  Score lal_all, bm25_all;
  std::vector<double> latency_ms;
  double jaccard_sum = 0;
  std::size_t jaccard_n = 0;
  {
    auto store = open_store(db);
    memory::RecallSettings lal_settings, bm25_settings;
    bm25_settings.lexical_only = true;
    for (const auto& c : data) {
      memory::UserIndex lal_index, bm25_index;
      std::map<std::int64_t, int> turn_of;  // memory id → turn id
      for (const auto& t : c.turns) {
        memory::EpisodeInput in;
        in.user = c.id;
        in.user_text = t.user;
        in.answer = t.answer;
        in.importance = memory::score_importance(t.user).score;
        in.created_ns = t.time_ns;
        const auto w = store.store_episode(in, true);
        for (const auto& m : w.added) {
          turn_of[m.id] = t.id;
          lal_index.add(m);
        }
        for (const auto& [id, h] : w.rehearsed) lal_index.set_uses(id, h);
        for (const auto& [old_id, new_id] : w.superseded) lal_index.set_superseded(old_id, new_id);
        bm25_index.add(w.added.front());
      }
      std::vector<std::int64_t> previous;
      for (const auto& q : c.questions) {
        const auto t0 = std::chrono::steady_clock::now();
        const auto found = lal_index.recall(q.text, 10, q.time_ns, lal_settings);
        if (rehearse) {
          const auto uses = memory::rehearsals(found, q.time_ns);
          store.record_uses(c.id, uses);
          for (const auto& [id, h] : uses) lal_index.set_uses(id, h);
        }
        latency_ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
        auto turns_of = [&](const std::vector<memory::Recalled>& rs) {
          std::vector<int> turns;
          for (const auto& r : rs) {
            const auto& row = r.memory->row;
            const int turn = turn_of.at(row.id);
            if (std::find(turns.begin(), turns.end(), turn) == turns.end()) turns.push_back(turn);
          }
          return turns;
        };
        const auto lal_turns = turns_of(found);
        const auto bm25_turns = turns_of(bm25_index.recall(q.text, 10, q.time_ns, bm25_settings));
        lal_by_type[q.type].add(lal_turns, q.evidence);
        lal_all.add(lal_turns, q.evidence);
        bm25_by_type[q.type].add(bm25_turns, q.evidence);
        bm25_all.add(bm25_turns, q.evidence);
        std::vector<std::int64_t> ids;
        for (const auto& r : found) ids.push_back(r.memory->row.id);
        if (!previous.empty() && !ids.empty()) {
          std::set<std::int64_t> a(previous.begin(), previous.end()), b(ids.begin(), ids.end()), u(a);
          u.insert(b.begin(), b.end());
          std::size_t common = 0;
          for (auto x : a) common += b.count(x);
          jaccard_sum += static_cast<double>(common) / static_cast<double>(u.size());
          ++jaccard_n;
        }
        previous = ids;
      }
    }
  }
  remove_db(db);
  std::size_t turns = 0;
  for (const auto& c : data) turns += c.turns.size();
  if (as_json) {
    json j = {{"conversations", data.size()}, {"turns", turns}, {"rehearsal", rehearse}};
    auto row = [](const Score& s) {
      return json{{"n", s.n}, {"r1", s.mean(s.r1)}, {"r5", s.mean(s.r5)}, {"r10", s.mean(s.r10)}};
    };
    for (const auto& [type, s] : lal_by_type) j["types"][type] = {{"lal", row(s)}, {"bm25", row(bm25_by_type[type])}};
    j["all"] = {{"lal", row(lal_all)}, {"bm25", row(bm25_all)}};
    j["recall_ms"] = {{"p50", percentile(latency_ms, 0.5)}, {"p95", percentile(latency_ms, 0.95)}};
    j["consecutive_top10_jaccard"] = jaccard_n ? jaccard_sum / static_cast<double>(jaccard_n) : 0.0;
    std::cout << j.dump(2) << "\n";
    return 0;
  }
  std::cout << data.size() << " conversations, " << turns << " turns, " << lal_all.n << " questions; rehearsal "
            << (rehearse ? "on" : "off") << "\n\n";
  std::cout << std::left << std::setw(18) << "question type" << std::right << std::setw(6) << "n"
            << "   "
            << "lal R@1  R@5  R@10"
            << "   "
            << "BM25 R@1  R@5  R@10"
            << "   "
            << "Δ R@10\n";
  auto line = [&](const std::string& name, const Score& a, const Score& b) {
    std::cout << std::left << std::setw(18) << name << std::right << std::setw(6) << a.n << std::fixed
              << std::setprecision(2) << "      " << a.mean(a.r1) << " " << a.mean(a.r5) << "  " << a.mean(a.r10)
              << "        " << b.mean(b.r1) << " " << b.mean(b.r5) << "  " << b.mean(b.r10) << "    " << std::showpos
              << a.mean(a.r10) - b.mean(b.r10) << std::noshowpos << "\n";
  };
  for (const auto& [type, s] : lal_by_type) line(type, s, bm25_by_type[type]);
  line("all", lal_all, bm25_all);
  std::cout << "\nlal recall (with rehearsal write): p50 " << std::setprecision(3) << percentile(latency_ms, 0.5)
            << " ms, p95 " << percentile(latency_ms, 0.95) << " ms; consecutive questions' top-10 Jaccard "
            << (jaccard_n ? jaccard_sum / static_cast<double>(jaccard_n) : 0.0) << "\n";
  return 0;
}

int scale(const std::vector<Conversation>& data, std::size_t n, std::size_t recalls) {
  const std::string db = temp_db("scale");
  remove_db(db);
  std::vector<const Turn*> pool;
  std::vector<const Question*> questions;
  for (const auto& c : data) {
    for (const auto& t : c.turns) pool.push_back(&t);
    for (const auto& q : c.questions) questions.push_back(&q);
  }
  std::mt19937_64 rng(7);
  const std::string user = "scale";
  const std::int64_t t0 = 1'767'225'600LL * 1'000'000'000LL, span = 730LL * 86400 * 1'000'000'000LL;
  std::vector<double> ms, recall_ms, cpu_ms;
  double load_ms = 0;
  auto thread_cpu_ms = [] {
    timespec ts{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) * 1e3 + static_cast<double>(ts.tv_nsec) * 1e-6;
  };
  {
    auto store = open_store(db);
    {
      memory::Database::Transaction tx(store.db());
      for (std::size_t i = 0; i < n; ++i) {
        const Turn& t = *pool[i % pool.size()];
        memory::StoredMemory m;
        m.user = user;
        m.text = t.user;
        m.answer = t.answer;
        m.importance = memory::score_importance(t.user).score;
        m.uses =
            memory::UseHistory::created_at(t0 + static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(span)));
        store.insert_raw(m);
      }
      tx.commit();
    }
    const auto l0 = std::chrono::steady_clock::now();
    auto index = load_index(store, user);
    load_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - l0).count();
    const memory::RecallSettings st;
    const std::int64_t now = t0 + span + 86400LL * 1'000'000'000LL;
    for (std::size_t i = 0; i < recalls; ++i) {
      const Question& q = *questions[rng() % questions.size()];
      const auto a = std::chrono::steady_clock::now();
      const double c0 = thread_cpu_ms();
      const auto found = index.recall(q.text, 10, now, st);
      recall_ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - a).count());
      const auto uses = memory::rehearsals(found, now);
      store.record_uses(user, uses);
      for (const auto& [id, h] : uses) index.set_uses(id, h);
      cpu_ms.push_back(thread_cpu_ms() - c0);
      ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - a).count());
    }
  }
  std::error_code ec;
  const auto bytes = fs::file_size(db, ec);
  remove_db(db);
  std::cout << std::fixed << std::setprecision(2) << n << " memories for one user, " << recalls
            << " recalls of 10\n  wall, recall + its rehearsal write: p50 " << percentile(ms, 0.5) << " ms, p95 "
            << percentile(ms, 0.95) << " ms, p99 " << percentile(ms, 0.99) << " ms\n  wall, recall alone:              "
            << "p50 " << percentile(recall_ms, 0.5) << " ms, p95 " << percentile(recall_ms, 0.95) << " ms, p99 "
            << percentile(recall_ms, 0.99) << " ms\n  CPU time of this thread, both:    p50 " << percentile(cpu_ms, 0.5)
            << " ms, p95 " << percentile(cpu_ms, 0.95) << " ms, p99 " << percentile(cpu_ms, 0.99)
            << " ms\n  index load " << load_ms << " ms; database " << (ec ? 0 : bytes / 1024) << " KiB; load average "
            << load_average() << "\n";
  return 0;
}

int bench_recall_command(const std::vector<std::string>& args) {
  po::options_description desc("Options");
  add_common_options(desc);
  desc.add_options()("data", po::value<std::string>(), "benchmark JSONL (tests/memory/gen_recall_bench.py OUT.jsonl)")(
      "no_rehearsal", "do not record a use of what each recall returns")(
      "scale", po::value<std::size_t>(), "latency instead: one user with this many memories")(
      "recalls", po::value<std::size_t>()->default_value(1000), "--scale: recalls to time")("json",
                                                                                            "quality results as JSON");
  po::variables_map vm;
  if (!parse_command_line("bench recall", "--data FILE.jsonl [--no_rehearsal] [--json] | --data FILE --scale N", args,
                          desc, {}, vm))
    return 0;
  if (!vm.count("data"))
    throw UsageError("--data FILE.jsonl is required (python3 tests/memory/gen_recall_bench.py FILE.jsonl)");
  const auto data = read_data(vm["data"].as<std::string>());
  if (vm.count("scale")) {
    const auto n = vm["scale"].as<std::size_t>();
    const auto r = vm["recalls"].as<std::size_t>();
    if (n < 1 || n > 10'000'000) throw UsageError("--scale must be in 1..10000000");
    if (r < 1) throw UsageError("--recalls must be at least 1");
    return scale(data, n, r);
  }
  return quality(data, vm.count("no_rehearsal") == 0, vm.count("json") != 0);
}

}  // namespace

LAL_COMMAND("bench recall", "long-term recall@1/5/10 per question type next to BM25, and recall latency at scale",
            bench_recall_command);

}  // namespace lal::cli
