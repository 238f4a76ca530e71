// Token selection as device-side tensor code (see sampling.hpp): no host synchronisation, shape-static, so that the
// engine can capture it in the decode step's CUDA graph.
#include "lal/lm/sampling.hpp"

#include <ATen/Parallel.h>
#if LAL_LM_HAVE_KERNELS
#include <c10/cuda/CUDAStream.h>

#include "cuda/kernels.hpp"
#endif

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <string>
#include <vector>

#include "cpu/cpu_linear.hpp"  // the decode steps' thread pool

namespace lal::lm {

namespace {

constexpr std::uint64_t kGolden = 0x9e3779b97f4a7c15ull, kMix1 = 0xbf58476d1ce4e5b9ull, kMix2 = 0x94d049bb133111ebull;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// int64 tensors hold uint64 bit patterns: + and * wrap modulo 2^64 on every backend, as unsigned arithmetic does;
// only the right shift needs care (it is arithmetic on int64), hence the mask.
std::int64_t bits(std::uint64_t v) { return static_cast<std::int64_t>(v); }
torch::Tensor logical_shift_right(const torch::Tensor& z, int k) {
  return at::bitwise_right_shift(z, k) & bits((std::uint64_t{1} << (64 - k)) - 1);
}
torch::Tensor mix(torch::Tensor z) {
  z = z + bits(kGolden);
  z = (z ^ logical_shift_right(z, 30)) * bits(kMix1);
  z = (z ^ logical_shift_right(z, 27)) * bits(kMix2);
  return z ^ logical_shift_right(z, 31);
}

/// The raw distribution's statistics per row of float32 CPU logits [B, V] in one parallel pass over V (LibTorch's
/// log_softmax, exp, entropy and argmax are a pass each, with a [B, V] temporary each): log normaliser
/// max + log(sum exp(x - max)), entropy, and the first argmax of logits + suppress ([1, V] or [B, V], optional).
/// Each row is cut into a fixed number of chunks combined in order, so results do not depend on the thread count.
struct RawStats {
  std::vector<double> log_z, entropy;
  std::vector<std::int64_t> argmax;
};

bool cpu_stats_apply(const torch::Tensor& logits) {
  return logits.device().is_cpu() && logits.scalar_type() == torch::kFloat32 && logits.dim() == 2 &&
         logits.is_contiguous();
}

RawStats raw_stats(const torch::Tensor& logits, const torch::Tensor& suppress) {
  RECORD_FUNCTION("lal::cpu_token_stats", std::vector<c10::IValue>());  // one operator in profiles
  constexpr std::int64_t kChunks = 8;
  const auto B = logits.size(0), V = logits.size(1);
  const float* x = logits.data_ptr<float>();
  torch::Tensor extra;
  if (suppress.defined()) extra = suppress.to(torch::kFloat32).expand({B, V}).contiguous();
  const float* add = extra.defined() ? extra.data_ptr<float>() : nullptr;
  struct Part {
    float max = -std::numeric_limits<float>::infinity();
    double z = 0, weighted = 0;  // sum exp(x - max), sum exp(x - max) * (x - max)
    float best = -std::numeric_limits<float>::infinity();
    std::int64_t best_at = -1;
  };
  std::vector<Part> parts(static_cast<std::size_t>(B * kChunks));
  const std::int64_t chunk = (V + kChunks - 1) / kChunks;
  cpu::intra_op_pool().run(B * kChunks, 1, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t t = begin; t < end; ++t) {
      const std::int64_t b = t / kChunks, c0 = (t % kChunks) * chunk, c1 = std::min(V, c0 + chunk);
      Part& p = parts[static_cast<std::size_t>(t)];
      const float* row = x + b * V;
      for (std::int64_t c = c0; c < c1; ++c) p.max = std::max(p.max, row[c]);
      for (std::int64_t c = c0; c < c1; ++c) {
        const float shifted = row[c] - p.max;
        const double e = std::exp(shifted);
        if (e > 0) p.z += e, p.weighted += e * shifted;  // exp(-inf) terms add nothing (not 0 * -inf)
        const float v = add ? row[c] + add[b * V + c] : row[c];
        if (v > p.best || (std::isnan(v) && !std::isnan(p.best)) || p.best_at < 0) p.best = v, p.best_at = c;
      }
    }
  });
  RawStats r;
  for (std::int64_t b = 0; b < B; ++b) {
    float top = -std::numeric_limits<float>::infinity();
    for (std::int64_t k = 0; k < kChunks; ++k)
      top = std::max(top, parts[static_cast<std::size_t>(b * kChunks + k)].max);
    double z = 0, weighted = 0;
    float best = 0;
    std::int64_t best_at = -1;
    for (std::int64_t k = 0; k < kChunks; ++k) {
      const Part& p = parts[static_cast<std::size_t>(b * kChunks + k)];
      if (p.best_at >= 0 && (best_at < 0 || p.best > best || (std::isnan(p.best) && !std::isnan(best))))
        best = p.best, best_at = p.best_at;
      if (p.z == 0) continue;
      const double shift = static_cast<double>(p.max) - top, scale = std::exp(shift);
      z += p.z * scale;
      weighted += scale * (p.weighted + p.z * shift);
    }
    r.log_z.push_back(static_cast<double>(top) + std::log(z));
    r.entropy.push_back(std::log(z) - weighted / z);
    r.argmax.push_back(best_at);
  }
  return r;
}

/// ids, their log-probabilities logits[b, id] - log_z[b], and the entropies, as choose_tokens returns them.
TokenChoice choice_from(const torch::Tensor& logits, const RawStats& stats, torch::Tensor ids) {
  const auto B = logits.size(0), V = logits.size(1);
  ids = ids.to(torch::kLong).contiguous();
  auto logprob = torch::empty({B}, logits.options()), entropy = torch::empty({B}, logits.options());
  const float* x = logits.data_ptr<float>();
  for (std::int64_t b = 0; b < B; ++b) {
    const auto id = ids.data_ptr<std::int64_t>()[b];
    logprob.data_ptr<float>()[b] = static_cast<float>(x[b * V + id] - stats.log_z[static_cast<std::size_t>(b)]);
    entropy.data_ptr<float>()[b] = static_cast<float>(stats.entropy[static_cast<std::size_t>(b)]);
  }
  return {ids, logprob, entropy};
}

torch::Tensor ids_tensor(const std::vector<std::int64_t>& ids) {
  return torch::tensor(ids, torch::TensorOptions().dtype(torch::kLong));
}

/// The raw distribution's statistics of CUDA logits by the token-statistics kernel (cuda/kernels.hpp): two kernels
/// instead of LibTorch's log_softmax, exp, entropy, argmax and gather. Also sets the columns past `usable` to -inf.
struct DeviceStats {
  torch::Tensor log_z, entropy, argmax, logprob;  // [B]; argmax/logprob: of logits + suppress
};

bool device_stats_apply(const torch::Tensor& logits, const torch::Tensor& suppress, bool fused_kernels) {
#if LAL_LM_HAVE_KERNELS
  if (!fused_kernels || !logits.is_cuda() || logits.scalar_type() != torch::kFloat32 || logits.dim() != 2 ||
      !logits.is_contiguous() || logits.size(0) > 65535 || logits.size(1) > 0x7fffffff)  // the kernels' grid
    return false;
  return !suppress.defined() || (suppress.is_cuda() && suppress.scalar_type() == torch::kFloat32 &&
                                 suppress.dim() == 2 && suppress.size(1) == logits.size(1) && suppress.stride(1) == 1 &&
                                 (suppress.size(0) == 1 || suppress.size(0) == logits.size(0)));
#else
  (void)logits, (void)suppress, (void)fused_kernels;
  return false;
#endif
}

DeviceStats device_stats(const torch::Tensor& logits, std::int64_t usable, const torch::Tensor& suppress) {
  DeviceStats st;
#if LAL_LM_HAVE_KERNELS
  const auto B = logits.size(0), V = logits.size(1);
  const auto opts = logits.options();
  st.log_z = torch::empty({B}, opts);
  st.entropy = torch::empty({B}, opts);
  st.logprob = torch::empty({B}, opts);
  st.argmax = torch::empty({B}, opts.dtype(torch::kLong));
  auto scratch = torch::empty({cuda::token_stats_scratch(B, V)}, opts);
  const std::int64_t suppress_stride = suppress.defined() && suppress.size(0) > 1 ? suppress.stride(0) : 0;
  cuda::token_stats(logits.data_ptr<float>(), B, V, std::min(usable, V),
                    suppress.defined() ? suppress.data_ptr<float>() : nullptr, suppress_stride,
                    st.log_z.data_ptr<float>(), st.entropy.data_ptr<float>(), st.argmax.data_ptr<std::int64_t>(),
                    st.logprob.data_ptr<float>(), scratch.data_ptr<float>(),
                    c10::cuda::getCurrentCUDAStream(logits.device().index()).stream());
#else
  (void)logits, (void)usable, (void)suppress;
#endif
  return st;
}

/// Gumbel-max: argmax(scores - log(-log(u))) is a draw from softmax(scores).
torch::Tensor gumbel_argmax(const torch::Tensor& processed, const torch::Tensor& uniform) {
  return (processed.to(torch::kFloat64) - torch::log(-torch::log(uniform))).argmax(-1);
}

/// Whether the sampled choice on CUDA uses the Gumbel kernel and one sort for top-k + top-p (with the other fused
/// kernels); LAL_CUDA_SAMPLER=off keeps the LibTorch ops for it (to measure the difference).
bool device_sampler_on() {
  static const bool on = [] {
    const char* v = std::getenv("LAL_CUDA_SAMPLER");
    return !(v && std::string(v) == "off");
  }();
  return on;
}

/// gumbel_argmax() with the counter noise by the Gumbel kernel (cuda/kernels.hpp: the same float64 operations) into
/// `ids` (int64 [B]) for the rows that are not greedy (greedy bool [B]; undefined: all); noise_per_row: the noise
/// of counter_uniform_rows(seed, column, V), else of counter_uniform(seed, column, B, V).
void device_gumbel(const torch::Tensor& processed, const torch::Tensor& seed, const torch::Tensor& column,
                   bool noise_per_row, const torch::Tensor& greedy, torch::Tensor& ids) {
#if LAL_LM_HAVE_KERNELS
  const auto B = processed.size(0), V = processed.size(1);
  auto scores = processed.contiguous();
  auto seeds = seed.contiguous(), columns = column.contiguous();
  auto scratch = torch::empty({cuda::gumbel_scratch(B, V)}, processed.options().dtype(torch::kFloat64));
  torch::Tensor flags = greedy.defined() ? greedy.contiguous() : torch::Tensor();
  cuda::gumbel_choose(scores.data_ptr<float>(), B, V, seeds.data_ptr<std::int64_t>(), columns.data_ptr<std::int64_t>(),
                      noise_per_row, flags.defined() ? flags.data_ptr<bool>() : nullptr, ids.data_ptr<std::int64_t>(),
                      scratch.data_ptr<double>(), c10::cuda::getCurrentCUDAStream(processed.device().index()).stream());
#else
  (void)processed, (void)seed, (void)column, (void)noise_per_row, (void)greedy, (void)ids;
  throw std::logic_error("device_gumbel without the CUDA kernels");
#endif
}

}  // namespace

std::uint64_t splitmix64(std::uint64_t x) {
  std::uint64_t z = x + kGolden;
  z = (z ^ (z >> 30)) * kMix1;
  z = (z ^ (z >> 27)) * kMix2;
  return z ^ (z >> 31);
}

double counter_uniform_value(std::uint64_t seed, std::int64_t column, std::int64_t row, std::int64_t index,
                             std::int64_t vocab) {
  const std::uint64_t stream = splitmix64(seed + splitmix64(static_cast<std::uint64_t>(column)));
  const std::uint64_t h = splitmix64(stream + static_cast<std::uint64_t>(row * vocab + index));
  return (static_cast<double>(h >> 11) + 0.5) * std::ldexp(1.0, -53);
}

torch::Tensor counter_uniform(const torch::Tensor& seed, const torch::Tensor& column, std::int64_t rows,
                              std::int64_t vocab) {
  auto stream = mix(seed + mix(column));  // [1]
  auto h = mix(torch::arange(rows * vocab, seed.options()).view({rows, vocab}) + stream);
  return (logical_shift_right(h, 11).to(torch::kFloat64) + 0.5) * std::ldexp(1.0, -53);
}

torch::Tensor process_scores(torch::Tensor scores, const SamplingOptions& s, const torch::Tensor& history) {
  if (s.repetition_penalty != 1.0f) {
    auto seen = scores.gather(1, history);
    seen = torch::where(seen < 0, seen * s.repetition_penalty, seen / s.repetition_penalty);
    scores = scores.scatter(1, history, seen);
  }
  if (s.greedy || s.temperature <= 0.0f) return scores;
  if (s.temperature != 1.0f) scores = scores / s.temperature;
  if (s.top_k > 0 && s.top_k < scores.size(1)) {
    auto kth = std::get<0>(scores.topk(s.top_k, -1)).narrow(1, s.top_k - 1, 1);
    scores = scores.masked_fill(scores < kth, kNegInf);
  }
  if (s.top_p < 1.0f) {
    auto sorted = scores.sort(-1, /*descending=*/false);
    auto cumulative = torch::softmax(std::get<0>(sorted), -1).cumsum(-1);
    auto remove = cumulative <= (1.0f - s.top_p);
    remove.narrow(1, remove.size(1) - 1, 1).fill_(false);  // keep at least the most likely token
    scores = scores.masked_fill(remove.scatter(1, std::get<1>(sorted), remove), kNegInf);
  }
  if (s.min_p > 0.0f) {
    auto probs = torch::softmax(scores, -1);
    auto threshold = probs.amax(-1, /*keepdim=*/true) * s.min_p;
    scores = scores.masked_fill(probs < threshold, kNegInf);
  }
  return scores;
}

TokenChoice choose_tokens(const torch::Tensor& logits, std::int64_t usable_vocab, const SamplingOptions& s,
                          const torch::Tensor& history, const torch::Tensor& seed, const torch::Tensor& column,
                          const torch::Tensor& suppress, bool fused_kernels) {
  const auto B = logits.size(0), V = logits.size(1);
  const bool greedy = s.greedy || s.temperature <= 0.0f;
  if (device_stats_apply(logits, suppress, fused_kernels)) {  // CUDA: the statistics (and plain argmax) in 2 kernels
    const bool plain = greedy && s.repetition_penalty == 1.0f;
    const auto st = device_stats(logits, usable_vocab, plain ? suppress : torch::Tensor());
    if (plain) return {st.argmax, st.logprob, st.entropy};
    auto processed = process_scores(logits, s, history);
    if (suppress.defined()) processed = processed + suppress;
    torch::Tensor ids;
    if (greedy) {
      ids = processed.argmax(-1);
    } else if (!device_sampler_on()) {
      ids = gumbel_argmax(processed, counter_uniform(seed, column, B, V));
    } else {
      ids = torch::empty({B}, logits.options().dtype(torch::kLong));
      device_gumbel(processed, seed, column, /*noise_per_row=*/false, {}, ids);
    }
    return {ids, logits.gather(1, ids.unsqueeze(1)).squeeze(1) - st.log_z, st.entropy};
  }
  if (usable_vocab < V) logits.narrow(1, usable_vocab, V - usable_vocab).fill_(kNegInf);
  if (cpu_stats_apply(logits)) {  // CPU: one pass for the raw distribution (and the argmax when nothing else acts)
    const bool plain = greedy && s.repetition_penalty == 1.0f;
    const auto stats = raw_stats(logits, plain ? suppress : torch::Tensor());
    if (plain) return choice_from(logits, stats, ids_tensor(stats.argmax));
    auto processed = process_scores(logits, s, history);
    if (suppress.defined()) processed = processed + suppress;
    if (greedy) return choice_from(logits, stats, processed.argmax(-1));
    return choice_from(
        logits, stats,
        (processed.to(torch::kFloat64) - torch::log(-torch::log(counter_uniform(seed, column, B, V)))).argmax(-1));
  }
  auto logp = torch::log_softmax(logits, -1);
  auto probs = logp.exp();
  auto entropy = -(probs * logp.masked_fill(probs == 0, 0)).sum(-1);
  auto processed = process_scores(logits, s, history);
  if (suppress.defined()) processed = processed + suppress;
  torch::Tensor ids;
  if (s.greedy || s.temperature <= 0.0f) {
    ids = processed.argmax(-1);
  } else {  // Gumbel-max: argmax(scores - log(-log(u))) is a draw from softmax(scores)
    ids = (processed.to(torch::kFloat64) - torch::log(-torch::log(counter_uniform(seed, column, B, V)))).argmax(-1);
  }
  return {ids, logp.gather(1, ids.unsqueeze(1)).squeeze(1), entropy};
}

RowSampling RowSampling::rows(std::int64_t start, std::int64_t n) const {
  auto cut = [&](const torch::Tensor& t) { return t.narrow(0, start, n); };
  return {cut(greedy), cut(temperature), cut(top_k), cut(top_p), cut(min_p), cut(repetition_penalty), cut(seed)};
}

torch::Tensor counter_uniform_rows(const torch::Tensor& seed, const torch::Tensor& column, std::int64_t vocab) {
  auto stream = mix(seed + mix(column)).view({-1, 1});  // [B, 1]
  auto h = mix(torch::arange(vocab, seed.options()).view({1, vocab}) + stream);
  return (logical_shift_right(h, 11).to(torch::kFloat64) + 0.5) * std::ldexp(1.0, -53);
}

namespace {

/// `one_sort`: top-k and top-p together take one descending sort instead of one each (the top-p pass needs the
/// top-k-masked scores in ascending order: the masked descending values reversed, the same array, so the same
/// cumulative sums; only equal scores may sit in another order, which the two sorts do not fix either).
torch::Tensor process_scores_rows(torch::Tensor scores, const RowSampling& r, const RowSamplingUse& use,
                                  const torch::Tensor& history, bool one_sort) {
  if (use.penalty) {
    auto penalty = r.repetition_penalty.view({-1, 1});
    auto seen = scores.gather(1, history);
    seen = torch::where(seen < 0, seen * penalty, seen / penalty);
    scores = scores.scatter(1, history, seen);
  }
  if (!use.sampled) return scores;
  scores = scores / r.temperature.view({-1, 1});
  const auto V = scores.size(1);
  if (one_sort && use.top_k && use.top_p) {
    auto k = torch::where(r.top_k > 0, r.top_k.clamp_max(V), torch::full_like(r.top_k, V));
    auto [values, order] = scores.sort(-1, /*descending=*/true);
    auto kth = values.gather(1, (k - 1).view({-1, 1}));
    scores = scores.masked_fill(scores < kth, kNegInf);
    auto ascending = values.masked_fill(values < kth, kNegInf).flip(-1);
    auto cumulative = torch::softmax(ascending, -1).cumsum(-1);
    auto remove = cumulative <= (1.0f - r.top_p).view({-1, 1});
    remove.narrow(1, V - 1, 1).fill_(false);  // keep at least the most likely token
    remove = remove & (r.top_p < 1.0f).view({-1, 1});
    scores = scores.masked_fill(remove.scatter(1, order.flip(-1), remove), kNegInf);
  } else if (use.top_k) {
    auto k = torch::where(r.top_k > 0, r.top_k.clamp_max(V), torch::full_like(r.top_k, V));
    auto kth = std::get<0>(scores.sort(-1, /*descending=*/true)).gather(1, (k - 1).view({-1, 1}));
    scores = scores.masked_fill(scores < kth, kNegInf);
  }
  if (use.top_p && !(one_sort && use.top_k)) {
    auto sorted = scores.sort(-1, /*descending=*/false);
    auto cumulative = torch::softmax(std::get<0>(sorted), -1).cumsum(-1);
    auto remove = cumulative <= (1.0f - r.top_p).view({-1, 1});
    remove.narrow(1, V - 1, 1).fill_(false);  // keep at least the most likely token
    remove = remove & (r.top_p < 1.0f).view({-1, 1});
    scores = scores.masked_fill(remove.scatter(1, std::get<1>(sorted), remove), kNegInf);
  }
  if (use.min_p) {
    auto probs = torch::softmax(scores, -1);
    auto threshold = probs.amax(-1, /*keepdim=*/true) * r.min_p.view({-1, 1});
    scores = scores.masked_fill(probs < threshold, kNegInf);
  }
  return scores;
}

}  // namespace

TokenChoice choose_tokens_rows(const torch::Tensor& logits, std::int64_t usable_vocab, const RowSampling& sampling,
                               const RowSamplingUse& use, const torch::Tensor& history, const torch::Tensor& column,
                               const torch::Tensor& suppress, bool fused_kernels) {
  const auto V = logits.size(1);
  const bool device = device_stats_apply(logits, suppress, fused_kernels);
  if (usable_vocab < V && !device) logits.narrow(1, usable_vocab, V - usable_vocab).fill_(kNegInf);
  const bool device_sampler = device && device_sampler_on();
  auto chosen = [&] {  // argmax of the processed scores, Gumbel-max for sampled rows
    auto processed = process_scores_rows(logits, sampling, use, history, /*one_sort=*/device_sampler);
    if (suppress.defined()) processed = processed + suppress;
    auto ids = processed.argmax(-1);
    if (use.sampled && device_sampler) {
      device_gumbel(processed, sampling.seed, column, /*noise_per_row=*/true, sampling.greedy, ids);
    } else if (use.sampled) {
      auto noisy =
          (processed.to(torch::kFloat64) - torch::log(-torch::log(counter_uniform_rows(sampling.seed, column, V))))
              .argmax(-1);
      ids = torch::where(sampling.greedy, ids, noisy);
    }
    return ids;
  };
  if (device) {  // CUDA: the statistics (and the argmax when nothing else acts) in 2 kernels
    const bool plain = !use.sampled && !use.penalty;
    const auto st = device_stats(logits, usable_vocab, plain ? suppress : torch::Tensor());
    if (plain) return {st.argmax, st.logprob, st.entropy};
    auto ids = chosen();
    return {ids, logits.gather(1, ids.unsqueeze(1)).squeeze(1) - st.log_z, st.entropy};
  }
  if (cpu_stats_apply(logits)) {  // CPU: one pass for the raw distribution (and the argmax when nothing else acts)
    const bool plain = !use.sampled && !use.penalty;
    const auto stats = raw_stats(logits, plain ? suppress : torch::Tensor());
    return choice_from(logits, stats, plain ? ids_tensor(stats.argmax) : chosen());
  }
  auto logp = torch::log_softmax(logits, -1);
  auto probs = logp.exp();
  auto entropy = -(probs * logp.masked_fill(probs == 0, 0)).sum(-1);
  auto ids = chosen();
  return {ids, logp.gather(1, ids.unsqueeze(1)).squeeze(1), entropy};
}

}  // namespace lal::lm
