// Test support: load a pipeline from YAML text with the build tree's plugins, run it, capture its output.
#pragma once

#include <doctest/doctest.h>

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "lal/runtime/pipeline.hpp"
#include "lal/runtime/runtime.hpp"

namespace lal::test {

/// "file:line:col: message" lines of every error, for failure messages.
inline std::string dump_errors(const runtime::PipelineLoad& l) {
  std::string s;
  for (const auto& e : l.errors) s += e.str() + "\n";
  return s;
}

/// Runs a pipeline (plugin dirs given explicitly) and captures what output strategies write (RuntimeOptions::output
/// is the harness's; the other options are the caller's).
class PipelineHarness {
 public:
  PipelineHarness(const std::string& yaml, const std::vector<runtime::fs::path>& plugin_dirs,
                  const std::function<void(runtime::Runtime&)>& before_start = {}, runtime::RuntimeOptions o = {}) {
    auto l = runtime::load_pipeline_text(yaml, "test.yaml", plugin_dirs);
    REQUIRE_MESSAGE(l.ok(), dump_errors(l));
    o.output = [this](std::string_view s) {
      std::lock_guard<std::mutex> lk(mu_);
      output_ += s;
    };
    rt = std::make_unique<runtime::Runtime>(std::move(l.spec), o);
    if (before_start) before_start(*rt);
    rt->start();
  }
  std::string text() {
    std::lock_guard<std::mutex> lk(mu_);
    return output_;
  }
  std::unique_ptr<runtime::Runtime> rt;

 private:
  std::mutex mu_;
  std::string output_;
};

}  // namespace lal::test
