// working_memory — a memory tier holding a few chunks per user (`capacity`), displaced by activation.
//
// Activation is ACT-R base-level learning: B = ln(Σ_j (t - t_j)^-d) over the chunk's uses (its encoding and every
// recall that returned it), with decay d. When a new chunk arrives and the tier is full, the chunk with the lowest
// activation is displaced (ties: the older chunk), so what is rehearsed stays and what is not fades. Time is the
// message header's monotonic timestamp, so results depend only on the message sequence and its timing.
#include <cmath>
#include <map>

#include "lal/plugin.hpp"
#include "lal/plugins/text_features.hpp"

namespace {

struct Chunk {
  std::uint64_t id = 0;
  std::string text;
  std::vector<std::string> keys;
  std::vector<std::int64_t> uses_ns;  // encoding time, then each recall
};

struct WorkingMemoryOptions {
  std::int64_t capacity = 7;
  double decay = 0.5;

  static void declare(lal::Options<WorkingMemoryOptions>& o) {
    o.field("capacity", &WorkingMemoryOptions::capacity,
            "chunks held per user before the least active is displaced (7±2 is human-like)")
        .min(1);
    o.field("decay", &WorkingMemoryOptions::decay, "ACT-R decay d in B = ln(Σ t^-d)").min(0.001);
  }
};

class WorkingMemory final : public lal::Module {
 public:
  void start(lal::Context& ctx) override {
    ctx_ = &ctx;
    const auto options = ctx.options<WorkingMemoryOptions>();
    capacity_ = static_cast<std::size_t>(options.capacity);
    decay_ = options.decay;
    ctx.on<lal::Percept>("percept", [this](const lal::Delivery<lal::Percept>& m) { encode(m); });
    ctx.serve<lal::RecallRequest, lal::RecallReply>(
        "recall", [this](const lal::Delivery<lal::RecallRequest>& m) { return recall(m); });
  }

 private:
  double activation(const Chunk& c, std::int64_t now_ns) const {
    double sum = 0.0;
    for (std::int64_t t : c.uses_ns) {
      const double age_s = std::max(1e-3, static_cast<double>(now_ns - t) * 1e-9);
      sum += std::pow(age_s, -decay_);
    }
    return std::log(sum);
  }

  void encode(const lal::Delivery<lal::Percept>& m) {
    auto& chunks = by_user_[m.header.user];  // partitioned per user: recall never crosses users
    const std::int64_t now = m.header.timestamp_ns;
    if (chunks.size() >= capacity_) {
      auto weakest = chunks.begin();
      for (auto it = chunks.begin(); it != chunks.end(); ++it) {
        const double a = activation(*it, now), b = activation(*weakest, now);
        if (a < b || (a == b && it->id < weakest->id)) weakest = it;
      }
      ctx_->log(lal::LogLevel::debug, "displaced chunk #" + std::to_string(weakest->id) + ": " + weakest->text);
      chunks.erase(weakest);
    }
    chunks.push_back(Chunk{++next_id_, m->text, lal::plugins::match_keys(m->text), {now}});
  }

  lal::RecallReply recall(const lal::Delivery<lal::RecallRequest>& m) {
    lal::RecallReply reply;
    auto it = by_user_.find(m.header.user);
    if (it == by_user_.end()) return reply;
    const auto cue = lal::plugins::match_keys(m->cue);
    const std::int64_t now = m.header.timestamp_ns;
    // An empty cue asks what is held right now (the /memory view): every chunk by activation, without rehearsing.
    const bool introspect = m->cue.find_first_not_of(" \t\r\n") == std::string::npos;
    struct Scored {
      double score;
      double act;
      Chunk* chunk;
    };
    std::vector<Scored> scored;
    for (auto& c : it->second) {
      const double act = activation(c, now);
      if (introspect) {
        scored.push_back({act, act, &c});
        continue;
      }
      if (c.text == m->cue) continue;  // the cue itself is not a memory of it
      const double relevance = lal::plugins::key_overlap(c.keys, cue);
      if (relevance <= 0.0) continue;
      // Relevance dominates; activation breaks ties between equally relevant chunks.
      scored.push_back({relevance + 0.05 * act, act, &c});
    }
    std::sort(scored.begin(), scored.end(), [](const Scored& a, const Scored& b) {
      return a.score != b.score ? a.score > b.score : a.chunk->id > b.chunk->id;
    });
    for (const auto& s : scored) {
      if (static_cast<int>(reply.items.size()) >= m->limit) break;
      if (!introspect) s.chunk->uses_ns.push_back(now);  // retrieval is rehearsal
      lal::MemoryItem item;
      item.id = std::to_string(s.chunk->id);
      item.tier = "working";
      item.kind = "chunk";
      item.text = s.chunk->text;
      item.score = s.score;
      item.activation = s.act;
      item.created_ns = s.chunk->uses_ns.front();
      reply.items.push_back(std::move(item));
    }
    return reply;
  }

  lal::Context* ctx_ = nullptr;
  std::size_t capacity_ = 0;  // from WorkingMemoryOptions
  double decay_ = 0.0;
  std::uint64_t next_id_ = 0;
  std::map<std::string, std::vector<Chunk>> by_user_;
};

lal::PluginDescriptor describe() {
  lal::PluginDescriptor d{"working_memory", lal::ModuleKind::memory_tier, "0.1.0",
                          "Working memory: a few chunks per user, displaced by ACT-R activation"};
  d.input<lal::Percept>("percept", "each perceived line becomes a chunk")
      .serves<lal::RecallRequest, lal::RecallReply>(
          "recall", "chunks sharing words/bigrams with the cue, best first; empty cue = every chunk by activation")
      .options<WorkingMemoryOptions>();
  return d;
}

}  // namespace

LAL_PLUGIN(WorkingMemory, describe)
