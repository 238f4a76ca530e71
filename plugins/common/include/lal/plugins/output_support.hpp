// Helpers shared by the output strategies (think_aloud, answer_only, jsonl): stage labels as people read them, and
// holding a turn's TurnDone back until the turn's answer stream has closed.
#pragma once

#include <functional>

#include "lal/messages.hpp"
#include "lal/module.hpp"

namespace lal::plugins {

/// The label of a stage: Japanese (as `transcript` writes them) or the English stage name.
inline const char* stage_label(Stage s, bool ja) {
  if (!ja) return to_string(s);
  switch (s) {
    case Stage::intuition: return "直感";
    case Stage::exploration: return "探索";
    case Stage::analysis: return "分析";
    case Stage::insight: return "ひらめき";
    case Stage::conclusion: return "結論";
    case Stage::recall: return "想起";
    case Stage::emotion: return "感情";
  }
  return "";
}

/// The answer and the TurnDone travel on different topics, so an output can receive them out of order (a long
/// answer is drained in batches). This keeps a turn's "done" until every answer stream of the turn has closed, in
/// the module's turn_state (freed by the runtime). Use on the output's strand only.
class DoneAfterAnswer {
 public:
  using Emit = std::function<void()>;
  explicit DoneAfterAnswer(Context*& ctx) : ctx_(ctx) {}

  /// Call for every answer chunk.
  void answer_chunk(TurnId turn, bool last) {
    auto gate = ctx_->turn_state<Gate>(turn);
    gate->open = !last;
    if (last && gate->pending) {
      Emit e = std::move(gate->pending);
      gate->pending = nullptr;
      e();
    }
  }
  /// Call when the turn's TurnDone arrives: `emit` runs now, or when the answer closes.
  void done(TurnId turn, Emit emit) {
    auto gate = ctx_->turn_state<Gate>(turn);
    if (gate->open) {
      gate->pending = std::move(emit);
      return;
    }
    emit();
  }

 private:
  struct Gate {
    bool open = false;
    Emit pending;
  };
  Context*& ctx_;  // the module's, set in start()
};

}  // namespace lal::plugins
