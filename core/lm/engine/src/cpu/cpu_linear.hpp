// lal::lm::cpu — linear layers on the CPU for decode-sized inputs, and the process's CPU thread setup.
// Internal to lal_lm (includes LibTorch through quantize.hpp); the kernels themselves are torch-free (matvec.hpp).
//
// WHY: a decode step multiplies each weight by one activation row per sequence. LibTorch 1.13 on the CPU sends
// float32 to the system BLAS (OpenBLAS: its own thread pool beside LibTorch's OpenMP pool) and bfloat16 to oneDNN;
// int8/int4 it cannot multiply at all (the engine used to dequantise a whole layer per step). Here every format is
// read once, in place, by one kernel, split over LibTorch's own intra-op threads: one pool, sized to the cores.
//
// THREADING: linear() may be called from any thread; decode-sized products and the float32 prefill run on the decode
// steps' pool (intra_op_pool(), worker_pool.hpp), the int8/int4 prefill tiles with at::parallel_for over LibTorch's
// intra-op pool (both serial when already inside a parallel region). Where it runs several BLAS calls at once
// (float32 prefill), OpenBLAS is single-threaded for that call and restored after it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "decode_layer.hpp"
#include "lal/lm/quantize.hpp"

namespace lal::lm::cpu {

/// Activation rows up to which linear() uses the kernels: decode steps of up to this many sequences. Longer inputs
/// (prefill) are compute-bound matrix products, left to LibTorch (BLAS / oneDNN), which block them for the caches.
constexpr std::int64_t kMaxKernelRows = 8;

/// Whether linear(x, w, b) below takes this product: x and w on the CPU, w a contiguous 2-D float32 or bfloat16
/// tensor of x's dtype, or a bfloat16 w with float32 x of up to kMaxKernelRows rows (float32 result: the fused decode
/// step's lm-head).
bool applies(const torch::Tensor& x, const torch::Tensor& w);
/// x [..., in] times w [out, in] transposed, plus bias [out] (optional), in x's dtype. Up to kMaxKernelRows rows:
/// the kernels (float32 accumulation); more: LibTorch's product (float32: split by weight rows over the decode
/// steps' pool, intra_op_pool(), each chunk one single-threaded BLAS call; bfloat16: oneDNN on LibTorch's pool).
torch::Tensor linear(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& bias);
/// Activation rows from which linear() with an int8/int4 weight multiplies in bfloat16 (a long prefill).
constexpr std::int64_t kBf16PrefillRows = 64;
/// The same with a group-wise int8/int4 weight (quantize.hpp) on the CPU. Up to kMaxKernelRows rows, and below
/// kBf16PrefillRows with int8 activations (LAL_CPU_INT_DOT, the default): the kernels' integer dot products (x
/// rounded to int8 per group; matvec.hpp). Below kBf16PrefillRows with LAL_CPU_INT_DOT=float: float32 BLAS products
/// with dequantized tiles of 128 weight rows, made and used by one thread of the pool each (the weight is never dense
/// as a whole). More: bfloat16
/// products (oneDNN) with chunks of 1024 weight rows dequantized and rounded to bfloat16, x rounded to bfloat16:
/// --dtype bfloat16's arithmetic (float32 accumulation, bfloat16 result), ~4x faster than float32 on AVX-512.
torch::Tensor linear(const torch::Tensor& x, const QuantizedTensor& w, const torch::Tensor& bias);

/// OpenBLAS single-threaded for the object's lifetime, restored afterwards (nests; nothing without OpenBLAS), so that
/// other users of LibTorch in the process (the trainer) keep OpenBLAS' own parallelism. WHY: around the engine's CPU
/// forward. OpenBLAS' threads spin after each call; beside LibTorch's OpenMP threads and the decode steps' pool on
/// the same cores they slowed everything that ran next (an int8 128-token prompt 220-350 tok/s with OpenBLAS on two
/// threads, 520-596 on one; its products run their own threads) and parallel BLAS calls must not each spawn more.
class SingleThreadedBlas {
 public:
  SingleThreadedBlas();
  ~SingleThreadedBlas();
  SingleThreadedBlas(const SingleThreadedBlas&) = delete;
  SingleThreadedBlas& operator=(const SingleThreadedBlas&) = delete;

 private:
  int before_ = 0;
};

/// The quantized weights of the layer running on this thread, for linear() calls that meet their handles (the
/// int8/uint8 data tensor standing in a layer's weight field, Transformer::layer_for_use on the CPU). Set around one
/// layer's forward; nests (restores the previous list).
class QuantizedWeights {
 public:
  template <class FieldAndWeight>
  explicit QuantizedWeights(const std::vector<FieldAndWeight>& weights) : previous_(current()) {
    for (const auto& fw : weights) list_.push_back(&fw.second);
    current() = &list_;
  }
  ~QuantizedWeights() { current() = previous_; }
  QuantizedWeights(const QuantizedWeights&) = delete;
  QuantizedWeights& operator=(const QuantizedWeights&) = delete;
  /// The weight whose data tensor is `handle`, or null.
  static const QuantizedTensor* find(const torch::Tensor& handle);

 private:
  static const std::vector<const QuantizedTensor*>*& current();
  std::vector<const QuantizedTensor*> list_;
  const std::vector<const QuantizedTensor*>* previous_;
};

/// The kernels' view of a dense 2-D float32/bfloat16 CPU tensor (contiguous), or of a group-wise quantized weight.
WeightView view_of(const torch::Tensor& w);
WeightView view_of(const QuantizedTensor& w);
/// The decode steps' pool (worker_pool.hpp) as decode_layer.hpp's Pool, with LibTorch's intra-op thread count
/// (OMP_NUM_THREADS, else one per core); serial with one thread or inside a LibTorch parallel region.
Pool intra_op_pool();

/// A copy of the CPU tensor `t` in its own anonymous mapping whose 2 MiB-aligned part is offered to transparent huge
/// pages (madvise MADV_HUGEPAGE; THP "always" or "madvise"), or `t` itself when smaller than 2 MiB, not on the CPU,
/// or when the mapping fails. WHY: a decode step streams every weight once; with 4 KiB pages each page is a TLB miss
/// (nested paging on a VM), and the kernels' float32 step on the 2-core EPYC VM ran ~25% faster from 2 MiB pages
/// (a weight-sized microbenchmark: 39 -> 31 ms). Called once per weight at load (Transformer::load on the CPU).
torch::Tensor huge_page_copy(const torch::Tensor& t);

/// "2 intra-op threads, OpenBLAS 2 threads (1 inside the engine's products), kernels avx512": for the log and the
/// benchmark report.
std::string threads_report();

}  // namespace lal::lm::cpu
