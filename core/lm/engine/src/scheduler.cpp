// Continuous batching (scheduler.hpp): the scheduler thread, its batch state on the device, admission with the
// prefix cache, the decode step (CUDA graph per batch-size bucket), and per-sequence streaming.
#include "lal/lm/scheduler.hpp"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <future>
#include <list>
#include <map>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <thread>

#include "engine_impl.hpp"
#include "lal/lm/sampling.hpp"

namespace lal::lm {

namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr std::int64_t kMinPrefix = 4;  // shorter common prefixes are not worth a copy

struct Job {
  SequenceRequest request;
  std::uint64_t order = 0;
};

/// One occupied row of the batch (host side).
struct Row {
  std::shared_ptr<Job> job;
  std::unique_ptr<SequenceState> sequence;
  std::vector<std::int32_t> tokens;  // prompt + chosen tokens
  std::int64_t prompt_length = 0;
  int generated = 0;
  RowSamplingUse use;
  bool occupied() const { return job != nullptr; }
};

/// Keys/values of a token sequence seen before, per layer [kv_heads, length, head_dim].
struct PrefixEntry {
  std::vector<std::int32_t> ids;
  std::vector<torch::Tensor> keys, values;
  std::int64_t bytes = 0;
  std::uint64_t last_used = 0;
};

/// Which parts of the sampler act for a request with these settings (greedy rows run neutral settings).
RowSamplingUse use_of(const SamplingOptions& s) {
  const bool greedy = s.greedy || s.temperature <= 0.0f;
  RowSamplingUse use;
  use.penalty = s.repetition_penalty != 1.0f;
  use.sampled = !greedy;
  use.top_k = !greedy && s.top_k > 0;
  use.top_p = !greedy && s.top_p < 1.0f;
  use.min_p = !greedy && s.min_p > 0.0f;
  return use;
}

/// Steps ahead on a GPU unless LAL_SCHEDULER_AHEAD=off (to measure without).
bool steps_ahead_allowed(const torch::Device& device) {
  const char* v = std::getenv("LAL_SCHEDULER_AHEAD");
  return device.is_cuda() && !(v && std::strcmp(v, "off") == 0);
}

std::int64_t common_prefix(const std::vector<std::int32_t>& a, const std::vector<std::int32_t>& b) {
  const auto n = std::min(a.size(), b.size());
  std::size_t i = 0;
  while (i < n && a[i] == b[i]) ++i;
  return static_cast<std::int64_t>(i);
}

void finish(Job& job, SequenceOutput output, std::exception_ptr error) {
  if (!job.request.on_done) return;
  try {
    job.request.on_done(std::move(output), error);
  } catch (...) {  // a callback's failure must not take the scheduler down
  }
}

}  // namespace

struct Scheduler::Impl {
  Engine::Impl& engine;
  Transformer& model;
  const torch::Device device;
  const int max_rows;
  const std::int64_t prefix_budget;
  const std::chrono::microseconds window;

  mutable std::mutex mutex;
  std::condition_variable wake;
  bool stopping = false;
  std::vector<std::shared_ptr<Job>> queue;
  std::uint64_t next_order = 0;
  SchedulerStats stats;
  std::thread thread;

  // Scheduler-thread state.
  std::vector<Row> rows;
  std::int64_t capacity = 0;
  KVCache cache;
  torch::Tensor ids, positions;  // int64 [R, 1]: each row's current token and its rotary position
  torch::Tensor slot;            // int64 [R]: the current token's cache slot (= its column)
  torch::Tensor active;          // bool [R]
  torch::Tensor valid;           // bool [R, capacity]
  torch::Tensor history;         // int64 [R, capacity]: ids so far; unfilled columns repeat the first id
  torch::Tensor suppress;        // float32 [R, V]: -inf on stop tokens before min_new_tokens
  RowSampling sampling;
  std::map<int, detail::DecodeGraph> graphs;
  /// A decode step queued on the device whose tokens the host has not read yet: each row's job when it was queued
  /// (a row ended or re-admitted since then drops its token).
  struct Launched {
    std::int64_t n = 0, count = 0;
    std::vector<std::shared_ptr<Job>> jobs;
  };
  const bool ahead;
  detail::HostReader reader;
  std::deque<Launched> launched;
  std::list<PrefixEntry> prefixes;
  std::int64_t prefix_bytes = 0;
  std::uint64_t prefix_clock = 0;

  Impl(Engine::Impl& e, const SchedulerOptions& o)
      : engine(e),
        model(*e.model),
        device(e.model->device()),
        max_rows(o.max_batch > 0 ? o.max_batch : (device.is_cuda() ? 16 : 8)),
        prefix_budget(o.prefix_cache_bytes >= 0 ? o.prefix_cache_bytes
                                                : (device.is_cuda() ? (2ll << 30) : (256ll << 20))),
        window(static_cast<std::int64_t>(std::max(0.0, o.admission_window_ms) * 1000)),
        ahead(steps_ahead_allowed(device)),
        reader(device, 2) {
    rows.resize(static_cast<std::size_t>(max_rows));
  }

  // ---- state ---------------------------------------------------------------------------------------------------

  torch::TensorOptions opts(torch::ScalarType t) const { return torch::TensorOptions().dtype(t).device(device); }

  void allocate_rows() {
    const auto R = static_cast<std::int64_t>(max_rows);
    ids = torch::zeros({R, 1}, opts(torch::kLong));
    positions = torch::zeros({R, 1}, opts(torch::kLong));
    slot = torch::zeros({R}, opts(torch::kLong));
    active = torch::zeros({R}, opts(torch::kBool));
    suppress = torch::zeros({R, model.config().vocab_size}, opts(torch::kFloat32));
    sampling.greedy = torch::ones({R}, opts(torch::kBool));
    sampling.temperature = torch::ones({R}, opts(torch::kFloat32));
    sampling.top_k = torch::zeros({R}, opts(torch::kLong));
    sampling.top_p = torch::ones({R}, opts(torch::kFloat32));
    sampling.min_p = torch::zeros({R}, opts(torch::kFloat32));
    sampling.repetition_penalty = torch::ones({R}, opts(torch::kFloat32));
    sampling.seed = torch::zeros({R}, opts(torch::kLong));
  }

  /// Room for `needed` tokens in every row: a larger cache (rows and what they hold copied over), new graphs.
  void ensure_capacity(std::int64_t needed) {
    if (!ids.defined()) allocate_rows();
    if (needed <= capacity) return;
    std::int64_t cap = 256;
    while (cap < needed) cap *= 2;
    const auto R = static_cast<std::int64_t>(max_rows);
    graphs.clear();  // they point at the old buffers
    KVCache grown = KVCache::allocate(model.config(), R, cap, model.dtype(), device);
    auto grown_valid = torch::zeros({R, cap}, opts(torch::kBool));
    auto grown_history = torch::zeros({R, cap}, opts(torch::kLong));
    if (capacity > 0) {
      for (std::size_t l = 0; l < grown.keys.size(); ++l) {
        grown.keys[l].narrow(2, 0, capacity).copy_(cache.keys[l]);
        grown.values[l].narrow(2, 0, capacity).copy_(cache.values[l]);
      }
      grown_valid.narrow(1, 0, capacity).copy_(valid);
      grown_history.narrow(1, 0, capacity).copy_(history);
      // The new columns of the history repeat each row's first id (adds no repetition penalty of its own).
      grown_history.narrow(1, capacity, cap - capacity).copy_(history.narrow(1, 0, 1).expand({R, cap - capacity}));
    } else {
      grown_valid.narrow(1, 0, 1).fill_(true);  // idle rows attend to something
    }
    cache = std::move(grown);
    valid = grown_valid;
    history = grown_history;
    capacity = cap;
  }

  KVCache rows_cache(std::int64_t start, std::int64_t n) const {
    KVCache view;
    view.capacity = capacity;
    for (std::size_t l = 0; l < cache.keys.size(); ++l) {
      view.keys.push_back(cache.keys[l].narrow(0, start, n));
      view.values.push_back(cache.values[l].narrow(0, start, n));
    }
    return view;
  }

  /// Choose the next token of rows [start, start + n) from `logits` [n, V] and advance them (active rows only):
  /// slot and position + 1, the token into ids, history and valid. Returns [3, n] float64 (id, logprob, entropy).
  torch::Tensor choose_and_advance(const torch::Tensor& logits, std::int64_t start, std::int64_t n,
                                   const RowSamplingUse& use) {
    auto step = active.narrow(0, start, n).to(torch::kLong);
    auto sl = slot.narrow(0, start, n);
    sl.add_(step);
    auto choice =
        choose_tokens_rows(logits, engine.usable_vocab, sampling.rows(start, n), use, history.narrow(0, start, n), sl,
                           suppress.narrow(0, start, n), engine.model->fused_kernels());
    auto next = choice.ids.view({n, 1});
    auto column = sl.view({n, 1});
    history.narrow(0, start, n).scatter_(1, column, next);
    valid.narrow(0, start, n).scatter_(1, column, true);
    ids.narrow(0, start, n).copy_(next);
    positions.narrow(0, start, n).add_(step.view({n, 1}));
    return torch::stack(
        {choice.ids.to(torch::kFloat64), choice.logprob.to(torch::kFloat64), choice.entropy.to(torch::kFloat64)});
  }

  // ---- prefix cache --------------------------------------------------------------------------------------------

  /// Copy the longest kept prefix of `prompt` (at most prompt.size() - 1 tokens: one is left to prefill) into row
  /// `r`; returns its length (0: none).
  std::int64_t reuse_prefix(const std::vector<std::int32_t>& prompt, std::int64_t r) {
    PrefixEntry* best = nullptr;
    std::int64_t best_length = 0;
    for (auto& e : prefixes) {
      const auto m = std::min(common_prefix(e.ids, prompt), static_cast<std::int64_t>(prompt.size()) - 1);
      if (m > best_length) best = &e, best_length = m;
    }
    if (!best || best_length < kMinPrefix) return 0;
    best->last_used = ++prefix_clock;
    for (std::size_t l = 0; l < cache.keys.size(); ++l) {
      cache.keys[l][r].narrow(1, 0, best_length).copy_(best->keys[l].narrow(1, 0, best_length));
      cache.values[l][r].narrow(1, 0, best_length).copy_(best->values[l].narrow(1, 0, best_length));
    }
    return best_length;
  }

  /// Keep the keys/values of row `r`'s first `length` tokens (`tokens`), unless a kept entry already covers them.
  void keep_prefix(const std::vector<std::int32_t>& tokens, std::int64_t length, std::int64_t r) {
    if (prefix_budget <= 0 || length < kMinPrefix) return;
    std::vector<std::int32_t> key(tokens.begin(), tokens.begin() + length);
    for (auto& e : prefixes)
      if (common_prefix(e.ids, key) == length) {  // covered: this sequence is a prefix of a kept one
        e.last_used = ++prefix_clock;
        return;
      }
    const auto& c = model.config();
    const std::int64_t bytes = 2 * c.num_layers * c.num_kv_heads * length * c.head_dim *
                               static_cast<std::int64_t>(torch::elementSize(model.dtype()));
    if (bytes > prefix_budget) return;
    // Entries that are prefixes of this one are covered by it now.
    for (auto it = prefixes.begin(); it != prefixes.end();)
      if (common_prefix(it->ids, key) == static_cast<std::int64_t>(it->ids.size())) {
        prefix_bytes -= it->bytes;
        it = prefixes.erase(it);
      } else {
        ++it;
      }
    while (prefix_bytes + bytes > prefix_budget && !prefixes.empty()) {
      auto lru = std::min_element(prefixes.begin(), prefixes.end(),
                                  [](const PrefixEntry& a, const PrefixEntry& b) { return a.last_used < b.last_used; });
      prefix_bytes -= lru->bytes;
      prefixes.erase(lru);
    }
    PrefixEntry e;
    e.ids = std::move(key);
    for (std::size_t l = 0; l < cache.keys.size(); ++l) {
      e.keys.push_back(cache.keys[l][r].narrow(1, 0, length).clone());
      e.values.push_back(cache.values[l][r].narrow(1, 0, length).clone());
    }
    e.bytes = bytes;
    e.last_used = ++prefix_clock;
    prefix_bytes += bytes;
    prefixes.push_back(std::move(e));
  }

  // ---- rows ----------------------------------------------------------------------------------------------------

  /// Prefill `job` into a free row and stream its first token.
  void admit(const std::shared_ptr<Job>& job) {
    const auto& req = job->request;
    const auto& o = req.options;
    const auto n = static_cast<std::int64_t>(req.prompt.size());
    auto state = std::make_unique<SequenceState>(engine.tokenizer_or_null(), o, engine.stop_ids(o));
    if (o.max_new_tokens == 0 || (req.cancelled && req.cancelled())) {
      auto out = state->output();
      out.finish_reason = o.max_new_tokens == 0 ? "length" : "cancelled";
      finish(*job, std::move(out), nullptr);
      return;
    }
    ensure_capacity(n + o.max_new_tokens);
    std::int64_t r = 0;
    while (rows[static_cast<std::size_t>(r)].occupied()) ++r;
    Row& row = rows[static_cast<std::size_t>(r)];

    // The row's sampler (greedy rows neutral, see RowSampling) and stop-token suppression.
    const auto& s = o.sampling;
    const bool greedy = s.greedy || s.temperature <= 0.0f;
    row.use = use_of(s);
    sampling.greedy[r].fill_(greedy);
    sampling.temperature[r].fill_(greedy ? 1.0f : s.temperature);
    sampling.top_k[r].fill_(greedy ? 0 : s.top_k);
    sampling.top_p[r].fill_(greedy ? 1.0f : s.top_p);
    sampling.min_p[r].fill_(greedy ? 0.0f : s.min_p);
    sampling.repetition_penalty[r].fill_(s.repetition_penalty);
    sampling.seed[r].fill_(static_cast<std::int64_t>(s.seed));
    suppress[r].zero_();
    const auto stops = engine.stop_ids(o);
    if (o.min_new_tokens > 0 && !stops.empty())
      suppress[r].index_fill_(0, torch::tensor(std::vector<std::int64_t>(stops.begin(), stops.end())).to(device),
                              kNegInf);
    auto prompt = torch::tensor(std::vector<std::int64_t>(req.prompt.begin(), req.prompt.end()), torch::kLong);
    history[r].fill_(static_cast<std::int64_t>(req.prompt[0]));
    history[r].narrow(0, 0, n).copy_(prompt);
    valid[r].zero_();
    valid[r].narrow(0, 0, n).fill_(true);

    const auto reused = reuse_prefix(req.prompt, r);
    KVCache view = rows_cache(r, 1);
    view.length = reused;
    auto logits = model.forward(prompt.narrow(0, reused, n - reused).view({1, -1}).to(device),
                                torch::arange(reused, n, torch::kLong).view({1, -1}).to(device), {}, &view,
                                /*last_only=*/true);
    keep_prefix(req.prompt, n, r);
    slot[r].fill_(n - 1);
    positions[r].fill_(n - 1);
    active[r].fill_(true);
    auto first = choose_and_advance(logits.select(1, 0), r, 1, row.use).cpu();

    row.job = job;
    row.sequence = std::move(state);
    row.tokens = req.prompt;
    row.prompt_length = n;
    row.generated = 0;
    {
      std::lock_guard<std::mutex> lock(mutex);
      ++stats.requests;
      stats.prefill_tokens += n - reused;
      if (reused > 0) ++stats.prefix_hits, stats.reused_prefix_tokens += reused;
      stats.prefix_cache_bytes = prefix_bytes;
    }
    accept(r, first.accessor<double, 2>(), 0);
  }

  /// Token of row `r` (column `c` of a step's [3, n] output): stream it, end the row when it is done.
  void accept(std::int64_t r, const at::TensorAccessor<double, 2>& out, std::int64_t c) {
    Row& row = rows[static_cast<std::size_t>(r)];
    TokenStep ev{
        0, static_cast<std::int32_t>(out[0][c]), {}, static_cast<float>(out[1][c]), static_cast<float>(out[2][c])};
    row.tokens.push_back(ev.id);
    ++row.generated;
    bool done = row.sequence->accept(ev);
    const auto& o = row.job->request.options;
    if (o.min_new_tokens > 0 && row.generated == o.min_new_tokens) suppress[r].zero_();
    bool keep_going = true;
    if (row.job->request.on_token) {
      try {
        keep_going = row.job->request.on_token(ev);
      } catch (...) {
        end_row(r, std::current_exception());
        return;
      }
    }
    if (!keep_going) {
      row.sequence->stopped();
      done = true;
    }
    if (done) end_row(r, nullptr);
  }

  void end_row(std::int64_t r, std::exception_ptr error) {
    Row& row = rows[static_cast<std::size_t>(r)];
    if (!error) {  // keys/values exist for every token but the last chosen one
      try {
        keep_prefix(row.tokens, row.prompt_length + row.generated - 1, r);
      } catch (...) {
      }
    }
    auto job = std::move(row.job);
    auto out = row.sequence->output();
    row = Row{};
    active[r].fill_(false);
    slot[r].fill_(0);
    positions[r].fill_(0);
    valid[r].zero_();
    valid[r][0].fill_(true);
    finish(*job, std::move(out), error);
  }

  void cancel_rows() {
    for (std::int64_t r = 0; r < max_rows; ++r) {
      Row& row = rows[static_cast<std::size_t>(r)];
      if (row.occupied() && row.job->request.cancelled && row.job->request.cancelled()) {
        row.sequence->cancelled();
        end_row(r, nullptr);
      }
    }
  }

  // ---- the decode step -----------------------------------------------------------------------------------------

  bool graphs_used() const { return detail::DecodeGraph::supported(device) && !model.offloaded(); }

  /// One decode step over rows [0, n) with the sampler parts `use`: ids, logprobs, entropies [3, n] (float64).
  torch::Tensor run_step(std::int64_t n, const RowSamplingUse& use) {
    KVCache view = rows_cache(0, n);
    auto logits = model.decode_static(ids.narrow(0, 0, n), positions.narrow(0, 0, n), slot.narrow(0, 0, n),
                                      valid.narrow(0, 0, n), view);
    return choose_and_advance(logits.select(1, 0), 0, n, use);
  }

  /// The CUDA graph of the step over rows [0, n) with `use`, captured if it is not yet.
  detail::DecodeGraph& graph_for(std::int64_t n, const RowSamplingUse& use) {
    auto& graph = graphs[static_cast<int>(n) * 64 + use.key()];
    if (graph.captured()) return graph;
    // Capturing runs the step once for real; undo its advance so that the first replay takes this step.
    std::vector<torch::Tensor> saved = {ids.clone(), positions.clone(), slot.clone(), valid.clone(), history.clone()};
    graph.capture([&, n] { return run_step(n, use); }, device);
    ids.copy_(saved[0]);
    positions.copy_(saved[1]);
    slot.copy_(saved[2]);
    valid.copy_(saved[3]);
    history.copy_(saved[4]);
    std::lock_guard<std::mutex> lock(mutex);
    ++stats.graphs;
    return graph;
  }

  /// Queue one decode step over the occupied rows (their bucket) and the copy of its tokens to the host.
  void launch() {
    std::int64_t highest = -1;
    RowSamplingUse use;
    Launched step;
    for (std::int64_t r = 0; r < max_rows; ++r) {
      const Row& row = rows[static_cast<std::size_t>(r)];
      if (!row.occupied()) continue;
      highest = r;
      ++step.count;
      use.penalty |= row.use.penalty, use.sampled |= row.use.sampled, use.top_k |= row.use.top_k;
      use.top_p |= row.use.top_p, use.min_p |= row.use.min_p;
    }
    if (highest < 0) return;
    step.n = 1;  // the bucket: rows [0, n)
    while (step.n < highest + 1) step.n *= 2;
    step.n = std::min<std::int64_t>(step.n, max_rows);
    for (std::int64_t r = 0; r < step.n; ++r) step.jobs.push_back(rows[static_cast<std::size_t>(r)].job);
    reader.push(graphs_used() ? graph_for(step.n, use).replay() : run_step(step.n, use));
    launched.push_back(std::move(step));
  }

  /// Whether the step after the queued one may be queued before the host reads the queued one's tokens: reading
  /// them must not change what it computes (a row reaching min_new_tokens lifts its stop-token suppression) and
  /// should not end a row for certain (max_new_tokens: the extra step would only delay the next request).
  bool may_step_ahead() const {
    if (!ahead || launched.size() != 1) return false;
    for (const Row& row : rows) {
      if (!row.occupied()) continue;
      const auto& o = row.job->request.options;
      const int after = row.generated + static_cast<int>(launched.size());
      if ((o.min_new_tokens > 0 && after == o.min_new_tokens) || after >= o.max_new_tokens) return false;
    }
    return true;
  }

  /// One step's tokens to the host: the oldest queued step (queued now if none is), the next one queued first when
  /// it may be; then each row still running the job it ran then gets its token.
  void step() {
    if (launched.empty()) launch();
    if (launched.empty()) return;
    if (may_step_ahead()) {
      launch();
      std::lock_guard<std::mutex> lock(mutex);
      ++stats.steps_ahead;
    }
    Launched done = std::move(launched.front());
    launched.pop_front();
    auto host = reader.pop();
    auto a = host.accessor<double, 2>();
    {
      std::lock_guard<std::mutex> lock(mutex);
      ++stats.decode_steps;
      stats.decoded_tokens += done.count;
      stats.largest_batch = std::max(stats.largest_batch, done.count);
    }
    for (std::int64_t r = 0; r < done.n; ++r) {
      const Row& row = rows[static_cast<std::size_t>(r)];
      if (row.occupied() && row.job == done.jobs[static_cast<std::size_t>(r)]) accept(r, a, r);
    }
  }

  /// Before the first request (SchedulerOptions::warm_up_sampling): the cache, one prefill with and one after a
  /// cached prefix, and every bucket's graph for each sampler. A failure leaves things to first use.
  void warm_up(const SchedulerOptions& o) {
    if (o.warm_up_sampling.empty() || !graphs_used()) return;
    const auto t0 = std::chrono::steady_clock::now();
    try {
      ensure_capacity(std::max<std::int64_t>(256, warm_capacity(o.warm_up_capacity)));  // ensure_capacity's least
      const std::int64_t n = std::min<std::int64_t>(64, capacity / 2), more = std::min<std::int64_t>(16, n);
      KVCache view = rows_cache(0, 1);
      auto prompt = torch::zeros({1, n}, opts(torch::kLong));
      model.forward(prompt, torch::arange(n, opts(torch::kLong)).view({1, -1}), {}, &view, /*last_only=*/true);
      view.length = n;
      model.forward(prompt.narrow(1, 0, more), torch::arange(n, n + more, opts(torch::kLong)).view({1, -1}), {}, &view,
                    /*last_only=*/true);
      for (const auto& sampler : o.warm_up_sampling)
        for (std::int64_t b = 1;; b = std::min<std::int64_t>(2 * b, max_rows)) {
          graph_for(b, use_of(sampler));
          if (b == max_rows) break;
        }
      detail::synchronize(device);
    } catch (...) {
      graphs.clear();  // first use captures them, as without a warm-up
    }
    std::lock_guard<std::mutex> lock(mutex);
    stats.warm_up_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }

  /// Tokens per row for the warm-up's cache (SchedulerOptions::warm_up_capacity).
  std::int64_t warm_capacity(std::int64_t asked) const {
    if (asked >= 0) return asked;
    if (!model.fused_kernels()) return 256;  // LibTorch's attention runs over the whole cache
    const auto& c = model.config();
    std::int64_t tokens =
        c.max_position_embeddings > 0 ? std::min<std::int64_t>(2048, c.max_position_embeddings) : 2048;
    const std::int64_t per_token = 2 * c.num_layers * c.num_kv_heads * c.head_dim *
                                   static_cast<std::int64_t>(torch::elementSize(model.dtype())) * max_rows;
    const std::int64_t free_bytes = detail::cuda_free_bytes(device);
    while (tokens > 256 && free_bytes >= 0 && tokens * per_token > free_bytes / 4) tokens /= 2;
    return tokens;
  }

  void fail_rows(std::exception_ptr error) {
    for (std::int64_t r = 0; r < max_rows; ++r)
      if (rows[static_cast<std::size_t>(r)].occupied()) end_row(r, error);
    graphs.clear();
    launched.clear();
    reader = detail::HostReader(device, 2);
  }

  bool any_row() const {
    return std::any_of(rows.begin(), rows.end(), [](const Row& r) { return r.occupied(); });
  }
  bool free_row() const {
    return std::any_of(rows.begin(), rows.end(), [](const Row& r) { return !r.occupied(); });
  }

  /// The scheduler thread: the warm-up, then `ready`, then requests until stopping.
  void loop(const SchedulerOptions& o, std::promise<void>& ready) {
    c10::InferenceMode inference;
#if defined(LAL_LM_HAVE_CUDA)
    std::optional<c10::cuda::CUDAGuard> guard;
    if (device.is_cuda()) guard.emplace(device);
#endif
    warm_up(o);
    ready.set_value();
    for (;;) {
      std::vector<std::shared_ptr<Job>> admitted, dropped;
      {
        std::unique_lock<std::mutex> lock(mutex);
        wake.wait(lock, [&] { return stopping || any_row() || !queue.empty(); });
        if (stopping) break;
        if (!any_row() && window.count() > 0) {
          // Idle until now: requests of one moment (a turn's regions) are admitted together, by priority.
          wake.wait_for(lock, window, [&] { return stopping || static_cast<int>(queue.size()) >= max_rows; });
          if (stopping) break;
        }
        // Requests cancelled while waiting end here; the rest wait for a row, highest priority first.
        for (auto it = queue.begin(); it != queue.end();)
          if ((*it)->request.cancelled && (*it)->request.cancelled()) {
            dropped.push_back(*it);
            it = queue.erase(it);
          } else {
            ++it;
          }
        std::size_t free_rows = static_cast<std::size_t>(
            std::count_if(rows.begin(), rows.end(), [](const Row& r) { return !r.occupied(); }));
        while (free_rows > admitted.size() && !queue.empty()) {
          auto best = std::min_element(queue.begin(), queue.end(), [](const auto& a, const auto& b) {
            return a->request.priority != b->request.priority ? a->request.priority > b->request.priority
                                                              : a->order < b->order;
          });
          admitted.push_back(*best);
          queue.erase(best);
        }
      }
      for (auto& job : dropped) {
        SequenceOutput out;
        out.finish_reason = "cancelled";
        finish(*job, std::move(out), nullptr);
      }
      for (auto& job : admitted) {
        try {
          admit(job);
        } catch (...) {
          // The job may hold a row already (a failure after its prefill): end it there, else report it here.
          bool in_row = false;
          for (std::int64_t r = 0; r < max_rows; ++r)
            if (rows[static_cast<std::size_t>(r)].job == job) {
              end_row(r, std::current_exception());
              in_row = true;
            }
          if (!in_row) finish(*job, SequenceOutput{}, std::current_exception());
        }
      }
      try {
        cancel_rows();
        step();
      } catch (...) {
        fail_rows(std::current_exception());
      }
    }
    // Shutting down: nothing more runs.
    std::vector<std::shared_ptr<Job>> left;
    {
      std::lock_guard<std::mutex> lock(mutex);
      left.swap(queue);
    }
    auto unloaded = std::make_exception_ptr(std::runtime_error("generation ended: the model is being unloaded"));
    for (auto& job : left) finish(*job, SequenceOutput{}, unloaded);
    for (std::int64_t r = 0; r < max_rows; ++r)
      if (rows[static_cast<std::size_t>(r)].occupied()) {
        rows[static_cast<std::size_t>(r)].sequence->cancelled();
        auto job = std::move(rows[static_cast<std::size_t>(r)].job);
        finish(*job, rows[static_cast<std::size_t>(r)].sequence->output(), nullptr);
      }
  }
};

Scheduler::Scheduler(Engine& engine, SchedulerOptions options) : impl_(std::make_unique<Impl>(*engine.impl_, options)) {
  std::promise<void> ready;
  auto prepared = ready.get_future();
  impl_->thread = std::thread(
      [this, options = std::move(options), ready = std::move(ready)]() mutable { impl_->loop(options, ready); });
  prepared.wait();
}

Scheduler::~Scheduler() {
  {
    std::lock_guard<std::mutex> lock(impl_->mutex);
    impl_->stopping = true;
  }
  impl_->wake.notify_all();
  impl_->thread.join();
}

void Scheduler::submit(SequenceRequest request) {
  impl_->engine.check_request({request.prompt}, request.options);
  auto job = std::make_shared<Job>();
  job->request = std::move(request);
  {
    std::lock_guard<std::mutex> lock(impl_->mutex);
    if (impl_->stopping) throw std::runtime_error("generation refused: the model is being unloaded");
    job->order = impl_->next_order++;
    impl_->queue.push_back(std::move(job));
  }
  impl_->wake.notify_all();
}

SequenceOutput Scheduler::generate(SequenceRequest request) {
  struct Channel {
    std::mutex mutex;
    std::condition_variable ready;
    std::deque<TokenStep> events;
    bool done = false, stop = false;
    SequenceOutput output;
    std::exception_ptr error;
  };
  auto channel = std::make_shared<Channel>();
  auto on_token = std::move(request.on_token);
  request.on_token = [channel](const TokenStep& ev) {
    std::lock_guard<std::mutex> lock(channel->mutex);
    channel->events.push_back(ev);
    channel->ready.notify_all();
    return !channel->stop;
  };
  request.on_done = [channel](SequenceOutput out, std::exception_ptr error) {
    std::lock_guard<std::mutex> lock(channel->mutex);
    channel->output = std::move(out);
    channel->error = error;
    channel->done = true;
    channel->ready.notify_all();
  };
  submit(std::move(request));
  // The callback runs here, in order. When it asks to stop, the scheduler may have produced a token or two more:
  // the result ends at the token the callback saw last, as if it had stopped right there.
  std::size_t seen = 0;
  bool stopped = false;
  std::string text;
  std::unique_lock<std::mutex> lock(channel->mutex);
  for (;;) {
    channel->ready.wait(lock, [&] { return channel->done || !channel->events.empty(); });
    while (!channel->events.empty()) {
      TokenStep ev = std::move(channel->events.front());
      channel->events.pop_front();
      if (stopped) continue;
      lock.unlock();
      ++seen;
      text += ev.text;
      const bool more = !on_token || on_token(ev);
      lock.lock();
      if (!more) stopped = channel->stop = true;
    }
    if (channel->done && channel->events.empty()) break;
  }
  if (channel->error) std::rethrow_exception(channel->error);
  SequenceOutput out = std::move(channel->output);
  if (stopped) {
    out.ids.resize(std::min(out.ids.size(), seen));
    out.logprobs.resize(std::min(out.logprobs.size(), seen));
    out.entropies.resize(std::min(out.entropies.size(), seen));
    out.text = text;
    out.finish_reason = "stop";
  }
  return out;
}

SchedulerStats Scheduler::stats() const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->stats;
}

int Scheduler::max_batch() const { return impl_->max_rows; }

}  // namespace lal::lm
