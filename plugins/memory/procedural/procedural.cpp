// procedural — how this user's recurring requests were answered well, so familiar requests skip deep analysis.
//
// Pattern of a request: its *template*, the text normalised for matching (lower-case, full-width folded, spaces
// collapsed), with every number masked as `#` and closing punctuation dropped: 「12+35は？」 and 「7+8は」 share
// the template `#+#は`. A request whose template is new joins the most similar known pattern instead when their
// hashed n-gram embeddings have cosine ≥ `similarity` (paraphrases); otherwise it starts a pattern of its own.
//
// For each (user, pattern, strategy) the tier counts attempts and successes (an answer with confidence ≥
// `success_confidence`), the confidences of the successes and the last confidence. Suggestion, first rule that holds:
//   1. the last "direct" answer failed                → "deep",   confidence 1 − that answer's confidence
//   2. "direct" has succeeded                          → "direct", mean confidence of its successes
//   3. "deep" has succeeded ≥ `direct_after` times     → "direct", mean confidence of deep's successes
//   4. "deep" has succeeded                            → "deep",   mean confidence of its successes
// Recall replies with one item (kind "procedural", text = the strategy, score = confidence × pattern similarity).
// Persistent in SQLite (WAL), partitioned by user like long_term (the same file may hold both).
#include <algorithm>
#include <chrono>
#include <map>
#include <optional>

#include "lal/memory/db_settings.hpp"
#include "lal/memory/embedding.hpp"
#include "lal/memory/sqlite.hpp"
#include "lal/plugin.hpp"

namespace {

using lal::memory::Database;
using lal::memory::DbError;

constexpr int kSchemaVersion = 1;

/// The request template (see the file comment).
std::string request_template(const std::string& text) {
  const auto cps = lal::memory::normalise_for_matching(text);
  std::string out;
  bool in_number = false;
  for (std::size_t i = 0; i < cps.size(); ++i) {
    const char32_t c = cps[i];
    const bool digit = c >= '0' && c <= '9';
    const bool decimal_point =
        in_number && (c == '.' || c == ',') && i + 1 < cps.size() && cps[i + 1] >= '0' && cps[i + 1] <= '9';
    if (digit || decimal_point) {
      if (!in_number) out += '#';
      in_number = true;
      continue;
    }
    in_number = false;
    out += lal::plugins::utf8_encode(c);
  }
  for (bool trimmed = true; trimmed;) {
    trimmed = false;
    for (std::string_view p : {"?", "？", "!", "！", "。", ".", "、", " ", "…"})
      if (out.size() >= p.size() && std::string_view(out).substr(out.size() - p.size()) == p) {
        out.resize(out.size() - p.size());
        trimmed = true;
      }
  }
  return out;
}

struct Outcome {
  std::int64_t attempts = 0, successes = 0;
  double success_confidence_sum = 0.0, last_confidence = 0.0;
  std::int64_t last_ns = 0;
};

struct Pattern {
  std::int64_t id = 0;
  std::string template_text;
  lal::memory::Embedding embedding{};
  std::map<lal::Strategy, Outcome> outcomes;

  std::int64_t successes() const {
    std::int64_t n = 0;
    for (const auto& [_, o] : outcomes) n += o.successes;
    return n;
  }
};

struct Suggestion {
  lal::Strategy strategy = lal::Strategy::deep;
  double confidence = 0.0;
};

struct ProceduralOptions {
  lal::memory::DbSettings db;
  double success_confidence = 0.7;
  std::int64_t direct_after = 2;
  double similarity = 0.85;

  static void declare(lal::Options<ProceduralOptions>& o) {
    o.nested(&ProceduralOptions::db);
    o.field("success_confidence", &ProceduralOptions::success_confidence,
            "answer confidence at or above which the strategy worked")
        .range(0, 1);
    o.field("direct_after", &ProceduralOptions::direct_after,
            "successful deep answers to a pattern before suggesting direct")
        .min(1);
    o.field("similarity", &ProceduralOptions::similarity,
            "embedding cosine at which a request counts as a known pattern")
        .range(-1, 1);
  }
};

class ProceduralMemory final : public lal::Module {
 public:
  void start(lal::Context& ctx) override {
    ctx_ = &ctx;
    const auto options = ctx.options<ProceduralOptions>();
    const lal::memory::DbOptions o = options.db.db_options("procedural memory (module '" + ctx.module_id() + "')");
    success_confidence_ = options.success_confidence;
    direct_after_ = options.direct_after;
    similarity_ = options.similarity;
    db_.emplace(o);
    if (db_->read_only())
      ctx.log(o.read_only ? lal::LogLevel::info : lal::LogLevel::error,
              "database '" + db_->path() + "' is read-only (" + db_->read_only_reason() +
                  "): suggestions work, new outcomes will not be learned");
    ensure_schema();
    ctx.on<lal::Episode>("episode", [this](const lal::Delivery<lal::Episode>& m) { learn(m); });
    ctx.serve<lal::RecallRequest, lal::RecallReply>(
        "recall", [this](const lal::Delivery<lal::RecallRequest>& m) { return recall(m); });
  }

  void stop() override {
    if (db_) db_->close();
  }

 private:
  void ensure_schema() {
    if (db_->has_table("procedural_patterns")) {
      auto s = db_->prepare("SELECT version FROM lal_schema WHERE component = 'procedural'");
      const int v = s.step("reading the schema version") ? static_cast<int>(s.column_int(0)) : 0;
      if (v != kSchemaVersion)
        throw DbError(lal::memory::DbErrorKind::other,
                      "procedural memory database '" + db_->path() + "' has schema version " + std::to_string(v) +
                          ", this plugin reads version " + std::to_string(kSchemaVersion));
      return;
    }
    if (db_->read_only()) return;
    Database::Transaction tx(*db_);
    db_->exec(R"sql(
      CREATE TABLE IF NOT EXISTS lal_schema(component TEXT PRIMARY KEY, version INTEGER NOT NULL);
      CREATE TABLE IF NOT EXISTS procedural_patterns(
        id INTEGER PRIMARY KEY,
        user TEXT NOT NULL,
        template TEXT NOT NULL,
        embedding BLOB NOT NULL,
        created_ns INTEGER NOT NULL,
        UNIQUE(user, template));
      CREATE TABLE IF NOT EXISTS procedural_outcomes(
        user TEXT NOT NULL,
        pattern_id INTEGER NOT NULL REFERENCES procedural_patterns(id),
        strategy TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        successes INTEGER NOT NULL,
        success_confidence_sum REAL NOT NULL,
        last_confidence REAL NOT NULL,
        last_ns INTEGER NOT NULL,
        PRIMARY KEY(user, pattern_id, strategy));
      INSERT OR REPLACE INTO lal_schema(component, version) VALUES ('procedural', 1);
    )sql",
              "creating the procedural tables");
    tx.commit();
  }

  std::vector<Pattern>& patterns_of(const std::string& user) {
    auto it = by_user_.find(user);
    if (it != by_user_.end()) return it->second;
    std::vector<Pattern> patterns;
    if (db_->has_table("procedural_patterns")) {
      auto p = db_->prepare("SELECT id, template, embedding FROM procedural_patterns WHERE user = ?1 ORDER BY id");
      p.bind(1, std::string_view(user));
      while (p.step("loading the user's patterns")) {
        Pattern pat;
        pat.id = p.column_int(0);
        pat.template_text = p.column_text(1);
        const auto [emb, bytes] = p.column_blob(2);
        if (!lal::memory::decode_embedding(emb, bytes, pat.embedding))
          pat.embedding = lal::memory::embed_text(pat.template_text);
        patterns.push_back(std::move(pat));
      }
      auto o = db_->prepare(
          "SELECT pattern_id, strategy, attempts, successes, success_confidence_sum, last_confidence, last_ns "
          "FROM procedural_outcomes WHERE user = ?1");
      o.bind(1, std::string_view(user));
      while (o.step("loading the user's outcomes")) {
        const std::int64_t pid = o.column_int(0);
        auto pat = std::find_if(patterns.begin(), patterns.end(), [&](const Pattern& x) { return x.id == pid; });
        if (pat == patterns.end()) continue;
        Outcome out{o.column_int(2), o.column_int(3), o.column_double(4), o.column_double(5), o.column_int(6)};
        try {
          pat->outcomes[lal::parse_enum<lal::Strategy>(
              o.column_text(1), "procedural database '" + db_->path() + "', pattern " + std::to_string(pid))] = out;
        } catch (const std::invalid_argument& e) {  // refused, and left in the database as it is
          ctx_->log(lal::LogLevel::error, std::string(e.what()) + " — this outcome is not used");
        }
      }
    }
    return by_user_.emplace(user, std::move(patterns)).first->second;
  }

  /// The pattern `text` belongs to and how similar it is (1 for the same template), or null.
  std::pair<Pattern*, double> match(std::vector<Pattern>& patterns, const std::string& templ) {
    for (auto& p : patterns)
      if (p.template_text == templ) return {&p, 1.0};
    const auto e = lal::memory::embed_text(templ);
    Pattern* best = nullptr;
    double best_sim = similarity_;
    for (auto& p : patterns) {
      const double sim = lal::memory::cosine(p.embedding, e);
      if (sim >= best_sim) best = &p, best_sim = sim;
    }
    return {best, best ? best_sim : 0.0};
  }

  std::optional<Suggestion> suggest(const Pattern& p) const {
    auto get = [&](lal::Strategy s) -> const Outcome* {
      auto it = p.outcomes.find(s);
      return it == p.outcomes.end() ? nullptr : &it->second;
    };
    auto mean = [](const Outcome& o) { return o.successes ? o.success_confidence_sum / o.successes : 0.0; };
    const Outcome* direct = get(lal::Strategy::direct);
    const Outcome* deep = get(lal::Strategy::deep);
    if (direct && direct->attempts > 0 && direct->last_confidence < success_confidence_)
      return Suggestion{lal::Strategy::deep, 1.0 - direct->last_confidence};
    if (direct && direct->successes > 0) return Suggestion{lal::Strategy::direct, mean(*direct)};
    if (deep && deep->successes >= direct_after_) return Suggestion{lal::Strategy::direct, mean(*deep)};
    if (deep && deep->successes > 0) return Suggestion{lal::Strategy::deep, mean(*deep)};
    return std::nullopt;
  }

  void learn(const lal::Delivery<lal::Episode>& m) {
    if (m->user_text.empty()) return;
    if (db_->read_only()) {
      if (!warned_read_only_)
        ctx_->log(lal::LogLevel::warn, "database '" + db_->path() + "' is read-only: outcomes are not being learned");
      warned_read_only_ = true;
      return;
    }
    const std::string& user = m.header.user;
    auto& patterns = patterns_of(user);
    const std::string templ = request_template(m->user_text);
    if (templ.empty()) return;
    auto [pattern, sim] = match(patterns, templ);
    (void)sim;
    const std::int64_t now =  // wall clock: outcomes outlive the process
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
            .count();
    Pattern fresh;
    Outcome updated = pattern && pattern->outcomes.count(m->strategy) ? pattern->outcomes[m->strategy] : Outcome{};
    const bool success = m->confidence >= success_confidence_;
    ++updated.attempts;
    if (success) ++updated.successes, updated.success_confidence_sum += m->confidence;
    updated.last_confidence = m->confidence;
    updated.last_ns = now;
    try {
      Database::Transaction tx(*db_);
      std::int64_t pid = pattern ? pattern->id : 0;
      if (!pattern) {
        fresh.template_text = templ;
        fresh.embedding = lal::memory::embed_text(templ);
        auto ins = db_->prepare(
            "INSERT INTO procedural_patterns(user, template, embedding, created_ns) VALUES (?1, ?2, ?3, ?4)");
        ins.bind(1, std::string_view(user))
            .bind(2, std::string_view(templ))
            .bind_blob(3, lal::memory::encode_embedding(fresh.embedding))
            .bind(4, now);
        ins.step("storing a pattern");
        pid = fresh.id = sqlite3_last_insert_rowid(db_->handle());
      }
      auto up = db_->prepare(
          "INSERT OR REPLACE INTO procedural_outcomes(user, pattern_id, strategy, attempts, successes, "
          "success_confidence_sum, last_confidence, last_ns) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)");
      up.bind(1, std::string_view(user))
          .bind(2, pid)
          .bind(3, std::string_view(lal::to_string(m->strategy)))
          .bind(4, updated.attempts)
          .bind(5, updated.successes)
          .bind(6, updated.success_confidence_sum)
          .bind(7, updated.last_confidence)
          .bind(8, updated.last_ns);
      up.step("storing an outcome");
      tx.commit();
    } catch (const DbError& e) {
      ctx_->log(lal::LogLevel::error,
                std::string(e.what()) + " — this outcome was not learned; stored ones are intact");
      return;
    }
    if (!pattern) {
      patterns.push_back(std::move(fresh));
      pattern = &patterns.back();
    }
    pattern->outcomes[m->strategy] = updated;
  }

  lal::RecallReply recall(const lal::Delivery<lal::RecallRequest>& m) {
    lal::RecallReply reply;
    if (m->limit <= 0) return reply;
    auto& patterns = patterns_of(m.header.user);
    auto item_for = [&](const Pattern& p, const Suggestion& s, double sim) {
      lal::MemoryItem item;
      item.id = std::to_string(p.id);
      item.tier = "procedural";
      item.kind = "procedural";
      item.text = lal::to_string(s.strategy);
      item.score = s.confidence * sim;
      item.activation = std::log(1.0 + static_cast<double>(p.successes()));
      return item;
    };
    if (m->cue.find_first_not_of(" \t\r\n") == std::string::npos) {
      // The /memory view: every pattern with a suggestion, most practised first; the text names the pattern too.
      std::vector<const Pattern*> known;
      for (const auto& p : patterns)
        if (suggest(p)) known.push_back(&p);
      std::stable_sort(known.begin(), known.end(),
                       [](const Pattern* a, const Pattern* b) { return a->successes() > b->successes(); });
      for (const Pattern* p : known) {
        if (static_cast<int>(reply.items.size()) >= m->limit) break;
        auto item = item_for(*p, *suggest(*p), 1.0);
        item.text += " ← " + p->template_text;
        reply.items.push_back(std::move(item));
      }
      return reply;
    }
    const auto [pattern, sim] = match(patterns, request_template(m->cue));
    if (!pattern) return reply;
    if (auto s = suggest(*pattern)) reply.items.push_back(item_for(*pattern, *s, sim));
    return reply;
  }

  lal::Context* ctx_ = nullptr;
  std::optional<Database> db_;
  std::map<std::string, std::vector<Pattern>> by_user_;
  double success_confidence_ = 0, similarity_ = 0;  // from ProceduralOptions
  std::int64_t direct_after_ = 0;
  bool warned_read_only_ = false;
};

lal::PluginDescriptor describe() {
  lal::PluginDescriptor d{"procedural", lal::ModuleKind::memory_tier, "0.1.0",
                          "Procedural memory: which strategy answered a user's recurring request well (SQLite)"};
  d.input<lal::Episode>("episode", "episodes with the strategy used and its measured confidence")
      .serves<lal::RecallRequest, lal::RecallReply>(
          "recall", "the strategy to use for the cue's pattern (kind procedural, text = strategy, score = confidence)")
      .options<ProceduralOptions>();
  return d;
}

}  // namespace

LAL_PLUGIN(ProceduralMemory, describe)
