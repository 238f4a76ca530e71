// think_aloud — the chat output: the regions' thoughts as stage-labelled lines ([直感] ..., [分析] ...), then the
// answer, hedged by its measured uncertainty.
//
// One line at a time: several regions stream at once (intuition and analysis overlap), and interleaving their tokens
// would be unreadable. The first stream to speak owns the screen until its `last` chunk; the others are buffered and
// written, in the order they began, as soon as the screen is free — still streaming live once they own it. A turn
// that ends (TurnDone) or is cancelled closes its streams that are still open, so none holds the screen for ever.
//
// Hedging: the answer's first `hedge_after_tokens` tokens are held back, then written behind a hedge chosen from the
// answer's measured confidence at that point (lal/plugins/uncertainty.hpp): below `strong_hedge_below` a strong
// hedge (間違っているかもしれませんが、/ "I might be wrong, but"), below `hedge_below` a mild one (たぶん、/
// "Probably,"), otherwise none. Holding a few tokens keeps the answer streaming while the hedge still reflects it.
#include <cstdio>
#include <deque>
#include <map>
#include <memory>
#include <tuple>

#include "lal/plugin.hpp"
#include "lal/plugins/output_support.hpp"
#include "lal/plugins/uncertainty.hpp"

namespace {

namespace lp = lal::plugins;

using StreamKey = std::tuple<int, int, std::string>;  // stage, kind, origin: one stream within a turn

struct Stream {
  lal::TurnId turn = 0;
  StreamKey key;
  std::string label;     // "[直感] ", or empty
  std::string buffered;  // text waiting for the screen
  bool closed = false;   // its `last` chunk arrived (or its turn ended)
  bool ended = false;    // closed because its turn ended (done or cancelled) before its `last` chunk
  bool is_answer = false;
  // The hedge gate of an answer stream.
  bool gate_open = false;
  std::string held;
  std::size_t held_tokens = 0;
  float confidence = -1.0f;
};

/// One turn's streams, in ctx.turn_state: the runtime frees them after the turn. A stream stays owned by the
/// screen queue (current_/waiting_) until it is written, so freeing the turn never drops text.
struct TurnStreams {
  std::map<StreamKey, std::shared_ptr<Stream>> streams;
  bool watching_cancel = false;
};

/// In English, a hedge before a sentence-initial function word reads better with the word lower-cased.
std::string after_english_hedge(std::string text) {
  static const char* kStarters[] = {"The", "It",   "This", "That", "There", "These", "Those", "A",  "An", "Yes", "No",
                                    "My",  "Your", "We",   "You",  "They",  "He",    "She",   "In", "On", "At"};
  for (const char* w : kStarters) {
    const std::string word = w;
    if (text.compare(0, word.size(), word) == 0 &&
        (text.size() == word.size() || text[word.size()] == ' ' || text[word.size()] == ',')) {
      text[0] = static_cast<char>(text[0] - 'A' + 'a');
      break;
    }
  }
  return text;
}

struct ThinkAloudOptions {
  std::string labels = "ja";
  bool hide_thoughts = false;
  double hedge_below = 0.7;
  double strong_hedge_below = 0.45;
  int hedge_after_tokens = 8;
  bool show_confidence = false;

  static void declare(lal::Options<ThinkAloudOptions>& o) {
    o.field("labels", &ThinkAloudOptions::labels, "language of labels and hedges: ja or en").one_of({"ja", "en"});
    o.field("hide_thoughts", &ThinkAloudOptions::hide_thoughts, "write only the answer");
    o.field("hedge_below", &ThinkAloudOptions::hedge_below, "answer confidence below which a mild hedge is added")
        .range(0, 1);
    o.field("strong_hedge_below", &ThinkAloudOptions::strong_hedge_below,
            "answer confidence below which a strong hedge is added (≤ hedge_below)")
        .range(0, 1);
    o.field("hedge_after_tokens", &ThinkAloudOptions::hedge_after_tokens,
            "answer tokens held back to measure confidence before the hedge")
        .min(0);
    o.field("show_confidence", &ThinkAloudOptions::show_confidence,
            "after each answer, write its measured confidence and strategy");
  }
};

class ThinkAloud final : public lal::Module {
 public:
  void start(lal::Context& ctx) override {
    ctx_ = &ctx;
    const auto o = ctx.options<ThinkAloudOptions>();
    ja_ = o.labels == "ja";
    hide_thoughts_ = o.hide_thoughts;
    hedge_below_ = o.hedge_below;
    strong_hedge_below_ = o.strong_hedge_below;
    if (strong_hedge_below_ > hedge_below_) throw lal::ConfigError("strong_hedge_below must not exceed hedge_below");
    hedge_after_tokens_ = static_cast<std::size_t>(o.hedge_after_tokens);
    show_confidence_ = o.show_confidence;
    auto on_chunk = [this](const lal::Delivery<lal::ThoughtChunk>& m) { chunk(m); };
    ctx.on<lal::ThoughtChunk>("thought", on_chunk);
    ctx.on<lal::ThoughtChunk>("insight", on_chunk);
    ctx.on<lal::ThoughtChunk>("answer", on_chunk);
    ctx.on<lal::TurnDone>("done", [this](const lal::Delivery<lal::TurnDone>& m) {
      closing_.done(m.header.turn, [this, m] {
        end_turn(m.header.turn);
        turn_done(*m);
      });
    });
  }

 private:
  void chunk(const lal::Delivery<lal::ThoughtChunk>& m) {
    const lal::ThoughtChunk& c = *m;
    const lal::TurnId turn = m.header.turn;
    const bool answer = c.kind == lal::ChunkKind::answer;
    if (hide_thoughts_ && !answer) return;
    std::shared_ptr<TurnStreams> held_turn;  // keeps the turn's state alive through this call
    TurnStreams& turn_streams = streams_of(turn, held_turn);
    const StreamKey key{static_cast<int>(c.stage), static_cast<int>(c.kind), c.origin};
    std::shared_ptr<Stream>& slot = turn_streams.streams[key];
    if (!slot) slot = still_open(turn, key);  // its turn's state was freed while it streamed on
    if (!slot || slot->ended) {
      // After its turn ended a stream, the stream's own closing chunk has nothing to show, and a cancelled turn's
      // late thoughts are not shown at all (the user asked it to stop).
      const bool stopped = turn != 0 && ctx_->cancellation(turn).cancelled();
      if ((slot && c.text.empty()) || stopped) {
        if (!slot) turn_streams.streams.erase(key);
        if (answer) closing_.answer_chunk(turn, c.last);
        return;
      }
      slot = begin_stream(c, turn, key, turn_streams);
    }
    const std::shared_ptr<Stream> s = slot;
    if (c.last) turn_streams.streams.erase(key);  // a later chunk of this key begins a new stream
    const std::string visible = answer ? through_hedge_gate(*s, c) : c.text;
    if (current_ == s) {
      std::string out = visible;
      if (c.last) out += "\n";
      if (!out.empty()) ctx_->write_output(out);
      if (c.last) finish_current();
    } else {
      s->buffered += visible;
      s->closed = c.last;
    }
    if (answer) closing_.answer_chunk(turn, c.last);
  }

  TurnStreams& streams_of(lal::TurnId turn, std::shared_ptr<TurnStreams>& hold) {
    if (turn == 0) return outside_turns_;
    hold = ctx_->turn_state<TurnStreams>(turn);
    return *hold;
  }

  std::shared_ptr<Stream> still_open(lal::TurnId turn, const StreamKey& key) const {
    auto same = [&](const std::shared_ptr<Stream>& s) { return !s->closed && s->turn == turn && s->key == key; };
    if (current_ && same(current_)) return current_;
    for (const auto& s : waiting_)
      if (same(s)) return s;
    return nullptr;
  }

  std::shared_ptr<Stream> begin_stream(const lal::ThoughtChunk& c, lal::TurnId turn, const StreamKey& key,
                                       TurnStreams& turn_streams) {
    auto s = std::make_shared<Stream>();
    s->turn = turn;
    s->key = key;
    s->is_answer = c.kind == lal::ChunkKind::answer;
    if (!(s->is_answer && hide_thoughts_))
      s->label = std::string("[") + (s->is_answer ? (ja_ ? "答え" : "answer") : lp::stage_label(c.stage, ja_)) + "] ";
    if (turn != 0 && !turn_streams.watching_cancel) {
      turn_streams.watching_cancel = true;
      ctx_->on_cancel(turn, [this, turn] { end_turn(turn); });
    }
    if (current_) {
      waiting_.push_back(s);
    } else {
      current_ = s;
      ctx_->write_output(s->label);
    }
    return s;
  }

  std::string through_hedge_gate(Stream& s, const lal::ThoughtChunk& c) {
    if (s.gate_open) return c.text;
    s.held += c.text;
    if (lp::measured(c)) s.confidence = c.confidence;
    if (c.has_token) ++s.held_tokens;
    if (s.held_tokens < hedge_after_tokens_ && !c.last) return {};
    return open_hedge_gate(s);
  }

  // The held answer text behind the hedge its confidence calls for.
  std::string open_hedge_gate(Stream& s) {
    s.gate_open = true;
    std::string text = std::move(s.held);
    s.held.clear();
    text.erase(0, text.find_first_not_of(" \n"));
    switch (lp::hedge_for(s.confidence, hedge_below_, strong_hedge_below_)) {
      case lp::Hedge::none: return text;
      case lp::Hedge::mild: return ja_ ? "たぶん、" + text : "Probably, " + after_english_hedge(text);
      case lp::Hedge::strong:
        return ja_ ? "間違っているかもしれませんが、" + text : "I might be wrong, but " + after_english_hedge(text);
    }
    return text;
  }

  // The stream on screen closed: give the screen to the streams that began meanwhile, in order.
  void finish_current() {
    current_.reset();
    while (!waiting_.empty()) {
      const std::shared_ptr<Stream> s = std::move(waiting_.front());
      waiting_.pop_front();
      std::string out = s->label + s->buffered;
      s->buffered.clear();
      if (!s->closed) {
        current_ = s;
        ctx_->write_output(out);
        return;
      }
      ctx_->write_output(out + "\n");
    }
  }

  // The turn is done or cancelled: close its streams that are still open, so none keeps the screen from the next
  // turns. Their text so far is written; what they send later is not.
  void end_turn(lal::TurnId turn) {
    if (!ctx_->has_turn_state<TurnStreams>(turn)) return;
    const auto turn_streams = ctx_->turn_state<TurnStreams>(turn);
    for (auto& [key, s] : turn_streams->streams) {
      if (s->ended) continue;
      s->ended = true;
      const std::string rest = s->is_answer && !s->gate_open ? open_hedge_gate(*s) : std::string();
      if (current_ == s) {
        ctx_->write_output(rest + "\n");
        finish_current();
      } else {
        s->buffered += rest;
        s->closed = true;
      }
    }
  }

  void turn_done(const lal::TurnDone& d) {
    if (d.cancelled && d.answer.empty()) {
      ctx_->write_output(ja_ ? "（考えるのを中断しました）\n" : "(stopped thinking)\n");
      return;
    }
    if (!show_confidence_) return;
    char buf[128];
    if (ja_)
      std::snprintf(buf, sizeof buf, "（確信度 %.2f・%s）\n", d.confidence,
                    d.strategy == lal::Strategy::deep ? "じっくり考えて" : "すぐに");
    else
      std::snprintf(buf, sizeof buf, "(confidence %.2f, %s)\n", d.confidence,
                    d.strategy == lal::Strategy::deep ? "after deep thought" : "answered directly");
    ctx_->write_output(buf);
  }

  lal::Context* ctx_ = nullptr;
  bool ja_ = true;
  bool hide_thoughts_ = false;
  double hedge_below_ = 0.7, strong_hedge_below_ = 0.45;
  std::size_t hedge_after_tokens_ = 8;
  bool show_confidence_ = false;
  TurnStreams outside_turns_;        // chunks published outside any turn (turn 0)
  std::shared_ptr<Stream> current_;  // owns the screen
  std::deque<std::shared_ptr<Stream>> waiting_;
  lp::DoneAfterAnswer closing_{ctx_};
};

lal::PluginDescriptor describe() {
  lal::PluginDescriptor d{"think_aloud", lal::ModuleKind::output_strategy, "0.1.0",
                          "Stage-labelled thoughts, then the answer, hedged by its measured uncertainty"};
  d.input<lal::ThoughtChunk>("thought", "the regions' thoughts")
      .optional_input<lal::ThoughtChunk>("insight", "insight chunks")
      .optional_input<lal::ThoughtChunk>("answer", "the answer, streamed")
      .optional_input<lal::TurnDone>("done", "end of turn: confidence line, cancellation notice")
      .options<ThinkAloudOptions>();
  return d;
}

}  // namespace

LAL_PLUGIN(ThinkAloud, describe)
