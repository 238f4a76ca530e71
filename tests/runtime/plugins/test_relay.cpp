// A test plugin that relays between the two standard types (so tests can build cycles) and honours cancellation:
// a percept starting with "slow" works for up to 2 s in 10 ms steps, stopping early when its turn is cancelled.
#include <thread>

#include "lal/plugin.hpp"

namespace {
class Relay final : public lal::Module {
 public:
  void start(lal::Context& ctx) override {
    ctx_ = &ctx;
    ctx.on<lal::Percept>("percept", [this](const lal::Delivery<lal::Percept>& m) {
      std::string text = "relay: " + m->text;
      if (m->text.rfind("slow", 0) == 0) {
        // "slowscope ..." listens to the "analysis" scope only; plain "slow ..." to the whole turn.
        const bool scoped = m->text.rfind("slowscope", 0) == 0;
        const auto token = scoped ? ctx_->cancellation(m.header.turn, "analysis") : ctx_->cancellation(m.header.turn);
        int steps = 0;
        while (steps < 200 && !token.cancelled()) {
          std::this_thread::sleep_for(std::chrono::milliseconds(10));
          ++steps;
        }
        text = token.cancelled() ? "cancelled after " + std::to_string(steps) + " steps" : "finished";
        if (scoped) text += ctx_->cancellation(m.header.turn).cancelled() ? " (turn cancelled)" : " (turn goes on)";
      }
      lal::ThoughtChunk t;
      t.text = text;
      t.last = true;
      ctx_->publish("thought", std::move(t), &m.header);
    });
    ctx.on<lal::ThoughtChunk>("thought_in", [this](const lal::Delivery<lal::ThoughtChunk>& m) {
      ctx_->publish("percept_out", lal::Percept{m->text, "relay"}, &m.header);
    });
  }

 private:
  lal::Context* ctx_ = nullptr;
};

lal::PluginDescriptor describe() {
  lal::PluginDescriptor d{"test_relay", lal::ModuleKind::other, "0.0.1", "relays percepts and thoughts"};
  d.optional_input<lal::Percept>("percept")
      .optional_input<lal::ThoughtChunk>("thought_in")
      .output<lal::ThoughtChunk>("thought")
      .output<lal::Percept>("percept_out");
  return d;
}
}  // namespace

LAL_PLUGIN(Relay, describe)
