// jsonl — machine-readable output: one JSON object per line for every chunk and one closing line per turn. Tests,
// UIs and `lal bench` read it; the schema is in README.md and is part of the contract.
//
// Time: `t_ms` is when the line was written — when the event became visible — in milliseconds since the turn's
// percept was published (monotonic clock). Lines are written one at a time on this module's strand, so t_ms never
// decreases, even where messages from different topics arrive in another order than they were published. The
// percept's time comes from the optional `percept` input; unwired, the turn's first message seen stands in for it.
#include <cmath>
#include <nlohmann/json.hpp>

#include "lal/plugin.hpp"
#include "lal/plugins/output_support.hpp"
#include "lal/plugins/uncertainty.hpp"

namespace {

namespace lp = lal::plugins;
using nlohmann::json;

double round_ms(std::int64_t ns) { return std::round(static_cast<double>(ns) / 1e5) / 10.0; }  // 0.1 ms

struct JsonlOptions {
  bool include_empty = false;
  static void declare(lal::Options<JsonlOptions>& o) {
    o.field("include_empty", &JsonlOptions::include_empty,
            "also write chunks whose text is empty (a token inside a character)");
  }
};

/// When a turn began (the module's turn_state, freed by the runtime a while after the turn is done).
struct Origin {
  std::int64_t ns = 0;
};

class Jsonl final : public lal::Module {
 public:
  void start(lal::Context& ctx) override {
    ctx_ = &ctx;
    include_empty_ = ctx.options<JsonlOptions>().include_empty;
    ctx.on<lal::Percept>("percept", [this](const lal::Delivery<lal::Percept>& m) {
      ctx_->turn_state<Origin>(m.header.turn)->ns = m.header.timestamp_ns;  // the true origin, even after a chunk
    });
    auto on_chunk = [this](const lal::Delivery<lal::ThoughtChunk>& m) { chunk(m); };
    ctx.on<lal::ThoughtChunk>("thought", on_chunk);
    ctx.on<lal::ThoughtChunk>("insight", on_chunk);
    ctx.on<lal::ThoughtChunk>("answer", on_chunk);
    ctx.on<lal::TurnDone>("done", [this](const lal::Delivery<lal::TurnDone>& m) {
      closing_.done(m.header.turn, [this, m] { turn_done(m); });
    });
  }

 private:
  // The turn's time origin: the percept when known, else the first message seen (see the file comment).
  std::int64_t origin_ns(lal::TurnId turn, std::int64_t ts) {
    auto origin = ctx_->turn_state<Origin>(turn);
    if (!origin) return ts;  // turn 0: a message outside any turn
    if (!origin->ns) origin->ns = ts;
    return origin->ns;
  }

  void chunk(const lal::Delivery<lal::ThoughtChunk>& m) {
    const lal::ThoughtChunk& c = *m;
    if (c.kind == lal::ChunkKind::answer) closing_.answer_chunk(m.header.turn, c.last);
    if (c.text.empty() && !c.last && !include_empty_) return;  // a token still inside a UTF-8 character
    json j;
    j["t_ms"] = round_ms(lal::monotonic_ns() - origin_ns(m.header.turn, m.header.timestamp_ns));
    j["turn"] = m.header.turn;
    j["user"] = m.header.user;
    j["stage"] = lal::to_string(c.stage);
    j["kind"] = lal::to_string(c.kind);
    j["text"] = c.text;
    j["origin"] = c.origin;
    j["last"] = c.last;
    if (lp::measured(c)) j["confidence"] = c.confidence;
    if (c.has_token) {
      j["logprob"] = c.logprob;
      j["entropy"] = c.entropy;
    }
    write(j);
  }

  void turn_done(const lal::Delivery<lal::TurnDone>& m) {
    const lal::TurnDone& d = *m;
    const std::int64_t origin = origin_ns(m.header.turn, m.header.timestamp_ns);
    json j;
    j["t_ms"] = round_ms(lal::monotonic_ns() - origin);
    j["turn"] = m.header.turn;
    j["user"] = m.header.user;
    j["stage"] = "conclusion";
    j["kind"] = "state";
    j["event"] = "turn_done";
    j["text"] = d.answer;
    j["user_text"] = d.user_text;
    j["strategy"] = lal::to_string(d.strategy);
    j["confidence"] = d.confidence;
    j["cancelled"] = d.cancelled;
    j["finish_reason"] = lal::to_string(d.finish_reason);
    j["first_output_ms"] = d.first_output_ns ? json(round_ms(d.first_output_ns - origin)) : json(nullptr);
    j["answer_done_ms"] = d.answer_done_ns ? json(round_ms(d.answer_done_ns - origin)) : json(nullptr);
    write(j);
    // The origin is kept (the runtime frees turn state only a linger after TurnDone): modules may still speak for
    // this turn after it is done (emotion appraises the outcome), and their t_ms keep counting from the same percept.
  }

  void write(const json& j) {
    // Invalid UTF-8 from a model (a cut character) is replaced, never allowed to throw and lose the line.
    ctx_->write_output(j.dump(-1, ' ', false, json::error_handler_t::replace) + "\n");
  }

  lal::Context* ctx_ = nullptr;
  bool include_empty_ = false;
  lp::DoneAfterAnswer closing_{ctx_};
};

lal::PluginDescriptor describe() {
  lal::PluginDescriptor d{"jsonl", lal::ModuleKind::output_strategy, "0.1.0",
                          "One JSON object per line per chunk, and a turn_done line per turn"};
  d.input<lal::ThoughtChunk>("thought", "the regions' thoughts")
      .optional_input<lal::ThoughtChunk>("insight", "insight chunks")
      .optional_input<lal::ThoughtChunk>("answer", "the answer, streamed")
      .optional_input<lal::TurnDone>("done", "end of turn: the turn_done line")
      .optional_input<lal::Percept>("percept", "the turn's percept: the time origin of t_ms")
      .options<JsonlOptions>();
  return d;
}

}  // namespace

LAL_PLUGIN(Jsonl, describe)
