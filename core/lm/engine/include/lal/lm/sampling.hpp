// lal::lm — choosing the next token from logits, on the logits' device: transformers' logits processors and
// warpers, greedy argmax, and seeded sampling driven by counter-based noise.
//
// THIS HEADER INCLUDES LIBTORCH. It is the engine's (and its tests') view of token selection; applications use
// Engine::generate().
//
// Everything here is shape-static tensor code with no host round-trip: the engine captures "decode step + choose
// the token + advance the state" as one CUDA graph, and reads tokens back asynchronously.
//
// SAMPLING NOISE. Sampling is Gumbel-max: the chosen id is argmax(processed_scores + g) with g = -log(-log(u)),
// which draws from softmax(processed_scores) exactly. The uniforms u are a pure function of (seed, column, row,
// vocabulary index) — splitmix64 hashing, computed with 64-bit integer tensor arithmetic — not of a stateful
// generator. So a seed reproduces the same tokens on the CPU and on a GPU (up to floating-point differences in the
// logits themselves), in every decode mode, CUDA graphs included, and regardless of how many steps ran before.
// `column` is the token's index in the (left-padded) sequence, `row` its batch row: a prompt sampled alone and the
// same prompt in a batch get different (equally valid) noise.
//
// THREADING: pure functions of their arguments; no shared state.
#pragma once

#include <cstdint>

#include "lal/lm/detail/torch_compat.hpp"
#include "lal/lm/engine.hpp"

namespace lal::lm {

/// The splitmix64 finaliser (Steele, Lea, Flood 2014) with its usual golden-ratio increment: the scalar
/// definition that counter_uniform() computes with tensors.
std::uint64_t splitmix64(std::uint64_t x);

/// The uniform in (0, 1) that counter_uniform() gives at (seed, column, row, index) for a vocabulary of `vocab`:
/// u = ((splitmix64(splitmix64(seed + splitmix64(column)) + row * vocab + index) >> 11) + 0.5) / 2^53.
double counter_uniform_value(std::uint64_t seed, std::int64_t column, std::int64_t row, std::int64_t index,
                             std::int64_t vocab);

/// u[row, index] for every row < rows and index < vocab, float64 [rows, vocab] on seed's device. `seed` and
/// `column` are int64 [1] tensors on that device (the bits of the uint64 seed), so a captured graph reads the
/// values current at replay.
torch::Tensor counter_uniform(const torch::Tensor& seed, const torch::Tensor& column, std::int64_t rows,
                              std::int64_t vocab);

/// Logits processors and warpers in transformers' order: repetition penalty over `history` (int64 [B, S], ids
/// already in each sequence; repeats are harmless, so padding may repeat a real id), then, unless greedy,
/// temperature, top-k, top-p, min-p. `scores` float32 [B, V]; removed entries become -inf.
torch::Tensor process_scores(torch::Tensor scores, const SamplingOptions& s, const torch::Tensor& history);

/// The chosen ids (int64 [B]) with their log-probability and the entropy (nats) of the raw distribution (float32
/// [B]), before any processing.
struct TokenChoice {
  torch::Tensor ids, logprob, entropy;
};

/// Choose one token per row from `logits` (float32 [B, V]; entries at and past `usable_vocab` are never chosen):
/// greedy argmax when s.greedy or s.temperature <= 0, else a sample with the noise at (seed, column) described
/// above. Overwrites logits' padding entries with -inf. `suppress` (optional, float32 [1, V]) is added to the
/// processed scores only — 0 or -inf per token, e.g. stop tokens before min_new_tokens — so the reported
/// log-probability and entropy stay those of the raw distribution. `fused_kernels`: on CUDA, the statistics and
/// the plain argmax by the token-statistics kernel (the engine passes Transformer::fused_kernels()).
TokenChoice choose_tokens(const torch::Tensor& logits, std::int64_t usable_vocab, const SamplingOptions& s,
                          const torch::Tensor& history, const torch::Tensor& seed, const torch::Tensor& column,
                          const torch::Tensor& suppress = {}, bool fused_kernels = false);

/// Per-row sampling settings as device tensors, one entry per batch row: the scheduler's batch, where every
/// sequence keeps its own sampler. A greedy row holds neutral values (temperature 1, top_k 0, top_p 1, min_p 0),
/// so that the steps it shares with sampled rows leave its scores unchanged.
struct RowSampling {
  torch::Tensor greedy;              ///< bool [B]
  torch::Tensor temperature;         ///< float32 [B]
  torch::Tensor top_k;               ///< int64 [B], 0 = off
  torch::Tensor top_p;               ///< float32 [B], 1 = off
  torch::Tensor min_p;               ///< float32 [B], 0 = off
  torch::Tensor repetition_penalty;  ///< float32 [B], 1 = off
  torch::Tensor seed;                ///< int64 [B]: the bits of each row's uint64 seed
  /// Rows [start, start + n), as views.
  RowSampling rows(std::int64_t start, std::int64_t n) const;
};

/// Which processing steps some row of a batch needs; a step no row needs is skipped (and a captured graph bakes
/// the set in, see key()).
struct RowSamplingUse {
  bool penalty = false, sampled = false, top_k = false, top_p = false, min_p = false;
  int key() const { return penalty | sampled << 1 | top_k << 2 | top_p << 3 | min_p << 4; }
};

/// counter_uniform() for one row per sequence, each with its own seed and column (int64 [B]): u[b, i] is the
/// uniform at (seed[b], column[b], row 0, i), so a sequence in the scheduler's batch draws the same noise as when it
/// is generated alone.
torch::Tensor counter_uniform_rows(const torch::Tensor& seed, const torch::Tensor& column, std::int64_t vocab);

/// choose_tokens() with per-row settings: each row processed as process_scores() does with its own options, then
/// argmax (greedy rows) or Gumbel-max with counter_uniform_rows() noise at `column` [B]. `suppress` (optional) is
/// float32 [B, V].
TokenChoice choose_tokens_rows(const torch::Tensor& logits, std::int64_t usable_vocab, const RowSampling& sampling,
                               const RowSamplingUse& use, const torch::Tensor& history, const torch::Tensor& column,
                               const torch::Tensor& suppress = {}, bool fused_kernels = false);

}  // namespace lal::lm
