// transcript — an output strategy that writes every thought and answer as stage-labelled lines, streaming chunks
// as they arrive. The simplest output strategy; `think_aloud`, `answer_only` and `jsonl` are the chat ones.
#include <map>
#include <set>

#include "lal/plugin.hpp"

namespace {

const char* label(lal::Stage s, bool ja) {
  if (!ja) return lal::to_string(s);
  switch (s) {
    case lal::Stage::intuition: return "直感";
    case lal::Stage::exploration: return "探索";
    case lal::Stage::analysis: return "分析";
    case lal::Stage::insight: return "ひらめき";
    case lal::Stage::conclusion: return "結論";
    case lal::Stage::recall: return "想起";
    case lal::Stage::emotion: return "感情";
  }
  return "";
}

struct TranscriptOptions {
  std::string labels = "ja";
  bool show_turn = false;
  static void declare(lal::Options<TranscriptOptions>& o) {
    o.field("labels", &TranscriptOptions::labels, "stage label language: ja or en").one_of({"ja", "en"});
    o.field("show_turn", &TranscriptOptions::show_turn, "prefix each line with #<turn>");
  }
};

/// The stages of a turn between their first chunk and the one marked last (the module's turn_state).
using OpenStages = std::set<std::pair<int, std::string>>;  // stage, origin

class Transcript final : public lal::Module {
 public:
  void start(lal::Context& ctx) override {
    ctx_ = &ctx;
    const auto o = ctx.options<TranscriptOptions>();
    ja_ = o.labels == "ja";
    show_turn_ = o.show_turn;
    ctx.on<lal::ThoughtChunk>("thought", [this](const lal::Delivery<lal::ThoughtChunk>& m) { write(m); });
  }

 private:
  void write(const lal::Delivery<lal::ThoughtChunk>& m) {
    // A stage is "open" between its first chunk and the chunk marked last; the label is written once.
    auto open = m.header.turn ? ctx_->turn_state<OpenStages>(m.header.turn) : outside_turns_;
    const auto key = std::make_pair(static_cast<int>(m->stage), m->origin);
    std::string out;
    if (!open->count(key)) {
      open->insert(key);
      if (show_turn_) out += "#" + std::to_string(m.header.turn) + " ";
      out += std::string("[") + label(m->stage, ja_) + "] ";
    }
    out += m->text;
    if (m->last) {
      out += "\n";
      open->erase(key);
    }
    ctx_->write_output(out);
  }

  lal::Context* ctx_ = nullptr;
  bool ja_ = true;
  bool show_turn_ = false;
  std::shared_ptr<OpenStages> outside_turns_ = std::make_shared<OpenStages>();  // messages of turn 0
};

lal::PluginDescriptor describe() {
  lal::PluginDescriptor d{"transcript", lal::ModuleKind::output_strategy, "0.1.0",
                          "Writes thoughts and answers as stage-labelled lines, streamed"};
  d.input<lal::ThoughtChunk>("thought", "thoughts and answer chunks to write").options<TranscriptOptions>();
  return d;
}

}  // namespace

LAL_PLUGIN(Transcript, describe)
