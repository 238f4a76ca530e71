// answer_only — the quiet output: only the answer, streamed as it is composed, one line per turn. Thoughts are
// received (the contract wires them) and ignored; an answer chunk is recognised by kind, whichever port it came on.
#include "lal/plugin.hpp"

namespace {

class AnswerOnly final : public lal::Module {
 public:
  void start(lal::Context& ctx) override {
    ctx_ = &ctx;
    auto on_chunk = [this](const lal::Delivery<lal::ThoughtChunk>& m) {
      if (m->kind != lal::ChunkKind::answer) return;
      std::string out = m->text;
      if (m->last) out += "\n";
      if (!out.empty()) ctx_->write_output(out);
    };
    ctx.on<lal::ThoughtChunk>("thought", on_chunk);
    ctx.on<lal::ThoughtChunk>("insight", on_chunk);
    ctx.on<lal::ThoughtChunk>("answer", on_chunk);
    ctx.on<lal::TurnDone>("done", [this](const lal::Delivery<lal::TurnDone>& m) {
      if (m->cancelled && m->answer.empty()) ctx_->write_output("\n");  // keep one line per turn
    });
  }

 private:
  lal::Context* ctx_ = nullptr;
};

lal::PluginDescriptor describe() {
  lal::PluginDescriptor d{"answer_only", lal::ModuleKind::output_strategy, "0.1.0",
                          "Writes only the answer, streamed, one line per turn"};
  d.input<lal::ThoughtChunk>("thought", "thoughts (ignored unless they are answer chunks)")
      .optional_input<lal::ThoughtChunk>("insight", "insight chunks (ignored)")
      .optional_input<lal::ThoughtChunk>("answer", "the answer, streamed")
      .optional_input<lal::TurnDone>("done", "end of turn (an empty line for a cancelled turn without answer)");
  return d;
}

}  // namespace

LAL_PLUGIN(AnswerOnly, describe)
