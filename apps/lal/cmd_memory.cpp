// lal memory — look at, search, export, import and forget a user's memories in a memory database.
//
//   lal memory --memory_db F --user U list [--tier long_term|short_term] [--json]
//   lal memory --memory_db F --user U search TEXT [--k N] [--json]
//   lal memory --memory_db F --user U export FILE.jsonl
//   lal memory --memory_db F [--user U] import FILE.jsonl
//   lal memory --memory_db F --user U forget ID | --all | --match TEXT
//   lal memory --memory_db F [--user U] stats [--json]
//
// Export writes one JSON object per memory (long-term rows with their ids, use history, fact slots and links;
// short-term journal entries) and import reads the same: export → import into an empty file → export gives the same
// lines. Import checks every line before it writes anything, and writes in one transaction: a malformed line is
// reported with its number and nothing is imported. forget deletes the rows (a forgotten episode takes the facts
// stated in it along), then VACUUMs and truncates the write-ahead log, so the text is gone from the files.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <thread>

#include "command.hpp"
#include "memory_cli.hpp"

namespace lal::cli {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

json memory_to_json(const memory::StoredMemory& m) {
  return {{"tier", "long_term"},
          {"id", m.id},
          {"user", m.user},
          {"kind", m.semantic ? "semantic" : "episodic"},
          {"text", m.text},
          {"answer", m.answer},
          {"importance", m.importance},
          {"strategy", to_string(m.strategy)},
          {"emotion", m.emotion},
          {"created_ns", m.uses.created_ns},
          {"use_count", m.uses.count},
          {"recent_uses", m.uses.recent},
          {"slot", m.slot},
          {"superseded_by", m.superseded_by},
          {"source_id", m.source_id}};
}

json journal_to_json(const memory::JournalEntry& j) {
  return {{"tier", "short_term"},
          {"user", j.episode.user},
          {"session", j.session},
          {"text", j.episode.user_text},
          {"answer", j.episode.answer},
          {"importance", j.episode.importance},
          {"strategy", to_string(j.episode.strategy)},
          {"emotion", j.episode.emotion},
          {"created_ns", j.episode.created_ns},
          {"recalls", j.recalls}};
}

/// A line of an export file, checked. Throws std::runtime_error saying what is wrong.
struct ImportLine {
  bool long_term = true;
  memory::StoredMemory memory;
  memory::JournalEntry journal;
};

ImportLine parse_line(const std::string& line) {
  const json j = json::parse(line);  // throws json::parse_error with the byte position
  if (!j.is_object()) throw std::runtime_error("not a JSON object");
  auto str = [&](const char* key, bool required) -> std::string {
    if (!j.contains(key)) {
      if (required) throw std::runtime_error(std::string("missing \"") + key + "\"");
      return {};
    }
    if (!j[key].is_string()) throw std::runtime_error(std::string("\"") + key + "\" must be a string");
    return j[key].get<std::string>();
  };
  auto num = [&](const char* key, double fallback) -> double {
    if (!j.contains(key)) return fallback;
    if (!j[key].is_number()) throw std::runtime_error(std::string("\"") + key + "\" must be a number");
    return j[key].get<double>();
  };
  auto integer = [&](const char* key, std::int64_t fallback) -> std::int64_t {
    if (!j.contains(key)) return fallback;
    if (!j[key].is_number_integer()) throw std::runtime_error(std::string("\"") + key + "\" must be an integer");
    return j[key].get<std::int64_t>();
  };
  ImportLine out;
  const std::string tier = str("tier", true);
  if (tier != "long_term" && tier != "short_term")
    throw std::runtime_error("\"tier\" must be long_term or short_term, not '" + tier + "'");
  out.long_term = tier == "long_term";
  const std::string user = str("user", true), text = str("text", true);
  if (user.empty()) throw std::runtime_error("\"user\" is empty");
  if (text.empty()) throw std::runtime_error("\"text\" is empty");
  const double importance = num("importance", 0.5);
  if (!(importance >= 0 && importance <= 1)) throw std::runtime_error("\"importance\" must be in [0, 1]");
  const std::int64_t created = integer("created_ns", 0);
  if (created <= 0) throw std::runtime_error("\"created_ns\" must be a positive integer (Unix ns)");
  if (out.long_term) {
    auto& m = out.memory;
    m.id = integer("id", 0);
    m.user = user;
    const std::string kind = str("kind", true);
    if (kind != "episodic" && kind != "semantic")
      throw std::runtime_error("\"kind\" must be episodic or semantic, not '" + kind + "'");
    m.semantic = kind == "semantic";
    m.text = text;
    m.answer = str("answer", false);
    m.importance = importance;
    m.strategy = parse_optional_enum<Strategy>(str("strategy", false), "\"strategy\"");
    m.emotion = str("emotion", false);
    m.uses.created_ns = created;
    m.uses.count = integer("use_count", 1);
    if (m.uses.count < 1) throw std::runtime_error("\"use_count\" must be ≥ 1");
    if (j.contains("recent_uses")) {
      if (!j["recent_uses"].is_array()) throw std::runtime_error("\"recent_uses\" must be an array of integers");
      for (const auto& t : j["recent_uses"]) {
        if (!t.is_number_integer()) throw std::runtime_error("\"recent_uses\" must be an array of integers");
        m.uses.recent.push_back(t.get<std::int64_t>());
      }
      if (m.uses.recent.size() > memory::kExactUses)
        throw std::runtime_error("\"recent_uses\" holds more than " + std::to_string(memory::kExactUses) + " times");
    } else {
      m.uses.recent = {created};
    }
    m.slot = str("slot", false);
    m.superseded_by = integer("superseded_by", 0);
    m.source_id = integer("source_id", 0);
  } else {
    auto& e = out.journal;
    e.session = str("session", false);
    if (e.session.empty()) e.session = "imported";
    e.episode.user = user;
    e.episode.user_text = text;
    e.episode.answer = str("answer", false);
    e.episode.importance = importance;
    e.episode.strategy = parse_optional_enum<Strategy>(str("strategy", false), "\"strategy\"");
    e.episode.emotion = str("emotion", false);
    e.episode.created_ns = created;
    e.recalls = integer("recalls", 0);
  }
  return out;
}

/// Run `write` in a transaction, retrying while another program holds the database (up to ~10 s in all).
template <class F>
void with_retries(memory::MemoryStore& store, F&& write) {
  for (int attempt = 0;; ++attempt) {
    try {
      write();
      return;
    } catch (const memory::DbError& e) {
      if (e.kind() != memory::DbErrorKind::locked || attempt >= 4) throw;
      std::this_thread::sleep_for(std::chrono::milliseconds(200 << attempt));
    }
  }
  (void)store;
}

void require_user(memory::MemoryStore& store, const std::string& user) {
  if (user.empty()) throw UsageError("--user is required for this action");
  if (store.has_user(user)) return;
  std::string known;
  for (const auto& u : store.users()) known += (known.empty() ? "" : ", ") + u;
  throw std::runtime_error("user '" + user + "' has no memories in '" + store.path() + "'" +
                           (known.empty() ? " (the database holds no memories)" : " (users: " + known + ")"));
}

int memory_command(const std::vector<std::string>& args) {
  po::options_description desc("Options");
  add_common_options(desc);
  desc.add_options()("memory_db", po::value<std::string>()->default_value("~/.local/share/lal/memory.db"),
                     "the memory database (SQLite), as given to lal chat")(
      "user", po::value<std::string>()->default_value(""), "whose memories")(
      "busy_timeout_ms", po::value<int>()->default_value(5000),
      "how long to wait for another program's lock (then retried 4 times before giving up)")(
      "tier", po::value<std::string>()->default_value("all"), "list: long_term | short_term | all")(
      "json", "list / search / stats: one JSON object per line")(
      "k", po::value<int>()->default_value(10), "search: how many memories")("all", "forget: every memory of the user")(
      "match", po::value<std::string>(), "forget: memories whose text or answer contains TEXT")(
      "action", po::value<std::string>(), "list | search | export | import | forget | stats")(
      "argument", po::value<std::string>(), "search TEXT, export/import FILE, forget ID");
  po::positional_options_description pos;
  pos.add("action", 1).add("argument", 1);
  po::variables_map vm;
  if (!parse_command_line("memory",
                          "--memory_db FILE --user NAME (list [--tier T] [--json] | search TEXT [--k N] | export "
                          "FILE.jsonl | import FILE.jsonl | forget ID|--all|--match TEXT | stats)",
                          args, desc, pos, vm))
    return 0;
  if (!vm.count("action")) throw UsageError("say what to do: list, search, export, import, forget or stats");
  const std::string action = vm["action"].as<std::string>();
  const std::string user = vm["user"].as<std::string>();
  const std::string argument = vm.count("argument") ? vm["argument"].as<std::string>() : "";
  const bool as_json = vm.count("json") != 0;
  const std::string db_path = memory::expand_home(vm["memory_db"].as<std::string>());
  static const char* kActions[] = {"list", "search", "export", "import", "forget", "stats"};
  if (std::find_if(std::begin(kActions), std::end(kActions), [&](const char* a) { return action == a; }) ==
      std::end(kActions))
    throw UsageError("unknown action '" + action + "' (list, search, export, import, forget, stats)");
  if (action != "import" && !fs::exists(db_path))
    throw std::runtime_error("memory database '" + db_path + "' does not exist");

  memory::DbOptions o;
  o.path = db_path;
  o.owner = "memory";
  o.busy_timeout_ms = vm["busy_timeout_ms"].as<int>();
  if (o.busy_timeout_ms < 0) throw UsageError("--busy_timeout_ms must be ≥ 0");
  memory::MemoryStore store(o);

  if (action == "list") {
    require_user(store, user);
    const std::string tier = vm["tier"].as<std::string>();
    if (tier != "all" && tier != "long_term" && tier != "short_term")
      throw UsageError("--tier must be long_term, short_term or all, not '" + tier + "'");
    if (tier != "short_term") {
      const auto index = load_index(store, user);
      for (const auto& im : index.items()) {
        const auto& m = im.row;
        if (as_json) {
          std::cout << memory_to_json(m).dump() << "\n";
          continue;
        }
        std::cout << "#" << m.id << " long_term " << (m.semantic ? "semantic" : "episodic") << " "
                  << local_time_of(m.uses.created_ns) << " importance " << m.importance << " uses " << m.uses.count
                  << (m.slot.empty() ? "" : " slot " + m.slot)
                  << (m.superseded_by ? " (superseded by #" + std::to_string(m.superseded_by) + ")" : "") << "\n  "
                  << memory::display_text(m) << "\n";
      }
    }
    if (tier != "long_term") {
      for (const auto& j : store.journal("", user)) {
        if (as_json) {
          std::cout << journal_to_json(j).dump() << "\n";
          continue;
        }
        std::cout << "short_term journal (session " << j.session << ") " << local_time_of(j.episode.created_ns)
                  << " importance " << j.episode.importance << "\n  "
                  << memory::episode_text(j.episode.user_text, j.episode.answer) << "\n";
      }
    }
    return 0;
  }

  if (action == "search") {
    require_user(store, user);
    if (argument.empty()) throw UsageError("search needs the TEXT to search for");
    const int k = vm["k"].as<int>();
    if (k < 1 || k > 10000) throw UsageError("--k must be in 1..10000, got " + std::to_string(k));
    const auto index = load_index(store, user);
    const auto found = search_memories(index, argument, static_cast<std::size_t>(k));
    if (as_json) {
      for (const auto& r : found) {
        json j = memory_to_json(r.memory->row);
        j["display"] = r.text;
        j["score"] = r.score;
        j["bm25"] = r.bm25;
        j["cosine"] = r.cosine;
        j["activation"] = r.activation;
        std::cout << j.dump() << "\n";
      }
    } else if (found.empty()) {
      std::cout << "(nothing recalled for that cue)\n";
    } else {
      print_recalled(std::cout, found);
    }
    return 0;
  }

  if (action == "export") {
    require_user(store, user);
    if (argument.empty()) throw UsageError("export needs the FILE.jsonl to write");
    const std::string tmp = argument + ".tmp";
    {
      std::ofstream out(tmp, std::ios::trunc);
      if (!out) throw std::runtime_error("cannot write '" + tmp + "'");
      for (const auto& m : store.load(user)) out << memory_to_json(m).dump() << "\n";
      for (const auto& j : store.journal("", user)) out << journal_to_json(j).dump() << "\n";
      out.flush();
      if (!out) throw std::runtime_error("writing '" + tmp + "' failed (disk full?); nothing exported");
    }
    fs::rename(tmp, argument);
    std::cerr << "exported the memories of '" << user << "' to " << argument << "\n";
    return 0;
  }

  if (action == "import") {
    if (argument.empty()) throw UsageError("import needs the FILE.jsonl to read");
    std::ifstream in(argument);
    if (!in) throw std::runtime_error("cannot read '" + argument + "'");
    std::vector<ImportLine> lines;
    std::string line;
    for (std::size_t n = 1; std::getline(in, line); ++n) {
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      try {
        lines.push_back(parse_line(line));
      } catch (const std::exception& e) {
        throw std::runtime_error(argument + ":" + std::to_string(n) + ": " + e.what() + "; nothing was imported");
      }
      const std::string& line_user =
          lines.back().long_term ? lines.back().memory.user : lines.back().journal.episode.user;
      if (!user.empty() && line_user != user)
        throw std::runtime_error(argument + ":" + std::to_string(n) + ": belongs to user '" + line_user +
                                 "', not --user '" + user + "'; nothing was imported");
    }
    std::size_t n_long = 0, n_short = 0;
    with_retries(store, [&] {
      n_long = n_short = 0;
      memory::Database::Transaction tx(store.db());
      std::map<std::int64_t, std::int64_t> new_id;  // exported id → id here
      std::vector<std::pair<std::int64_t, const memory::StoredMemory*>> linked;
      for (const auto& l : lines) {
        if (l.long_term) {
          memory::StoredMemory m = l.memory;
          m.superseded_by = m.source_id = 0;  // linked below, once every id is known
          const std::int64_t id = store.insert_raw(m);
          if (l.memory.id) new_id[l.memory.id] = id;
          if (l.memory.superseded_by || l.memory.source_id) linked.emplace_back(id, &l.memory);
          ++n_long;
        } else {
          store.journal_add_in_transaction(l.journal.session, l.journal.episode, l.journal.recalls);
          ++n_short;
        }
      }
      auto map = [&](std::int64_t old) -> std::int64_t {
        auto it = new_id.find(old);
        return it == new_id.end() ? 0 : it->second;
      };
      for (const auto& [id, m] : linked) store.set_links(id, map(m->superseded_by), map(m->source_id));
      tx.commit();
    });
    std::cerr << "imported " << n_long << " long-term memories and " << n_short << " short-term episodes into "
              << store.path() << "\n";
    return 0;
  }

  if (action == "forget") {
    require_user(store, user);
    const bool all = vm.count("all") != 0;
    const std::string match = vm.count("match") ? vm["match"].as<std::string>() : "";
    std::vector<std::int64_t> ids;
    if ((all ? 1 : 0) + (match.empty() ? 0 : 1) + (argument.empty() ? 0 : 1) != 1)
      throw UsageError("forget takes exactly one of: an ID, --all, --match TEXT");
    if (!argument.empty()) {
      std::size_t used = 0;
      std::int64_t id = 0;
      try {
        id = std::stoll(argument, &used);
      } catch (const std::exception&) {
        used = 0;
      }
      if (used != argument.size() || id <= 0) throw UsageError("forget ID: '" + argument + "' is not a memory id");
      bool found = false;
      for (const auto& m : store.load(user)) found = found || m.id == id;
      if (!found)
        throw std::runtime_error("user '" + user + "' has no memory #" + argument + " in '" + store.path() + "'");
      ids.push_back(id);
    }
    std::int64_t n = 0;
    with_retries(store, [&] { n = store.forget(user, ids, match, all); });
    std::cout << "forgot " << n << " memories of '" << user << "'\n";
    return 0;
  }

  // stats
  std::vector<std::string> users = user.empty() ? store.users() : std::vector<std::string>{user};
  if (!user.empty()) require_user(store, user);
  std::error_code ec;
  const auto bytes = fs::file_size(db_path, ec);
  const bool pending = fs::exists(memory::pending_file_of(db_path), ec);
  if (!as_json)
    std::cout << store.path() << ": " << (ec ? 0 : bytes) / 1024 << " KiB, " << store.users().size() << " users"
              << (pending ? ", memories waiting in " + memory::pending_file_of(db_path) : "") << "\n";
  for (const auto& u : users) {
    std::int64_t episodic = 0, semantic = 0, superseded = 0, uses = 0, oldest = 0, newest = 0;
    for (const auto& m : store.load(u)) {
      (m.semantic ? semantic : episodic) += 1;
      if (m.superseded_by) ++superseded;
      uses += m.uses.count;
      oldest = oldest ? std::min(oldest, m.uses.created_ns) : m.uses.created_ns;
      newest = std::max(newest, m.uses.created_ns);
    }
    const auto journal = store.journal("", u).size();
    if (as_json) {
      std::cout << json{{"user", u},
                        {"episodic", episodic},
                        {"semantic", semantic},
                        {"superseded", superseded},
                        {"short_term", journal},
                        {"uses", uses},
                        {"oldest_ns", oldest},
                        {"newest_ns", newest}}
                       .dump()
                << "\n";
    } else {
      std::cout << u << ": " << episodic << " episodes, " << semantic << " facts (" << superseded
                << " superseded by newer values), " << journal << " short-term episodes in the journal, " << uses
                << " uses";
      if (oldest) std::cout << ", " << local_time_of(oldest) << " … " << local_time_of(newest);
      std::cout << "\n";
    }
  }
  return 0;
}

}  // namespace

LAL_COMMAND("memory", "list, search, export, import and forget a user's memories (--memory_db, --user)",
            memory_command);

}  // namespace lal::cli
