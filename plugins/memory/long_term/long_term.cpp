// long_term — persistent episodic and semantic memory per user, in SQLite (WAL), recalled by hybrid lexical +
// embedding + activation ranking (lal/memory/recall.hpp).
//
// Storage (lal/memory/store.hpp): `long_term_memories`, every row owned by a `user`; every statement filters by
// user, and the in-memory index is one UserIndex per user, so one user's memories cannot reach another's recall.
// Writes go through a bounded queue with retries (lal/memory/write_queue.hpp): a locked database delays a write, it
// does not drop it; what cannot be written by shutdown is kept in `<db>.pending.jsonl` for the next start.
//
// Other writers (short_term consolidating into the same file, `lal memory forget/import` in another process) are
// noticed through PRAGMA data_version before each recall: new rows are added to the index, deletions reload it.
//
// Time is wall-clock (the message's publish time converted to Unix nanoseconds), because memories outlive the
// process and monotonic clocks restart with the machine.
#include <chrono>
#include <map>
#include <optional>

#include "lal/memory/db_settings.hpp"
#include "lal/memory/recall.hpp"
#include "lal/memory/store.hpp"
#include "lal/memory/write_queue.hpp"
#include "lal/plugin.hpp"

namespace {

using lal::memory::DbError;

std::int64_t wall_ns_of(const lal::MessageHeader& h) {
  const std::int64_t wall_now = lal::memory::wall_now_ns();
  const std::int64_t mono_now = lal::monotonic_ns();
  return h.timestamp_ns > 0 && h.timestamp_ns <= mono_now ? wall_now - (mono_now - h.timestamp_ns) : wall_now;
}

/// The recall library's defaults (lal::memory::RecallSettings): long_term's config defaults are these, not copies.
const lal::memory::RecallSettings kRecallDefaults{};

struct LongTermOptions {
  lal::memory::DbSettings db;
  lal::memory::WriteQueueSettings writes;
  double decay = kRecallDefaults.decay;
  double importance_weight = kRecallDefaults.importance_weight;
  double rank_constant = kRecallDefaults.rank_constant;
  double weight_lexical = kRecallDefaults.w_lexical;
  double weight_embedding = kRecallDefaults.w_embedding;
  double weight_activation = kRecallDefaults.w_activation;
  double weight_temporal = kRecallDefaults.w_temporal;
  double weight_hop = kRecallDefaults.w_hop;
  double weight_slot = kRecallDefaults.w_slot;
  double relevance_floor = kRecallDefaults.relevance_floor;
  std::int64_t candidates = static_cast<std::int64_t>(kRecallDefaults.candidates);
  bool multi_hop = kRecallDefaults.multi_hop;
  bool extract_facts = true;

  static void declare(lal::Options<LongTermOptions>& o) {
    using O = LongTermOptions;
    o.nested(&O::db);
    o.nested(&O::writes);
    o.field("decay", &O::decay, "ACT-R decay d in B = ln(Σ t^-d)").range(0.001, 0.999);
    o.field("importance_weight", &O::importance_weight,
            "weight of importance (0..1) next to B in the activation ranking");
    o.field("rank_constant", &O::rank_constant, "k in the fusion weight / (k + rank)").min(0);
    o.field("weight_lexical", &O::weight_lexical, "fusion weight of the BM25 ranking").min(0);
    o.field("weight_embedding", &O::weight_embedding, "fusion weight of the embedding-cosine ranking").min(0);
    o.field("weight_activation", &O::weight_activation,
            "fusion weight of the activation ranking (relevant memories only)")
        .min(0);
    o.field("weight_temporal", &O::weight_temporal, "fusion weight of the time-window ranking (「先週」, \"last time\")")
        .min(0);
    o.field("weight_hop", &O::weight_hop, "fusion weight of the second, memory-cued recall").min(0);
    o.field("weight_slot", &O::weight_slot, "fusion weight of the facts of the slot a question asks about").min(0);
    o.field("relevance_floor", &O::relevance_floor,
            "share of the best BM25 a memory needs to be ranked by activation")
        .range(0, 1);
    o.field("candidates", &O::candidates, "BM25 candidates considered per recall").min(1);
    o.field("multi_hop", &O::multi_hop, "let the best memories cue a second recall");
    o.field("extract_facts", &O::extract_facts, "store the user's statements about themselves as semantic memories");
  }
};

class LongTermMemory final : public lal::Module {
 public:
  void start(lal::Context& ctx) override {
    ctx_ = &ctx;
    const auto options = ctx.options<LongTermOptions>();
    const lal::memory::DbOptions o = options.db.db_options("long_term memory (module '" + ctx.module_id() + "')");
    st_.decay = options.decay;
    st_.importance_weight = options.importance_weight;
    st_.rank_constant = options.rank_constant;
    st_.w_lexical = options.weight_lexical;
    st_.w_embedding = options.weight_embedding;
    st_.w_activation = options.weight_activation;
    st_.w_temporal = options.weight_temporal;
    st_.w_hop = options.weight_hop;
    st_.w_slot = options.weight_slot;
    st_.relevance_floor = options.relevance_floor;
    st_.multi_hop = options.multi_hop;
    st_.candidates = static_cast<std::size_t>(options.candidates);
    extract_facts_ = options.extract_facts;

    // A database that cannot be opened (locked past the timeout, corrupt, unreadable) fails the pipeline load here,
    // with the file named: running on without the memory the user expects would be worse.
    store_.emplace(o);
    if (store_->read_only()) {
      ctx.log(o.read_only ? lal::LogLevel::info : lal::LogLevel::error,
              "database '" + store_->path() + "' is read-only (" + store_->db().read_only_reason() +
                  "): recall works, new memories will not be stored");
    }
    lal::memory::recover_pending(*store_, [this](const std::string& s) { ctx_->log(lal::LogLevel::warn, s); });
    data_version_ = store_->data_version();
    queue_.emplace(*store_, options.writes, [this](bool error, const std::string& s) {
      ctx_->log(error ? lal::LogLevel::error : lal::LogLevel::warn, s);
    });
    ctx.on<lal::Episode>("episode", [this](const lal::Delivery<lal::Episode>& m) { encode(m); });
    ctx.serve<lal::RecallRequest, lal::RecallReply>(
        "recall", [this](const lal::Delivery<lal::RecallRequest>& m) { return recall(m); });
  }

  void stop() override {
    if (queue_ && store_ && !store_->read_only()) queue_->finish(applied());
    queue_.reset();
    store_.reset();  // closing checkpoints the WAL into the main file and releases the file for the next process
  }

 private:
  lal::memory::WriteQueue::Applied applied() {
    return [this](const lal::memory::PendingWrite& w, const lal::memory::EpisodeWrite* r) {
      auto it = index_.find(w.input.user);
      if (it == index_.end()) return;  // not loaded yet: it will be read from the database
      auto& index = it->second;
      if (w.kind == lal::memory::PendingWrite::uses) {
        for (const auto& [id, h] : w.used) index.set_uses(id, h);
        return;
      }
      if (!r) return;
      for (const auto& m : r->added) index.add(m);
      for (const auto& [id, h] : r->rehearsed) index.set_uses(id, h);
      for (const auto& [old_id, new_id] : r->superseded) index.set_superseded(old_id, new_id);
    };
  }

  /// Bring loaded indexes up to date with commits made by other connections.
  void sync() {
    const std::int64_t v = store_->data_version();
    if (v == data_version_) return;
    data_version_ = v;
    for (auto it = index_.begin(); it != index_.end();) {
      auto& index = it->second;
      auto fresh = store_->load(it->first, index.max_id());
      if (store_->count(it->first) != static_cast<std::int64_t>(index.size() + fresh.size())) {
        it = index_.erase(it);  // something was deleted: reload on next use
        continue;
      }
      for (auto& m : fresh) index.add(std::move(m));
      for (const auto& [id, by] : store_->superseded_facts(it->first)) index.set_superseded(id, by);
      ++it;
    }
  }

  lal::memory::UserIndex& index_of(const std::string& user) {
    auto it = index_.find(user);
    if (it != index_.end()) return it->second;
    lal::memory::UserIndex index;
    for (auto& m : store_->load(user)) index.add(std::move(m));
    return index_.emplace(user, std::move(index)).first->second;
  }

  void encode(const lal::Delivery<lal::Episode>& m) {
    if (m->user_text.empty()) return;
    if (store_->read_only()) {
      if (!warned_read_only_)
        ctx_->log(lal::LogLevel::warn, "database '" + store_->path() + "' is read-only: episodes are not being stored");
      warned_read_only_ = true;
      return;
    }
    sync();
    index_of(m.header.user);  // loaded before the write, so the write's rows are added exactly once
    lal::memory::PendingWrite w;
    w.kind = lal::memory::PendingWrite::episode;
    w.input.user = m.header.user;
    w.input.user_text = m->user_text;
    w.input.answer = m->answer;
    w.input.importance = m->importance;
    w.input.strategy = m->strategy;
    w.input.emotion = m->emotion;
    w.input.created_ns = wall_ns_of(m.header);
    w.extract_facts = extract_facts_;
    queue_->submit(std::move(w), applied());
  }

  lal::RecallReply recall(const lal::Delivery<lal::RecallRequest>& m) {
    lal::RecallReply reply;
    if (m->limit <= 0) return reply;
    const std::string& user = m.header.user;
    sync();
    if (queue_->size() && !store_->read_only()) queue_->flush(applied(), false);  // recall must answer soon
    auto& index = index_of(user);
    const std::int64_t now = wall_ns_of(m.header);
    const bool overview = m->cue.find_first_not_of(" \t\r\n") == std::string::npos;
    const auto recalled = index.recall(m->cue, static_cast<std::size_t>(m->limit), now, st_);
    for (const auto& r : recalled) {
      lal::MemoryItem item;
      item.id = std::to_string(r.memory->row.id);
      item.tier = "long_term";
      item.kind = r.memory->row.semantic ? "semantic" : "episodic";
      item.text = r.text;
      item.score = r.score;
      item.activation = r.activation;
      item.created_ns = r.memory->row.uses.created_ns;
      reply.items.push_back(std::move(item));
    }
    // Recall is rehearsal (not the overview: looking at the list is not remembering).
    if (!overview && !recalled.empty() && !store_->read_only()) {
      lal::memory::PendingWrite w;
      w.kind = lal::memory::PendingWrite::uses;
      w.input.user = user;
      w.used = lal::memory::rehearsals(recalled, now);
      queue_->submit(std::move(w), applied());
    }
    return reply;
  }

  lal::Context* ctx_ = nullptr;
  std::optional<lal::memory::MemoryStore> store_;
  std::optional<lal::memory::WriteQueue> queue_;
  std::map<std::string, lal::memory::UserIndex> index_;  // per user
  lal::memory::RecallSettings st_;
  std::int64_t data_version_ = 0;
  bool extract_facts_ = false, warned_read_only_ = false;  // extract_facts_: from LongTermOptions
};

lal::PluginDescriptor describe() {
  lal::PluginDescriptor d{"long_term", lal::ModuleKind::memory_tier, "0.2.0",
                          "Long-term memory: episodes and facts per user in SQLite (WAL), recalled by BM25 + "
                          "embedding + ACT-R activation, fused by rank"};
  d.optional_input<lal::Episode>("episode", "episodes to keep (from short_term's consolidate); unwired = recall only")
      .serves<lal::RecallRequest, lal::RecallReply>(
          "recall",
          "memories by rank fusion of lexical, embedding, activation, time and second-hop signals; empty "
          "cue = most active")
      .options<LongTermOptions>();
  return d;
}

}  // namespace

LAL_PLUGIN(LongTermMemory, describe)
