// Long-term recall: hybrid lexical + embedding + activation ranking, fused by rank, with temporal cues, fact
// updates and a second, cued hop. Used by the long_term plugin, `lal memory search` and `lal bench recall`, so that
// what the benchmark measures is what a chat recalls.
//
// For a cue, per user (UserIndex holds that user's memories in memory, mirroring the database):
//   1. temporal cue (parse_time_cue): 「昨日」「一昨日」「先週」「先月」「去年」「N日前」「N週間前」「Nか月前」,
//   "yesterday",
//      "last week", "N days ago", … give a time window relative to the question's time; 「前回」「この前」"last time"
//      mean the most recent earlier conversation (the 6 h before the newest memory older than 30 min), 「最初に」
//      "the first time" the earliest. The time phrase is removed from the words matched below.
//   2. lexical: BM25 (k1 = 1.2, b = 0.75) over segment_terms() (character n-grams for Japanese, words for English;
//      see segment.hpp) through an inverted index. The best `candidates` memories by BM25 are the candidate set.
//      Every memory inside the time window (by its stored creation time) joins them, ranked by BM25 + cosine +
//      closeness to the time asked about: with a time cue, the time is the cue.
//   2b. a question about a slot (question_slot in facts.hpp: 「私の仕事は何？」 → job, "where does my sister work"
//      → sister.job) ranks the facts of that slot, the current value first, then the older ones by time.
//   3. for each candidate: cosine of the hashed character n-gram embeddings (embedding.hpp; under min_cosine it is
//      hashing noise), and ACT-R activation A = B + importance_weight · importance, B = ln Σ t_j^−d over the
//      memory's uses (activation.hpp). Activation only ranks candidates the cue finds relevant (BM25 ≥
//      relevance_floor × the best BM25): a memory that is merely used a lot never displaces one that matches.
//   4. multi-hop: the terms of the two best memories that the cue lacks and that are rare (df ≤ 1 % of the user's
//      memories, at least 2), the 4 rarest per memory, form a second BM25 query — a recalled memory cues the next
//      (「妹の名前は花子」 → 「花子はパン屋で働いている」). Only memories the cue alone hardly reaches (BM25 under
//      relevance_floor × best) gain from it, and not the seeds' own facts.
//   5. fusion: score = Σ_lists weight_list / (rank_constant + rank_in_list), ranks from 1, equal values sharing a
//      rank (reciprocal-rank fusion, Cormack et al. 2009). Lists: lexical, embedding, activation, temporal, slot, hop.
//      A small rank_constant (2) lets the first ranks count: the cue's best match leads unless other signals agree.
//   6. fact updates: a fact superseded by a newer value of the same slot counts half, and the newest value is put
//      just above it, shown with its history (「大阪に引っ越しました（以前: 東京に住んでいます）」).
// Recall is rehearsal: the caller records a use of each memory it returns (not of the empty-cue overview).
#pragma once

#include <algorithm>
#include <cmath>
#include <ctime>
#include <string>
#include <unordered_map>
#include <vector>

#include "lal/memory/episode_text.hpp"
#include "lal/memory/segment.hpp"
#include "lal/memory/store.hpp"

namespace lal::memory {

struct RecallSettings {
  double decay = 0.5;              ///< ACT-R d
  double importance_weight = 1.0;  ///< weight of importance in the activation list's order
  double rank_constant = 2.0;      ///< k in weight / (k + rank)
  double w_lexical = 1.0, w_embedding = 0.3, w_activation = 0.15, w_temporal = 1.0, w_hop = 0.4, w_slot = 1.0;
  double relevance_floor = 0.5;  ///< BM25 share of the best a memory needs to be ranked by activation
  double min_cosine = 0.15;      ///< embedding similarity a memory needs to be ranked by it
  std::size_t candidates = 100;  ///< BM25 candidates (and time-window memories) considered
  bool multi_hop = true;
  double k1 = 1.2, b = 0.75;  ///< BM25
  bool lexical_only = false;  ///< plain BM25 ranking (the benchmark's baseline)
};

/// A time window parsed from a cue, in Unix ns. kind: none, window, latest, earliest.
struct TimeCue {
  enum Kind { none, window, latest, earliest } kind = none;
  std::int64_t from_ns = 0, to_ns = 0;
  std::string phrase;  ///< the words that said it (「3日前」, "last time"): left out of the lexical query
};

namespace detail {
inline int parse_count(const std::string& s, std::size_t end) {
  // digits (ASCII or full-width) or one kanji numeral right before `end`
  int value = 0, scale = 1;
  std::size_t p = end;
  while (p > 0 && s[p - 1] == ' ') --p;  // "12 days ago"
  bool any = false;
  while (p > 0) {
    unsigned char c = static_cast<unsigned char>(s[p - 1]);
    if (c >= '0' && c <= '9') {
      value += (c - '0') * scale;
      scale *= 10;
      --p;
      any = true;
      continue;
    }
    if (p >= 3 && static_cast<unsigned char>(s[p - 3]) == 0xEF && static_cast<unsigned char>(s[p - 2]) == 0xBC &&
        c >= 0x90 && c <= 0x99) {  // full-width digit U+FF10..FF19
      value += (c - 0x90) * scale;
      scale *= 10;
      p -= 3;
      any = true;
      continue;
    }
    break;
  }
  if (any) return value;
  static const char* kKanji[] = {"一", "二", "三", "四", "五", "六", "七", "八", "九", "十"};
  for (int i = 0; i < 10; ++i) {
    const std::string k = kKanji[i];
    if (end >= k.size() && s.compare(end - k.size(), k.size(), k) == 0) return i + 1;
  }
  static const char* kWords[] = {"one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"};
  // English: "<n> days ago": the word before the unit
  std::size_t q = end;
  while (q > 0 && s[q - 1] == ' ') --q;
  std::size_t b = q;
  while (b > 0 && s[b - 1] != ' ') --b;
  const std::string w = s.substr(b, q - b);
  for (int i = 0; i < 10; ++i)
    if (w == kWords[i]) return i + 1;
  if (w == "a" || w == "an") return 1;
  return -1;
}
}  // namespace detail

/// The time cue in `cue` (see the file comment), relative to `now_ns`.
inline TimeCue parse_time_cue(const std::string& cue, std::int64_t now_ns) {
  constexpr std::int64_t kDay = 86400LL * 1000000000LL;
  std::string s = cue;
  for (char& c : s)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  auto has = [&](const char* p) { return s.find(p) != std::string::npos; };
  auto window = [&](double from_days, double to_days) {
    TimeCue t;
    t.kind = TimeCue::window;
    t.from_ns = now_ns - static_cast<std::int64_t>(from_days * static_cast<double>(kDay));
    t.to_ns = now_ns - static_cast<std::int64_t>(to_days * static_cast<double>(kDay));
    return t;
  };
  struct Unit {
    const char* word;
    double days;
  };
  static const Unit kUnits[] = {{"日前", 1},      {"週間前", 7},   {"ヶ月前", 30},     {"か月前", 30},
                                {"カ月前", 30},   {"ヵ月前", 30},  {"days ago", 1},    {"day ago", 1},
                                {"weeks ago", 7}, {"week ago", 7}, {"months ago", 30}, {"month ago", 30}};
  for (const auto& u : kUnits) {
    const auto at = s.find(u.word);
    if (at == std::string::npos) continue;
    const int n = detail::parse_count(s, at);
    if (n <= 0) continue;
    const double center = n * u.days, slack = u.days == 1 ? 1.0 : u.days / 2;
    TimeCue t = window(center + slack, std::max(0.0, center - slack));
    t.phrase = u.word;
    return t;
  }
  struct Phrase {
    std::vector<const char*> words;
    double from_days, to_days;
    TimeCue::Kind kind;
  };
  static const std::vector<Phrase> kPhrases = {
      {{"一昨日", "おととい", "day before yesterday"}, 3, 1, TimeCue::window},
      {{"昨日", "きのう", "yesterday"}, 2, 0.3, TimeCue::window},
      {{"先週", "last week"}, 14, 4, TimeCue::window},
      {{"先月", "last month"}, 62, 20, TimeCue::window},
      {{"去年", "昨年", "last year"}, 730, 200, TimeCue::window},
      {{"今朝", "this morning", "今日", "today"}, 1, 0, TimeCue::window},
      {{"前回", "この前", "last time", "最後に話", "last we talked", "previous conversation"}, 0, 0, TimeCue::latest},
      {{"最初に", "初めて話", "first time", "first conversation"}, 0, 0, TimeCue::earliest},
  };
  for (const auto& p : kPhrases)
    for (const char* w : p.words)
      if (has(w)) {
        TimeCue t = p.kind == TimeCue::window ? window(p.from_days, p.to_days) : TimeCue{};
        t.kind = p.kind;
        t.phrase = w;
        return t;
      }
  return {};
}

/// One memory held for recall.
struct IndexedMemory {
  StoredMemory row;          ///< row.embedding is the memory's embedding
  std::uint32_t length = 0;  ///< number of terms (BM25 document length)
  bool alive = true;
};

/// One recalled memory with the signals that ranked it.
struct Recalled {
  const IndexedMemory* memory = nullptr;
  double score = 0;       ///< fused
  double bm25 = 0;        ///< lexical score
  double cosine = 0;      ///< embedding similarity
  double activation = 0;  ///< B (ACT-R base-level, without importance)
  bool in_time_window = false;
  std::string text;  ///< display form (facts with their history)
};

/// How a recalled memory reads: the fact, with the value it replaced; or the episode (episode_text).
inline std::string display_text(const StoredMemory& m, const std::string& replaced = {}) {
  if (!m.semantic) return episode_text(m.text, m.answer);
  return replaced.empty() ? m.text : m.text + "（以前: " + replaced + "）";
}

/// One user's memories, indexed for recall. Mirrors the database; the owner keeps it in step.
class UserIndex {
 public:
  std::int64_t max_id() const { return max_id_; }
  std::size_t size() const { return live_; }
  const std::vector<IndexedMemory>& items() const { return items_; }

  void add(StoredMemory m) {
    IndexedMemory im;
    const auto terms = segment_terms(m.semantic ? m.text : m.text + "\n" + m.answer);
    if (!m.has_embedding) m.embedding = embed_text(m.text);
    m.has_embedding = true;
    im.length = term_total(terms);
    im.row = std::move(m);
    const auto doc = static_cast<std::uint32_t>(items_.size());
    for (const auto& t : terms) postings_[t.hash].push_back({doc, t.count});
    total_length_ += im.length;
    max_id_ = std::max(max_id_, im.row.id);
    by_id_[im.row.id] = doc;
    if (im.row.semantic && im.row.superseded_by != 0) note_replaced(im.row.superseded_by, im.row.id);
    if (im.row.semantic && !im.row.slot.empty()) by_slot_[im.row.slot].push_back(doc);
    items_.push_back(std::move(im));
    ++live_;
  }

  IndexedMemory* find(std::int64_t id) {
    auto it = by_id_.find(id);
    return it == by_id_.end() ? nullptr : &items_[it->second];
  }
  void set_uses(std::int64_t id, const UseHistory& h) {
    if (auto* m = find(id)) m->row.uses = h;
  }
  void set_superseded(std::int64_t id, std::int64_t by) {
    if (auto* m = find(id)) m->row.superseded_by = by;
    if (by != 0) note_replaced(by, id);
  }

  /// Recall for `cue` at `now_ns`: up to `limit` memories, best first (see the file comment). An empty cue returns
  /// the most active memories.
  std::vector<Recalled> recall(const std::string& cue, std::size_t limit, std::int64_t now_ns,
                               const RecallSettings& st) const {
    std::vector<Recalled> out;
    if (limit == 0 || live_ == 0) return out;
    const auto n = items_.size();
    if (cue.find_first_not_of(" \t\r\n") == std::string::npos) {  // overview: most active
      std::vector<Recalled> all;
      for (const auto& m : items_) {
        if (!m.alive) continue;
        Recalled r;
        r.memory = &m;
        r.activation = base_level_activation(m.row.uses, now_ns, st.decay);
        r.score = r.activation + st.importance_weight * m.row.importance;
        all.push_back(r);
      }
      const std::size_t k = std::min(limit, all.size());
      std::partial_sort(all.begin(), all.begin() + static_cast<long>(k), all.end(),
                        [](const Recalled& a, const Recalled& b) { return a.score > b.score; });
      all.resize(k);
      for (auto& r : all) r.text = display(*r.memory);
      return all;
    }

    // The time phrase (「3日前」, "last time") is a time cue, not words to match: left out of the lexical query.
    const TimeCue tc = resolve(parse_time_cue(cue, now_ns), now_ns);
    std::string words = cue;
    if (!tc.phrase.empty()) {
      std::string lower = words;
      for (char& c : lower)
        if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
      if (const auto at = lower.find(tc.phrase); at != std::string::npos) words.replace(at, tc.phrase.size(), " ");
    }
    // 1. BM25 over the cue's terms.
    scores_.assign(n, 0.0f);
    touched_.clear();
    bm25(segment_terms(words), st);
    std::vector<std::uint32_t> cand = top_touched(st.candidates);
    float best_bm25 = 0;
    for (auto d : cand) best_bm25 = std::max(best_bm25, scores_[d]);
    if (st.lexical_only) {
      for (std::size_t i = 0; i < cand.size() && i < limit; ++i) {
        Recalled r;
        r.memory = &items_[cand[i]];
        r.bm25 = r.score = scores_[cand[i]];
        r.text = display(*r.memory);
        out.push_back(std::move(r));
      }
      return out;
    }
    std::unordered_map<std::uint32_t, Recalled> pool;
    auto entry = [&](std::uint32_t d) -> Recalled& {
      auto [it, fresh] = pool.try_emplace(d);
      if (fresh) {
        it->second.memory = &items_[d];
        it->second.bm25 = scores_[d];
      }
      return it->second;
    };
    const Embedding cue_embedding = embed_text(words);
    for (auto d : cand) entry(d);

    // 2. Temporal cue: every memory in the window.
    std::vector<std::uint32_t> window_list;
    if (tc.kind == TimeCue::window) {
      for (std::uint32_t d = 0; d < n; ++d) {
        const auto& m = items_[d];
        if (!m.alive || m.row.uses.created_ns < tc.from_ns || m.row.uses.created_ns > tc.to_ns) continue;
        window_list.push_back(d);
      }
      // Relevance within the window, then closeness to the time asked about.
      std::vector<std::pair<double, std::uint32_t>> keyed;
      const double center = 0.5 * static_cast<double>(tc.from_ns + tc.to_ns);
      const double half = std::max(1.0, 0.5 * static_cast<double>(tc.to_ns - tc.from_ns));
      for (auto d : window_list) {
        const double c = std::max(0.0, cosine(items_[d].row.embedding, cue_embedding));
        const double closeness =
            1.0 - std::min(1.0, std::abs(static_cast<double>(items_[d].row.uses.created_ns) - center) / half);
        keyed.emplace_back((best_bm25 > 0 ? scores_[d] / best_bm25 : 0.0) + c + 0.5 * closeness, d);
      }
      std::sort(keyed.begin(), keyed.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
      if (keyed.size() > st.candidates) keyed.resize(st.candidates);
      window_list.clear();
      for (auto& [k, d] : keyed) {
        window_list.push_back(d);
        entry(d).in_time_window = true;
      }
    }

    // 2b. A question about a slot (「私の仕事は？」 → job): the slot's current fact, then its history.
    std::vector<std::uint32_t> slot_list;
    if (st.w_slot > 0) {
      const std::string asked = question_slot(words);
      if (auto it = by_slot_.find(asked); !asked.empty() && it != by_slot_.end()) {
        slot_list = it->second;
        std::sort(slot_list.begin(), slot_list.end(), [&](std::uint32_t a, std::uint32_t b) {
          const bool ca = items_[a].row.superseded_by == 0, cb = items_[b].row.superseded_by == 0;
          return ca != cb ? ca : items_[a].row.uses.created_ns > items_[b].row.uses.created_ns;
        });
        for (auto d : slot_list) entry(d);
      }
    }

    // 3. Embedding and activation of the pool.
    std::vector<std::uint32_t> lexical, embedding_list, activation_list;
    for (auto& [d, r] : pool) {
      r.cosine = std::max(0.0, cosine(items_[d].row.embedding, cue_embedding));
      r.activation = base_level_activation(items_[d].row.uses, now_ns, st.decay);
      if (r.bm25 > 0) lexical.push_back(d);
      if (r.cosine >= st.min_cosine) embedding_list.push_back(d);  // below: hashing noise between unrelated texts
      if (best_bm25 > 0 && r.bm25 >= st.relevance_floor * best_bm25) activation_list.push_back(d);
    }
    auto by = [&](std::vector<std::uint32_t>& v, auto key) {
      std::sort(v.begin(), v.end(), [&](std::uint32_t a, std::uint32_t b) {
        const double ka = key(pool.at(a)), kb = key(pool.at(b));
        return ka != kb ? ka > kb : items_[a].row.id > items_[b].row.id;
      });
    };
    by(lexical, [](const Recalled& r) { return r.bm25; });
    by(embedding_list, [](const Recalled& r) { return r.cosine; });
    by(activation_list,
       [&](const Recalled& r) { return r.activation + st.importance_weight * r.memory->row.importance; });
    // Equal keys share a rank ("1224" ranking): a tie in one signal is decided by the others, not by row order.
    auto fuse = [&](const std::vector<std::uint32_t>& list, double w, auto key) {
      std::size_t rank = 0;
      for (std::size_t i = 0; i < list.size(); ++i) {
        if (i == 0 || key(pool.at(list[i])) != key(pool.at(list[i - 1]))) rank = i + 1;
        pool.at(list[i]).score += w / (st.rank_constant + static_cast<double>(rank));
      }
    };
    fuse(lexical, st.w_lexical, [](const Recalled& r) { return r.bm25; });
    fuse(embedding_list, st.w_embedding, [](const Recalled& r) { return r.cosine; });
    fuse(activation_list, st.w_activation,
         [&](const Recalled& r) { return r.activation + st.importance_weight * r.memory->row.importance; });
    std::size_t slot_rank = 0;
    for (auto d : slot_list) pool.at(d).score += st.w_slot / (st.rank_constant + static_cast<double>(++slot_rank));
    std::size_t window_rank = 0;
    for (auto d : window_list)
      pool.at(d).score += st.w_temporal / (st.rank_constant + static_cast<double>(++window_rank));

    // 4. Second hop, cued by the best memories so far.
    if (st.multi_hop && !pool.empty()) {
      std::vector<std::uint32_t> ranked;
      for (auto& [d, r] : pool) ranked.push_back(d);
      by(ranked, [](const Recalled& r) { return r.score; });
      const auto cue_terms = segment_terms(words);
      std::vector<Term> bridge;
      const double max_df = std::max(2.0, 0.01 * static_cast<double>(live_));
      for (std::size_t s = 0; s < ranked.size() && s < 2; ++s) {
        const auto& m = items_[ranked[s]].row;
        std::vector<std::pair<std::size_t, std::uint64_t>> rare;
        for (const auto& t : segment_terms(m.semantic ? m.text : m.text + "\n" + m.answer)) {
          if (std::binary_search(cue_terms.begin(), cue_terms.end(), t,
                                 [](const Term& a, const Term& b) { return a.hash < b.hash; }))
            continue;
          auto it = postings_.find(t.hash);
          if (it == postings_.end() || static_cast<double>(it->second.size()) > max_df || it->second.size() < 2)
            continue;
          rare.emplace_back(it->second.size(), t.hash);
        }
        std::sort(rare.begin(), rare.end());
        for (std::size_t i = 0; i < rare.size() && i < 4; ++i) bridge.push_back({rare[i].second, 1});
      }
      if (!bridge.empty()) {
        std::sort(bridge.begin(), bridge.end(), [](const Term& a, const Term& b) { return a.hash < b.hash; });
        bridge.erase(
            std::unique(bridge.begin(), bridge.end(), [](const Term& a, const Term& b) { return a.hash == b.hash; }),
            bridge.end());
        std::vector<float> first(scores_);
        std::vector<std::uint32_t> first_touched(touched_);
        scores_.assign(n, 0.0f);
        touched_.clear();
        bm25(bridge, st);
        std::vector<std::uint32_t> hop;
        for (auto d : top_touched(st.candidates)) {
          bool seed = false;  // a seed, or a fact stated in a seed episode (or the episode of a seed fact)
          for (std::size_t k = 0; k < ranked.size() && k < 2; ++k) {
            const auto& a = items_[ranked[k]].row;
            const auto& b = items_[d].row;
            seed = seed || d == ranked[k] || (b.source_id && b.source_id == a.id) ||
                   (a.source_id && a.source_id == b.id) || (a.source_id && a.source_id == b.source_id);
          }
          if (seed) continue;
          // Only what the cue alone hardly reaches: a second hop brings memories in, it does not reorder the first.
          if (best_bm25 > 0 && first[d] >= st.relevance_floor * best_bm25) continue;
          hop.push_back(d);
          if (hop.size() >= limit) break;
        }
        scores_.swap(first);
        touched_.swap(first_touched);
        for (auto d : hop) {
          Recalled& r = entry(d);
          if (r.cosine == 0) r.cosine = std::max(0.0, cosine(items_[d].row.embedding, cue_embedding));
          if (r.activation == 0) r.activation = base_level_activation(items_[d].row.uses, now_ns, st.decay);
        }
        std::size_t hop_rank = 0;
        for (auto d : hop) pool.at(d).score += st.w_hop / (st.rank_constant + static_cast<double>(++hop_rank));
      }
    }

    // 5. Fact updates: the newest value leads its history.
    std::vector<std::uint32_t> ranked;
    for (auto& [d, r] : pool) ranked.push_back(d);
    for (auto d : std::vector<std::uint32_t>(ranked)) {
      const auto& row = items_[d].row;
      if (!row.semantic || row.superseded_by == 0) continue;
      Recalled& old = pool.at(d);
      const IndexedMemory* newest = &items_[d];
      for (int hops = 0; hops < 32 && newest->row.superseded_by != 0; ++hops) {
        auto it = by_id_.find(newest->row.superseded_by);
        if (it == by_id_.end()) break;
        newest = &items_[it->second];
      }
      if (newest == &items_[d]) continue;
      const auto nd = static_cast<std::uint32_t>(newest - items_.data());
      const double old_score = old.score;
      old.score = old_score / 2;
      Recalled& cur = entry(nd);
      if (cur.activation == 0) cur.activation = base_level_activation(newest->row.uses, now_ns, st.decay);
      cur.score = std::max(cur.score, old_score + 1e-6);
      if (std::find(ranked.begin(), ranked.end(), nd) == ranked.end()) ranked.push_back(nd);
    }
    by(ranked, [](const Recalled& r) { return r.score; });
    for (std::size_t i = 0; i < ranked.size() && out.size() < limit; ++i) {
      Recalled r = pool.at(ranked[i]);
      if (!r.memory->alive || r.score <= 0) continue;
      r.text = display(*r.memory);
      out.push_back(std::move(r));
    }
    return out;
  }

 private:
  struct Posting {
    std::uint32_t doc;
    std::uint32_t tf;
  };

  std::string display(const IndexedMemory& m) const {
    if (!m.row.semantic) return display_text(m.row);
    if (m.row.superseded_by != 0) return m.row.text + "（更新済み: 以前の情報）";
    // The value this fact replaced, if any (the newest older fact of the same slot).
    auto it = replaced_of_.find(m.row.id);
    const IndexedMemory* replaced = nullptr;
    if (it != replaced_of_.end()) {
      auto d = by_id_.find(it->second);
      if (d != by_id_.end()) replaced = &items_[d->second];
    }
    return display_text(m.row, replaced ? replaced->row.text : std::string());
  }

  TimeCue resolve(TimeCue tc, std::int64_t now_ns) const {
    if (tc.kind != TimeCue::latest && tc.kind != TimeCue::earliest) return tc;
    constexpr std::int64_t kSession = 6LL * 3600 * 1000000000LL;
    const std::int64_t recent = now_ns - 30LL * 60 * 1000000000LL;
    std::int64_t anchor = tc.kind == TimeCue::latest ? 0 : INT64_MAX;
    for (const auto& m : items_) {
      if (!m.alive) continue;
      const auto t = m.row.uses.created_ns;
      if (tc.kind == TimeCue::latest && t < recent) anchor = std::max(anchor, t);
      if (tc.kind == TimeCue::earliest) anchor = std::min(anchor, t);
    }
    TimeCue out;
    if (anchor == 0 || anchor == INT64_MAX) return out;
    out.kind = TimeCue::window;
    out.from_ns = tc.kind == TimeCue::latest ? anchor - kSession : anchor;
    out.to_ns = tc.kind == TimeCue::latest ? anchor : anchor + kSession;
    return out;
  }

  void bm25(const std::vector<Term>& query, const RecallSettings& st) const {
    const double N = static_cast<double>(live_);
    const double avg = live_ ? static_cast<double>(total_length_) / N : 1.0;
    for (const auto& q : query) {
      auto it = postings_.find(q.hash);
      if (it == postings_.end()) continue;
      const double df = static_cast<double>(it->second.size());
      const double idf = std::log(1.0 + (N - df + 0.5) / (df + 0.5));
      if (idf < 0.05) continue;  // in nearly every memory: says nothing, costs a full scan
      for (const auto& p : it->second) {
        const auto& m = items_[p.doc];
        if (!m.alive) continue;
        const double tf = p.tf;
        const double s = idf * tf * (st.k1 + 1) / (tf + st.k1 * (1 - st.b + st.b * m.length / avg));
        if (scores_[p.doc] == 0.0f) touched_.push_back(p.doc);
        scores_[p.doc] += static_cast<float>(s);
      }
    }
  }

  std::vector<std::uint32_t> top_touched(std::size_t k) const {
    std::vector<std::uint32_t> v(touched_);
    const std::size_t m = std::min(k, v.size());
    std::partial_sort(v.begin(), v.begin() + static_cast<long>(m), v.end(), [&](std::uint32_t a, std::uint32_t b) {
      return scores_[a] != scores_[b] ? scores_[a] > scores_[b] : items_[a].row.id > items_[b].row.id;
    });
    v.resize(m);
    return v;
  }

  void note_replaced(std::int64_t newer, std::int64_t older) {
    auto& r = replaced_of_[newer];
    r = std::max(r, older);
  }

  std::vector<IndexedMemory> items_;
  std::unordered_map<std::int64_t, std::int64_t> replaced_of_;           // fact id → newest fact it superseded
  std::unordered_map<std::string, std::vector<std::uint32_t>> by_slot_;  // slot → its facts
  std::unordered_map<std::uint64_t, std::vector<Posting>> postings_;
  std::unordered_map<std::int64_t, std::uint32_t> by_id_;
  std::uint64_t total_length_ = 0;
  std::int64_t max_id_ = 0;
  std::size_t live_ = 0;
  mutable std::vector<float> scores_;
  mutable std::vector<std::uint32_t> touched_;
};

/// Record a use (rehearsal) of each recalled memory: returns the new histories, for MemoryStore::record_uses and
/// UserIndex::set_uses.
inline std::vector<std::pair<std::int64_t, UseHistory>> rehearsals(const std::vector<Recalled>& recalled,
                                                                   std::int64_t now_ns) {
  std::vector<std::pair<std::int64_t, UseHistory>> out;
  for (const auto& r : recalled) {
    UseHistory h = r.memory->row.uses;
    h.use(now_ns);
    out.emplace_back(r.memory->row.id, std::move(h));
  }
  return out;
}

}  // namespace lal::memory
