// The continuous-batching scheduler (lal/lm/scheduler.hpp) against Engine::generate() of each prompt alone, on the
// tiny models: concurrent requests (from many threads, more than the batch holds) give the same greedy ids, sampled
// ids with per-sequence samplers, min_new_tokens and stop tokens per sequence; the prefix cache reuses shared
// prefixes without changing the output; callbacks stop, cancellation cancels, priority orders admission.
// LAL_LM_TEST_DEVICE=cuda runs the same checks on a GPU (with a CUDA graph per batch-size bucket).
#include <atomic>
#include <cstdlib>
#include <mutex>
#include <thread>

#include "lal/lm/engine.hpp"
#include "lal/lm/scheduler.hpp"

#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

using namespace lal::lm;

namespace {

const char* kModels[] = {"qwen2_tied_gqa", "phi3_partial_rotary", "neox_parallel"};

std::unique_ptr<Engine> engine_for(const std::string& name, const std::string& kernels = "auto") {
  const char* root = std::getenv("LAL_LM_TINY_MODELS");
  REQUIRE_MESSAGE(root, "set LAL_LM_TINY_MODELS (ctest does; the lm.make_tiny_models test writes them)");
  const char* device = std::getenv("LAL_LM_TEST_DEVICE");
  ModelOptions o;
  o.model_path = std::string(root) + "/" + name;
  o.device = device && *device ? device : "cpu";
  o.dtype = "float32";
  o.kernels = kernels;
  return Engine::load(o);
}

SchedulerOptions scheduling(int max_batch, std::int64_t prefix_cache_bytes, double admission_window_ms = 5.0) {
  SchedulerOptions o;
  o.max_batch = max_batch;
  o.prefix_cache_bytes = prefix_cache_bytes;
  o.admission_window_ms = admission_window_ms;
  return o;
}

bool on_gpu() {
  const char* device = std::getenv("LAL_LM_TEST_DEVICE");
  return device && std::string(device).rfind("cuda", 0) == 0;
}

/// Prompts sharing a 10-token prefix (a conversation), then different tails of different lengths.
std::vector<std::vector<std::int32_t>> prompts_for(std::int64_t vocab, int count) {
  std::vector<std::vector<std::int32_t>> out;
  std::uint32_t x = 99;
  auto next = [&] {
    x = x * 1664525u + 1013904223u;
    return static_cast<std::int32_t>((x >> 8) % static_cast<std::uint32_t>(vocab - 3) + 3);
  };
  std::vector<std::int32_t> shared;
  for (int i = 0; i < 10; ++i) shared.push_back(next());
  for (int p = 0; p < count; ++p) {
    auto prompt = shared;
    for (int i = 0; i < 1 + (p * 3) % 7; ++i) prompt.push_back(next());
    out.push_back(prompt);
  }
  return out;
}

GenerateOptions options_for(int p) {
  GenerateOptions o;
  o.max_new_tokens = 8 + p % 5;
  o.stop_at_eos = p % 2 == 0;
  if (p % 3 == 1) {  // a sampler of its own
    o.sampling.temperature = 0.8f + 0.1f * static_cast<float>(p);
    o.sampling.top_k = 10 + p;
    o.sampling.top_p = 0.9f;
    o.sampling.seed = 1000 + static_cast<std::uint64_t>(p);
  } else {
    o.sampling.greedy = true;
  }
  if (p % 4 == 2) o.sampling.repetition_penalty = 1.3f;
  if (p % 5 == 3) o.min_new_tokens = 4;
  return o;
}

/// Submit every prompt from its own thread at once; the outputs in prompt order.
std::vector<SequenceOutput> concurrently(Scheduler& scheduler, const std::vector<std::vector<std::int32_t>>& prompts) {
  std::vector<SequenceOutput> out(prompts.size());
  std::vector<std::thread> threads;
  for (std::size_t p = 0; p < prompts.size(); ++p)
    threads.emplace_back([&, p] {
      SequenceRequest r;
      r.prompt = prompts[p];
      r.options = options_for(static_cast<int>(p));
      out[p] = scheduler.generate(std::move(r));
    });
  for (auto& t : threads) t.join();
  return out;
}

}  // namespace

TEST_CASE("concurrent requests decode together and give what each gives alone") {
  for (const char* name : kModels) {
    CAPTURE(name);
    auto engine = engine_for(name);
    const auto prompts = prompts_for(engine->usable_vocab(), 11);
    std::vector<SequenceOutput> alone;
    for (std::size_t p = 0; p < prompts.size(); ++p)
      alone.push_back(engine->generate({prompts[p]}, options_for(static_cast<int>(p)))[0]);
    for (std::int64_t prefix_cache : {std::int64_t{0}, std::int64_t{64} << 20}) {
      CAPTURE(prefix_cache);
      SchedulerStats stats;
      {
        Scheduler scheduler(*engine, scheduling(4, prefix_cache));  // fewer rows than requests: a queue
        for (int round = 0; round < 2; ++round) {  // the second round finds its prefixes (and graphs) kept
          auto together = concurrently(scheduler, prompts);
          for (std::size_t p = 0; p < prompts.size(); ++p) {
            CAPTURE(p);
            CHECK(together[p].ids == alone[p].ids);
            CHECK(together[p].finish_reason == alone[p].finish_reason);
            REQUIRE(together[p].logprobs.size() == alone[p].logprobs.size());
            for (std::size_t i = 0; i < alone[p].logprobs.size(); ++i)
              CHECK(std::abs(together[p].logprobs[i] - alone[p].logprobs[i]) <= 1e-4);
          }
        }
        stats = scheduler.stats();
      }
      CHECK(stats.requests == 22);
      CHECK(stats.largest_batch >= 2);  // really decoded together
      CHECK(stats.largest_batch <= 4);
      if (on_gpu()) {
        CHECK(stats.steps_ahead > 0);  // the next step was queued before the host read the current one
      } else {
        CHECK(stats.steps_ahead == 0);
      }
      if (prefix_cache > 0) {
        CHECK(stats.prefix_hits > 0);
        CHECK(stats.reused_prefix_tokens >= 10 * stats.prefix_hits / 2);
      } else {
        CHECK(stats.prefix_hits == 0);
      }
    }
  }
}

TEST_CASE("a callback that returns false stops its sequence only, cancellation cancels") {
  auto engine = engine_for("qwen2_tied_gqa");
  const auto prompts = prompts_for(engine->usable_vocab(), 3);
  Scheduler scheduler(*engine, scheduling(4, 0));
  GenerateOptions o;
  o.sampling.greedy = true;
  o.max_new_tokens = 20;
  o.stop_at_eos = false;
  const auto alone = engine->generate({prompts[0]}, o)[0];
  std::atomic<int> cancel{0};
  SequenceOutput stopped, cancelled, full;
  std::thread a([&] {
    SequenceRequest r{prompts[0], o, 0, {}, {}, {}};
    int seen = 0;
    r.on_token = [&](const TokenStep&) { return ++seen < 3; };
    stopped = scheduler.generate(std::move(r));
  });
  std::thread b([&] {
    // The scheduler polls `cancelled` once per step on its own thread (token callbacks run later, on this one), so
    // count its polls: the request is cancelled after a few steps whatever the machine's speed.
    SequenceRequest r{prompts[1], o, 0, {}, {}, {}};
    r.cancelled = [&] { return cancel.fetch_add(1) >= 3; };
    cancelled = scheduler.generate(std::move(r));
  });
  std::thread c([&] { full = scheduler.generate(SequenceRequest{prompts[0], o, 0, {}, {}, {}}); });
  a.join(), b.join(), c.join();
  CHECK(stopped.ids.size() == 3);
  CHECK(stopped.finish_reason == "stop");
  CHECK(std::vector<std::int32_t>(alone.ids.begin(), alone.ids.begin() + 3) == stopped.ids);
  CHECK(cancelled.finish_reason == "cancelled");
  CHECK(cancelled.ids.size() < 20);
  CHECK(full.ids == alone.ids);
  CHECK(full.finish_reason == "length");
}

TEST_CASE("priority orders admission, bad requests are refused at submit") {
  auto engine = engine_for("qwen2_tied_gqa");
  const auto prompts = prompts_for(engine->usable_vocab(), 3);
  Scheduler scheduler(*engine, scheduling(1, 0));  // one row: everything else waits
  GenerateOptions o;
  o.sampling.greedy = true;
  o.max_new_tokens = 6;
  o.stop_at_eos = false;
  std::mutex mutex;
  std::vector<std::string> order;
  std::atomic<int> done{0};
  auto request = [&](const std::vector<std::int32_t>& prompt, int priority, const std::string& tag) {
    SequenceRequest r{prompt, o, priority, {}, {}, {}};
    r.on_done = [&, tag](SequenceOutput, std::exception_ptr error) {
      std::lock_guard<std::mutex> lock(mutex);
      order.push_back(error ? tag + " failed" : tag);
      ++done;
    };
    return r;
  };
  // The first holds the row while the others queue; the high-priority one is admitted before the earlier low one.
  SequenceRequest first = request(prompts[0], 0, "first");
  first.options.max_new_tokens = 40;
  std::atomic<bool> running{false};
  first.on_token = [&](const TokenStep&) {
    running = true;
    return true;
  };
  scheduler.submit(std::move(first));
  while (!running) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  scheduler.submit(request(prompts[1], 0, "low"));
  scheduler.submit(request(prompts[2], 5, "high"));
  while (done < 3) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  CHECK(order == std::vector<std::string>{"first", "high", "low"});

  CHECK_THROWS_AS(scheduler.submit(request({}, 0, "empty")), std::invalid_argument);
  CHECK_THROWS_AS(scheduler.submit(request({1, 2, 1 << 30}, 0, "vocab")), std::invalid_argument);
  SequenceRequest bad = request(prompts[0], 0, "bad");
  bad.options.sampling.greedy = false;
  bad.options.sampling.top_p = 0.0f;
  CHECK_THROWS_AS(scheduler.submit(std::move(bad)), std::invalid_argument);
}

TEST_CASE("requests arriving together on an idle scheduler stream in priority order") {
  auto engine = engine_for("qwen2_tied_gqa");
  const auto prompts = prompts_for(engine->usable_vocab(), 3);
  Scheduler scheduler(*engine, scheduling(4, 0, 50.0));  // a wide window: the test must not race it
  GenerateOptions o;
  o.sampling.greedy = true;
  o.max_new_tokens = 4;
  o.stop_at_eos = false;
  std::mutex mutex;
  std::vector<std::string> first_tokens;
  std::atomic<int> done{0};
  for (auto [prompt, priority, tag] : {std::tuple{0, 0, "exploration"}, std::tuple{1, 9, "intuition"}}) {
    SequenceRequest r{prompts[static_cast<std::size_t>(prompt)], o, priority, {}, {}, {}};
    r.on_token = [&, tag, seen = false](const TokenStep&) mutable {
      std::lock_guard<std::mutex> lock(mutex);
      if (!seen) first_tokens.push_back(tag);
      seen = true;
      return true;
    };
    r.on_done = [&](SequenceOutput, std::exception_ptr) { ++done; };
    scheduler.submit(std::move(r));
  }
  while (done < 2) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  CHECK(first_tokens == std::vector<std::string>{"intuition", "exploration"});
}

TEST_CASE("a warmed-up scheduler has every bucket's graph before the first request and gives the same tokens") {
  for (const char* kernels : {"auto", "torch"}) {  // the fused attention (a large cache) and LibTorch's (256 slots)
    CAPTURE(kernels);
    auto engine = engine_for("qwen2_tied_gqa", kernels);
    const auto prompts = prompts_for(engine->usable_vocab(), 6);
    GenerateOptions greedy, nucleus;
    greedy.sampling.greedy = true;
    nucleus.sampling.temperature = 0.9f;
    nucleus.sampling.top_p = 0.8f;
    SchedulerOptions o = scheduling(4, 0);
    o.warm_up_sampling = {greedy.sampling, nucleus.sampling};
    std::vector<GenerateOptions> options;
    std::vector<std::vector<std::int32_t>> alone;
    for (std::size_t p = 0; p < prompts.size(); ++p) {
      // Other temperatures and top-p values than the warm-up's: the same graphs serve them.
      GenerateOptions g = p % 2 ? nucleus : greedy;
      g.max_new_tokens = 6 + static_cast<int>(p);
      g.sampling.temperature += 0.05f * static_cast<float>(p);
      g.sampling.top_p -= 0.02f * static_cast<float>(p);
      g.sampling.seed = 7 + p;
      options.push_back(g);
      alone.push_back(engine->generate({prompts[p]}, g)[0].ids);
    }
    for (std::int64_t capacity : {std::int64_t{-1}, std::int64_t{1000}}) {
      CAPTURE(capacity);
      o.warm_up_capacity = capacity;
      Scheduler scheduler(*engine, o);
      const auto prepared = scheduler.stats();
      if (on_gpu()) {
        CHECK(prepared.graphs == 6);  // buckets 1, 2, 4 for each sampler
        CHECK(prepared.warm_up_seconds > 0);
      } else {  // nothing to prepare without CUDA graphs
        CHECK(prepared.graphs == 0);
        CHECK(prepared.warm_up_seconds == 0);
      }
      CHECK(prepared.requests == 0);
      std::vector<SequenceOutput> together(prompts.size());
      std::vector<std::thread> threads;
      for (std::size_t p = 0; p < prompts.size(); ++p)
        threads.emplace_back([&, p] {
          together[p] = scheduler.generate(SequenceRequest{prompts[p], options[p], 0, {}, {}, {}});
        });
      for (auto& t : threads) t.join();
      for (std::size_t p = 0; p < prompts.size(); ++p) CHECK(together[p].ids == alone[p]);
      const auto after = scheduler.stats();
      CHECK(after.requests == 6);
      CHECK(after.graphs == prepared.graphs);  // no capture inside a request
    }
  }
}
