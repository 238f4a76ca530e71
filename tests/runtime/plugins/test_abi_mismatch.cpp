// Built with LAL_SDK_ABI_VERSION=99 (see CMakeLists): the host must refuse it before touching anything else.
#include "lal/plugin.hpp"

namespace {
class Nothing final : public lal::Module {
 public:
  void start(lal::Context&) override {}
};
lal::PluginDescriptor describe() {
  return lal::PluginDescriptor{"test_abi_mismatch", lal::ModuleKind::other, "0.0.1", "wrong ABI"};
}
}  // namespace

LAL_PLUGIN(Nothing, describe)
