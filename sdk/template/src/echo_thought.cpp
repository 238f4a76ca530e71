// echo_thought — a minimal brain region: for every percept it publishes one analysis thought.
// Copy this folder to start a plugin; everything a plugin needs is in <lal/plugin.hpp>.
#include <lal/plugin.hpp>

namespace {

// The options, declared once: the initialiser is the default; declare() gives each key its doc (and a range).
struct EchoOptions {
  std::string prefix = "heard: ";
  static void declare(lal::Options<EchoOptions>& o) {
    o.field("prefix", &EchoOptions::prefix, "text put before the echo");
  }
};

class EchoThought final : public lal::Module {
 public:
  // Called once, on the host's control thread: read config, subscribe to inputs. Keep `ctx`.
  void start(lal::Context& ctx) override {
    ctx_ = &ctx;
    prefix_ = ctx.options<EchoOptions>().prefix;
    // Handlers of one module never run concurrently, so this module needs no locks.
    ctx.on<lal::Percept>("percept", [this](const lal::Delivery<lal::Percept>& m) {
      lal::ThoughtChunk thought;
      thought.stage = lal::Stage::analysis;
      thought.text = prefix_ + m->text + " (" + std::to_string(m->text.size()) + " bytes)";
      thought.last = true;
      thought.origin = ctx_->module_id();
      ctx_->publish("thought", std::move(thought), &m.header);  // same turn and user; causal parent = m
    });
  }

 private:
  lal::Context* ctx_ = nullptr;
  std::string prefix_;
};

// The contract: read by `lal plugins`, `lal validate` and `lal graph` without running the module.
lal::PluginDescriptor describe() {
  lal::PluginDescriptor d{"echo_thought", lal::ModuleKind::brain_region, "1.0.0",
                          "Echoes each percept as an analysis thought"};
  d.input<lal::Percept>("percept", "what the user said")
      .output<lal::ThoughtChunk>("thought", "one analysis thought per percept")
      .options<EchoOptions>();
  return d;
}

}  // namespace

LAL_PLUGIN(EchoThought, describe)
