// A test stand-in for the hippocampus: answers every percept with a fixed Recollection (items, suggested strategy)
// after an optional delay, and reports each item as a stage=recall memory chunk, as the hippocampus does.
#include <thread>

#include "lal/plugin.hpp"

namespace {
class Recollector final : public lal::Module {
 public:
  void start(lal::Context& ctx) override {
    ctx_ = &ctx;
    items_ = ctx.config().get<std::vector<std::string>>("items");
    strategy_ = lal::parse_optional_enum<lal::Strategy>(ctx.config().get<std::string>("strategy"),
                                                        "test_recollector: strategy");
    strategy_confidence_ = ctx.config().get<double>("strategy_confidence");
    delay_ = std::chrono::milliseconds(ctx.config().get<std::int64_t>("delay_ms"));
    ctx.on<lal::Percept>("percept", [this](const lal::Delivery<lal::Percept>& m) {
      std::this_thread::sleep_for(delay_);
      lal::Recollection r;
      r.cue = m->text;
      for (std::size_t i = 0; i < items_.size(); ++i) {
        lal::MemoryItem item;
        item.id = std::to_string(i);
        item.tier = "long_term";
        item.kind = "semantic";
        item.text = items_[i];
        item.score = 1.0 - 0.1 * static_cast<double>(i);
        r.items.push_back(item);
        lal::ThoughtChunk t;
        t.stage = lal::Stage::recall;
        t.kind = lal::ChunkKind::memory;
        t.text = items_[i];
        t.last = true;
        t.origin = ctx_->module_id();
        ctx_->publish("thought", std::move(t), &m.header);
      }
      r.suggested_strategy = strategy_;
      r.strategy_confidence = strategy_confidence_;
      ctx_->publish("recollection", std::move(r), &m.header);
    });
  }

 private:
  lal::Context* ctx_ = nullptr;
  std::vector<std::string> items_;
  std::optional<lal::Strategy> strategy_;
  double strategy_confidence_ = 0.0;
  std::chrono::milliseconds delay_{0};
};

lal::PluginDescriptor describe() {
  lal::PluginDescriptor d{"test_recollector", lal::ModuleKind::other, "0.0.1", "fixed recollections for tests"};
  d.input<lal::Percept>("percept")
      .output<lal::Recollection>("recollection")
      .output<lal::ThoughtChunk>("thought")
      .config_key("items", lal::ConfigType::list, "[]", "memory texts")
      .config_string("strategy", "", "suggested strategy")
      .config_number("strategy_confidence", 0.0, "how sure")
      .config_int("delay_ms", 0, "delay before answering");
  return d;
}
}  // namespace

LAL_PLUGIN(Recollector, describe)
