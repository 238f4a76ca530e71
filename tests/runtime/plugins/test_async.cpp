// A test plugin for the SDK's strand-side waiting: turn_state, await with a deadline, post_after, every and
// on_cancel. Each percept waits for the same turn's thought on `thought_in` (at most `deadline_ms`) and publishes
// what happened on `thought`:
//   "got <text> (n=<percepts this turn>)"  the thought came in time
//   "timeout (n=...)"                      it did not
//   "cancelled"                            the turn was cancelled while waiting
//   "tick x3"                              percept "tick": a periodic timer ran three times, then stopped itself
#include "lal/plugin.hpp"

namespace {

struct AsyncProbeOptions {
  std::int64_t deadline_ms = 100;
  std::vector<std::string> tags = {"a"};  // list options: defaults and element checks (sdk_runtime_test)
  std::vector<double> weights = {0.5, 1.0};
  static void declare(lal::Options<AsyncProbeOptions>& o) {
    o.field("deadline_ms", &AsyncProbeOptions::deadline_ms, "how long to wait for the thought").min(0);
    o.field("tags", &AsyncProbeOptions::tags, "labels, each a or b").one_of({"a", "b"});
    o.field("weights", &AsyncProbeOptions::weights, "each in [0, 1]").range(0, 1);
  }
};

struct Turn {
  int percepts = 0;
  bool answered = false;
};

class AsyncProbe final : public lal::Module {
 public:
  void start(lal::Context& ctx) override {
    ctx_ = &ctx;
    deadline_ = std::chrono::milliseconds(ctx.options<AsyncProbeOptions>().deadline_ms);
    ctx.keep<lal::ThoughtChunk>("thought_in");
    ctx.on<lal::Percept>("percept", [this](const lal::Delivery<lal::Percept>& m) { percept(m); });
  }

 private:
  void say(const lal::MessageHeader& cause, std::string text) {
    lal::ThoughtChunk c;
    c.text = std::move(text);
    c.last = true;
    ctx_->publish("thought", std::move(c), &cause);
  }

  void percept(const lal::Delivery<lal::Percept>& m) {
    const lal::MessageHeader h = m.header;
    if (m->text == "tick") {
      auto ticks = std::make_shared<int>(0);
      auto timer = std::make_shared<lal::Timer>();
      *timer = ctx_->every(std::chrono::milliseconds(5), [this, h, ticks, timer] {
        if (++*ticks == 3) {
          timer->cancel();
          say(h, "tick x3");
        }
      });
      return;
    }
    auto turn = ctx_->turn_state<Turn>(h.turn);
    ++turn->percepts;
    ctx_->on_cancel(h.turn, [this, h, turn] {
      if (turn->answered) return;
      turn->answered = true;
      say(h, "cancelled");
    });
    ctx_->await<lal::ThoughtChunk>(
        "thought_in", h.turn, deadline_,
        [this, h, turn](const lal::Delivery<lal::ThoughtChunk>& t) {
          if (turn->answered) return;
          turn->answered = true;
          say(h, "got " + t->text + " (n=" + std::to_string(turn->percepts) + ")");
        },
        [this, h, turn] {
          if (turn->answered) return;
          turn->answered = true;
          say(h, "timeout (n=" + std::to_string(turn->percepts) + ")");
        });
  }

  lal::Context* ctx_ = nullptr;
  std::chrono::milliseconds deadline_{100};
};

lal::PluginDescriptor describe() {
  lal::PluginDescriptor d{"test_async", lal::ModuleKind::other, "0.0.1", "awaits, timers and cancellation"};
  d.input<lal::Percept>("percept")
      .optional_input<lal::ThoughtChunk>("thought_in")
      .output<lal::ThoughtChunk>("thought")
      .options<AsyncProbeOptions>();
  return d;
}

}  // namespace

LAL_PLUGIN(AsyncProbe, describe)
