// A plugin whose handler throws on every message whose text contains "boom" — to test failure isolation.
#include <stdexcept>

#include "lal/plugin.hpp"

namespace {
class Thrower final : public lal::Module {
 public:
  void start(lal::Context& ctx) override {
    ctx_ = &ctx;
    ctx.on<lal::Percept>("percept", [this](const lal::Delivery<lal::Percept>& m) {
      if (m->text.find("boom") != std::string::npos) throw std::runtime_error("kaboom on '" + m->text + "'");
      lal::ThoughtChunk t;
      t.stage = lal::Stage::analysis;
      t.text = "survived: " + m->text;
      t.last = true;
      ctx_->publish("thought", std::move(t), &m.header);
    });
  }

 private:
  lal::Context* ctx_ = nullptr;
};

lal::PluginDescriptor describe() {
  lal::PluginDescriptor d{"test_thrower", lal::ModuleKind::other, "0.0.1", "throws on 'boom'"};
  d.input<lal::Percept>("percept").output<lal::ThoughtChunk>("thought");
  return d;
}
}  // namespace

LAL_PLUGIN(Thrower, describe)
