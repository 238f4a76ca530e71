// A test region that may leave its stream open: for each percept it publishes one intuition chunk with the
// percept's text; "open:TEXT" publishes TEXT and never closes the stream, anything else is closed at once. With
// `conclude: true` it then ends the turn itself (TurnDone after `done_delay_ms`), as a concluding module would.
#include "lal/plugin.hpp"

namespace {

struct MumblerOptions {
  bool conclude = false;
  std::int64_t done_delay_ms = 20;
  static void declare(lal::Options<MumblerOptions>& o) {
    o.field("conclude", &MumblerOptions::conclude, "publish each turn's TurnDone");
    o.field("done_delay_ms", &MumblerOptions::done_delay_ms, "delay between the chunk and the TurnDone").min(0);
  }
};

class Mumbler final : public lal::Module {
 public:
  void start(lal::Context& ctx) override {
    ctx_ = &ctx;
    options_ = ctx.options<MumblerOptions>();
    ctx.on<lal::Percept>("percept", [this](const lal::Delivery<lal::Percept>& m) {
      const std::string open_prefix = "open:";
      const bool open = m->text.rfind(open_prefix, 0) == 0;
      lal::ThoughtChunk c;
      c.stage = lal::Stage::intuition;
      c.text = open ? m->text.substr(open_prefix.size()) : m->text;
      c.last = !open;
      c.origin = ctx_->module_id();
      ctx_->publish("thought", std::move(c), &m.header);
      if (!options_.conclude) return;
      ctx_->post_after(std::chrono::milliseconds(options_.done_delay_ms), [this, m] {
        lal::TurnDone d;
        d.user_text = m->text;
        ctx_->publish("done", std::move(d), &m.header);
      });
    });
  }

 private:
  lal::Context* ctx_ = nullptr;
  MumblerOptions options_;
};

lal::PluginDescriptor describe() {
  lal::PluginDescriptor d{"test_mumbler", lal::ModuleKind::other, "0.0.1", "streams that may never close, for tests"};
  d.input<lal::Percept>("percept")
      .output<lal::ThoughtChunk>("thought")
      .output<lal::TurnDone>("done")
      .options<MumblerOptions>();
  return d;
}

}  // namespace

LAL_PLUGIN(Mumbler, describe)
