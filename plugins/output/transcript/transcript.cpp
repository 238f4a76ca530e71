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

class Transcript final : public lal::Module {
 public:
  void start(lal::Context& ctx) override {
    ctx_ = &ctx;
    const auto labels = ctx.config().get<std::string>("labels");
    if (labels != "ja" && labels != "en") throw lal::ConfigError("labels must be ja or en, got '" + labels + "'");
    ja_ = labels == "ja";
    show_turn_ = ctx.config().get<bool>("show_turn");
    ctx.on<lal::ThoughtChunk>("thought", [this](const lal::Delivery<lal::ThoughtChunk>& m) { write(m); });
  }

 private:
  void write(const lal::Delivery<lal::ThoughtChunk>& m) {
    // A stage is "open" between its first chunk and the chunk marked last; the label is written once.
    const auto key = std::make_tuple(m.header.turn, static_cast<int>(m->stage), m->origin);
    std::string out;
    if (!open_.count(key)) {
      open_.insert(key);
      if (show_turn_) out += "#" + std::to_string(m.header.turn) + " ";
      out += std::string("[") + label(m->stage, ja_) + "] ";
    }
    out += m->text;
    if (m->last) {
      out += "\n";
      open_.erase(key);
    }
    ctx_->write_output(out);
  }

  lal::Context* ctx_ = nullptr;
  bool ja_ = true;
  bool show_turn_ = false;
  std::set<std::tuple<lal::TurnId, int, std::string>> open_;
};

lal::PluginDescriptor describe() {
  lal::PluginDescriptor d{"transcript", lal::ModuleKind::output_strategy, "0.1.0",
                          "Writes thoughts and answers as stage-labelled lines, streamed"};
  d.input<lal::ThoughtChunk>("thought", "thoughts and answer chunks to write")
      .config_string("labels", "ja", "stage label language: ja or en")
      .config_bool("show_turn", false, "prefix each line with #<turn>");
  return d;
}

}  // namespace

LAL_PLUGIN(Transcript, describe)
