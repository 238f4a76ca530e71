// Streaming one stage of thinking onto the bus, as the thinking-pipeline contract asks: one ThoughtChunk per
// generated token with its measured log-probability and entropy and the stage's confidence so far (see
// uncertainty.hpp), and exactly one closing chunk marked `last` — also when generation is cancelled or fails.
//
//     auto s = std::make_shared<lal::plugins::StageStream>(ctx, "thought", lal::Stage::intuition,
//                                                          lal::ChunkKind::thought, m.header);
//     lal::plugins::stream_into(*model, request, s, ctx.cancellation(turn), [s](const lal::GenerationOutcome& o) {
//       s->close();   // on the module's strand, after the last token
//     });
//
// Threading: use a StageStream on the module's strand (handlers, and the callbacks of a model bound to the module).
#pragma once

#include <memory>
#include <string>
#include <utility>

#include "lal/module.hpp"
#include "lal/plugins/uncertainty.hpp"
#include "lal/services/language_model.hpp"

namespace lal::plugins {

class StageStream {
 public:
  StageStream(Context& ctx, std::string port, Stage stage, ChunkKind kind, MessageHeader cause)
      : ctx_(ctx), port_(std::move(port)), stage_(stage), kind_(kind), cause_(std::move(cause)) {}
  StageStream(const StageStream&) = delete;
  StageStream& operator=(const StageStream&) = delete;
  /// Closes the stage if nobody did (an exception unwound past it), so outputs never wait for a `last` forever.
  ~StageStream() {
    try {
      close();
    } catch (...) {  // publishing failed while unwinding: nothing sensible is left to do
    }
  }

  /// Publish a model token: its text (possibly empty), its log-probability and entropy, the stage's confidence.
  void token(const TokenEvent& ev) {
    stats_.add(ev.logprob, ev.entropy);
    text_ += ev.text;
    ThoughtChunk c = chunk(ev.text, false);
    c.has_token = true;
    c.logprob = ev.logprob;
    c.entropy = ev.entropy;
    stats_.stamp(c);
    send(std::move(c));
  }

  /// Publish text that did not come from the model (a fixed remark). Carries no measurements.
  void say(const std::string& text) {
    text_ += text;
    send(chunk(text, false));
  }

  /// Publish the closing chunk once: `tail` (may be empty, unmeasured) and the stage's final confidence.
  void close(const std::string& tail = {}) {
    if (closed_) return;
    closed_ = true;
    text_ += tail;
    ThoughtChunk c = chunk(tail, true);
    stats_.stamp(c);
    send(std::move(c));
  }

  bool closed() const { return closed_; }
  const std::string& text() const { return text_; }
  const TokenStats& stats() const { return stats_; }
  /// Monotonic time of the first chunk with visible text (0 = none yet).
  std::int64_t first_visible_ns() const { return first_visible_ns_; }
  const MessageHeader& cause() const { return cause_; }

 private:
  ThoughtChunk chunk(const std::string& text, bool last) const {
    ThoughtChunk c;
    c.stage = stage_;
    c.kind = kind_;
    c.text = text;
    c.last = last;
    c.origin = ctx_.module_id();
    return c;
  }
  void send(ThoughtChunk c) {
    if (!first_visible_ns_ && !c.text.empty()) first_visible_ns_ = monotonic_ns();
    ctx_.publish(port_, std::move(c), &cause_);
  }

  Context& ctx_;
  std::string port_;
  Stage stage_;
  ChunkKind kind_;
  MessageHeader cause_;
  TokenStats stats_;
  std::string text_;
  bool closed_ = false;
  std::int64_t first_visible_ns_ = 0;
};

/// Generate with `model` (bound to the module: see LanguageModel::bind_to_module), publishing every token into
/// `stream` on the module's strand as it arrives; then `on_done` runs there with the outcome. Does not close the
/// stream (the caller may add a closing remark). Pass the scope's token where one applies (it is also cancelled
/// when the whole turn is). An engine error arrives in the outcome; the stream stays open for the caller to close.
inline void stream_into(LanguageModel& model, const GenerationRequest& request, std::shared_ptr<StageStream> stream,
                        const CancellationToken& cancel, LanguageModel::DoneCallback on_done) {
  model.submit(
      request, [stream](const TokenEvent& ev) { stream->token(ev); }, std::move(on_done), cancel);
}

}  // namespace lal::plugins
