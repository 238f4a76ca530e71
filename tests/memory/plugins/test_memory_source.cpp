// A test plugin that only *declares* the topics memory tests publish on — episodes, finished turns, emotion — so
// that pipelines in which the test itself stands in for the hippocampus or the frontal lobe pass validation ("an
// input nobody produces"). The tests publish on these topics through the bus directly.
#include "lal/plugin.hpp"

namespace {
class MemorySource final : public lal::Module {
 public:
  void start(lal::Context&) override {}
};

lal::PluginDescriptor describe() {
  lal::PluginDescriptor d{"test_memory_source", lal::ModuleKind::other, "0.0.1",
                          "declares the episode/done/emotion topics that memory tests publish on"};
  d.output<lal::Episode>("episode").output<lal::TurnDone>("done").output<lal::EmotionState>("emotion");
  return d;
}
}  // namespace

LAL_PLUGIN(MemorySource, describe)
