// lal::lm — continuous batching: one scheduler thread owns an Engine's model and decodes every admitted sequence
// together, one token per sequence per step. Torch-free header (pimpl).
//
// ITERATION-LEVEL SCHEDULING. Requests wait in a queue ordered by priority (higher first), then arrival. At each
// step boundary (after a short admission window when the batch was empty) the scheduler admits waiting requests
// into free rows of the running batch (prefill of the new
// prompt, from the longest cached prefix), then runs one decode step over the occupied rows: each row at its own
// length, with its own sampler (temperature, top-k/p, min-p, repetition penalty, seed), stop tokens and strings,
// min_new_tokens, cancellation and callback. On a GPU each batch-size bucket (1, 2, 4, ... max_batch) has its own
// captured CUDA graph, prepared before the first request (SchedulerOptions::warm_up_sampling). On a GPU the next
// step is queued on the device before the host reads the current one's tokens (the host's work per token overlaps
// the device's), except when reading them changes what the next step computes (a row reaching min_new_tokens) or
// ends a row by length; a row that stops otherwise costs one step computed and dropped. A sequence's tokens do not
// depend on what else is in the batch (up to floating-point rounding): greedy output equals Engine::generate() of the
// prompt alone, and sampled output too (the noise is a function of seed and position only).
//
// PREFIX CACHE. After a prefill, and when a sequence ends, its keys/values are kept (bounded by
// prefix_cache_bytes, least recently used dropped first); a later request whose prompt starts with a kept sequence
// (the conversation so far: system prompt, history, a region's instructions) copies that prefix into its row and
// prefills only the rest.
//
// THREADING: the constructor returns once the scheduler thread has prepared (see above); it runs the warm-up there.
// submit() and generate() may be called from any thread. submit()'s callbacks run on the scheduler
// thread (keep them short; never call the scheduler from inside them); generate() runs its callback on the calling
// thread. The Engine must outlive the Scheduler and must not be used directly while the Scheduler exists.
// ERRORS: a bad request throws std::invalid_argument from submit()/generate(). An engine failure during a step
// fails the sequences then in the batch (on_done gets the exception; generate() rethrows it) and the scheduler
// goes on with the next requests.
#pragma once

#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <vector>

#include "lal/lm/engine.hpp"

namespace lal::lm {

struct SchedulerOptions {
  int max_batch = 0;                     ///< rows decoded together; 0: 16 on a GPU, 8 on the CPU
  std::int64_t prefix_cache_bytes = -1;  ///< kept prefix keys/values; -1: 2 GiB on a GPU, 256 MiB on the CPU; 0: off
  /// When the batch is empty, the first request waits this long for others arriving with it (the regions of one
  /// turn), so that they are admitted together in priority order: the high-priority intuition streams first even
  /// when a lower-priority region asked a moment earlier. 0: admit at once.
  double admission_window_ms = 5.0;
  /// Prepared before the constructor returns, on a GPU with CUDA graphs (elsewhere nothing is): the batch cache
  /// (warm_up_capacity tokens per row), one prefill (cuBLAS, attention kernels, the allocator) and the decode step's
  /// CUDA graph of every batch-size bucket for each of these samplers (greedy and sampled rows take different
  /// graphs; a sampler stands for every request with the same settings switched on: temperature, top-k, top-p,
  /// min-p, repetition penalty). Then no capture or first-use cost lands inside the first requests. Empty: nothing
  /// is prepared; graphs are captured when a step first needs them.
  std::vector<SamplingOptions> warm_up_sampling;
  /// Tokens per row the batch cache holds from the start when warming up; -1: automatic (with the fused attention
  /// kernel, which reads only the filled slots, 2048 or the model's max_position_embeddings if smaller, halved while
  /// the cache would take more than a quarter of the free device memory; with LibTorch's attention, which runs over
  /// the whole cache, the usual 256). The cache still grows when a request needs more (its graphs are then
  /// captured again).
  std::int64_t warm_up_capacity = -1;
};

struct SequenceRequest {
  std::vector<std::int32_t> prompt;  ///< token ids, non-empty
  GenerateOptions options;
  int priority = 0;                 ///< higher is admitted first; never preempts a running sequence
  std::function<bool()> cancelled;  ///< polled at every step boundary (scheduler thread); true ends it "cancelled"
  /// Called per token (TokenStep::sequence is 0); false stops the sequence ("stop").
  std::function<bool(const TokenStep&)> on_token;
  /// Called exactly once at the end: the output, or the failure (then `error` is set and `output` holds the tokens
  /// generated before it).
  std::function<void(SequenceOutput output, std::exception_ptr error)> on_done;
};

struct SchedulerStats {
  std::int64_t requests = 0, decode_steps = 0, decoded_tokens = 0, prefill_tokens = 0;
  std::int64_t prefix_hits = 0, reused_prefix_tokens = 0, prefix_cache_bytes = 0;
  std::int64_t largest_batch = 0;  ///< most sequences decoded in one step
  std::int64_t graphs = 0;         ///< CUDA graphs captured (warm-up included)
  double warm_up_seconds = 0;      ///< time the constructor spent preparing (SchedulerOptions::warm_up_sampling)
  std::int64_t steps_ahead = 0;    ///< decode steps queued on the device before the host read the previous one
};

class Scheduler {
 public:
  explicit Scheduler(Engine& engine, SchedulerOptions options = {});
  ~Scheduler();  ///< fails queued requests ("model unloaded"), ends the running ones, joins the thread
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  /// Queue a request; returns at once. Callbacks as described above. Throws std::invalid_argument for a bad request.
  void submit(SequenceRequest request);
  /// Queue a request and wait for it; `on_token` (request.on_token) runs on the calling thread, in order. Rethrows
  /// an engine failure.
  SequenceOutput generate(SequenceRequest request);

  SchedulerStats stats() const;
  int max_batch() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace lal::lm
