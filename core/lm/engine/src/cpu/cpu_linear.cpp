// CPU linear layers over the matvec kernels, split over LibTorch's intra-op pool; thread setup (cpu_linear.hpp).
#include "cpu_linear.hpp"

#include <dlfcn.h>
#include <sys/mman.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <stdexcept>

#include "matvec.hpp"
#include "worker_pool.hpp"

namespace lal::lm::cpu {

namespace {

/// OpenBLAS' thread-count functions, looked up at run time: LibTorch's BLAS on Debian is whatever the libblas.so.3
/// alternative is (OpenBLAS with its own pthreads pool, or the reference BLAS, which has neither function).
struct BlasThreads {
  using Set = void (*)(int);
  using Get = int (*)();
  Set set = reinterpret_cast<Set>(::dlsym(RTLD_DEFAULT, "openblas_set_num_threads"));
  Get get = reinterpret_cast<Get>(::dlsym(RTLD_DEFAULT, "openblas_get_num_threads"));
  static const BlasThreads& instance() {
    static const BlasThreads b;
    return b;
  }
};

/// y [M, out] = x2d [M, in] · w^T (+ bias) with the kernels, weight rows split over the intra-op pool.
void run_rows(const WeightView& view, const torch::Tensor& x2d, const torch::Tensor& bias, torch::Tensor& y) {
  RECORD_FUNCTION("lal::cpu_matvec", std::vector<c10::IValue>());  // one operator in profiles
  const auto M = x2d.size(0);
  const float* xp = x2d.data_ptr<float>();
  const float* bp = bias.defined() ? bias.data_ptr<float>() : nullptr;
  float* yp = y.data_ptr<float>();
  const Isa isa = active_isa();
  parallel_matmul(view, xp, M, bp, yp, isa, intra_op_pool());
}

/// x as float32 [M, in] contiguous, and the output shape [..., out].
torch::Tensor rows_of(const torch::Tensor& x) { return x.reshape({-1, x.size(-1)}).to(torch::kFloat32).contiguous(); }
std::vector<std::int64_t> out_shape(const torch::Tensor& x, std::int64_t out) {
  auto s = x.sizes().vec();
  s.back() = out;
  return s;
}
torch::Tensor float_bias(const torch::Tensor& b) {
  return b.defined() ? b.to(torch::kFloat32).contiguous() : torch::Tensor();
}

}  // namespace

SingleThreadedBlas::SingleThreadedBlas() {
  const auto& b = BlasThreads::instance();
  if (b.set && b.get && (before_ = b.get()) != 1) b.set(1);
}

SingleThreadedBlas::~SingleThreadedBlas() {
  if (before_ > 1) BlasThreads::instance().set(before_);
}

bool applies(const torch::Tensor& x, const torch::Tensor& w) {
  if (!x.device().is_cpu() || !w.device().is_cpu() || w.dim() != 2 || !w.is_contiguous() || x.size(-1) != w.size(1))
    return false;
  if (w.scalar_type() == x.scalar_type())
    return w.scalar_type() == torch::kFloat32 || w.scalar_type() == torch::kBFloat16;
  return w.scalar_type() == torch::kBFloat16 && x.scalar_type() == torch::kFloat32 &&
         x.numel() / x.size(-1) <= kMaxKernelRows;
}

WeightView view_of(const torch::Tensor& w) {
  WeightView view;
  view.format = w.scalar_type() == torch::kFloat32 ? WeightFormat::F32 : WeightFormat::BF16;
  view.rows = w.size(0), view.cols = w.size(1), view.data = w.data_ptr();
  return view;
}

WeightView view_of(const QuantizedTensor& w) {
  if (!w.data.device().is_cpu() || !w.data.is_contiguous() || !w.scales.is_contiguous())
    throw std::invalid_argument("cpu::linear: the quantised weight must be contiguous CPU tensors");
  WeightView view;
  view.format = w.bits == 8 ? WeightFormat::Int8 : WeightFormat::Int4;
  view.rows = w.shape.at(0), view.cols = w.shape.at(1), view.group = w.group;
  view.data = w.data.data_ptr();
  view.scales = reinterpret_cast<const std::uint16_t*>(w.scales.data_ptr<at::Half>());
  return view;
}

#ifndef _OPENMP
#error "cpu_linear.cpp must be compiled with OpenMP: without it at::parallel_for runs on the calling thread only"
#endif

Pool intra_op_pool() {
  // One WorkerPool for the process, sized to LibTorch's intra-op thread count (made again if that changes).
  static std::mutex mutex;
  static std::shared_ptr<WorkerPool> shared;
  Pool pool;
  pool.threads = at::get_num_threads();
  if (pool.threads <= 1 || at::in_parallel_region()) return pool;
  std::shared_ptr<WorkerPool> workers;
  {
    std::lock_guard<std::mutex> lock(mutex);
    if (!shared || shared->threads() != pool.threads) shared = std::make_shared<WorkerPool>(pool.threads);
    workers = shared;
  }
  pool.parallel_for = [workers](std::int64_t n, std::int64_t grain,
                                const std::function<void(std::int64_t, std::int64_t)>& body) {
    workers->run(n, grain, body);
  };
  return pool;
}

torch::Tensor linear(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& bias) {
  const auto out = w.size(0), in = w.size(1);
  const auto M = x.numel() / in;
  if (M > kMaxKernelRows) {
    if (w.scalar_type() != torch::kFloat32 || at::get_num_threads() < 2 || at::in_parallel_region())
      return bias.defined() ? torch::linear(x, w, bias) : torch::linear(x, w);
    // float32 prefill: the decode steps' pool splits the product by weight rows into chunks claimed one at a time,
    // one single-threaded BLAS call each (one pool of threads instead of LibTorch's and OpenBLAS' competing for the
    // cores). WHY not at::parallel_for (OpenMP): its barrier waits for every thread, and on a busy machine a thread
    // without a time slice held each product (prompt 38 tok/s instead of 150-200 with another process running);
    // the pool's caller never waits for a worker that has not started.
    SingleThreadedBlas one_blas_thread;
    auto x2d = x.reshape({M, in}).contiguous();
    auto y = torch::empty({M, out}, x.options());
    const Pool pool = intra_op_pool();
    const std::int64_t chunk = std::max<std::int64_t>(64, (out / (4 * pool.threads) + 15) / 16 * 16);
    pool.run(out, chunk, [&](std::int64_t begin, std::int64_t end) {
      c10::InferenceMode inference;  // worker threads do not inherit the caller's mode
      auto part = w.narrow(0, begin, end - begin);
      auto r = bias.defined() ? torch::linear(x2d, part, bias.narrow(0, begin, end - begin)) : torch::linear(x2d, part);
      y.narrow(1, begin, end - begin).copy_(r);
    });
    return y.view(out_shape(x, out));
  }
  const WeightView view = view_of(w);
  auto x2d = rows_of(x);
  auto y = torch::empty({M, out}, x2d.options());
  run_rows(view, x2d, float_bias(bias), y);
  return y.view(out_shape(x, out)).to(x.scalar_type());
}

torch::Tensor linear(const torch::Tensor& x, const QuantizedTensor& w, const torch::Tensor& bias) {
  const auto out = w.shape.at(0), in = w.shape.at(1);
  if (x.size(-1) != in) throw std::invalid_argument("cpu::linear: input width does not match the weight");
  const WeightView view = view_of(w);
  auto x2d = rows_of(x);
  const auto M = x2d.size(0);
  auto y = torch::empty({M, out}, x2d.options());
  auto b = float_bias(bias);
  if (M <= kMaxKernelRows || (M < kBf16PrefillRows && integer_dot_applies(view) && int8_activations())) {
    // Decode steps, and short prefills with int8 activations: the integer dot products of the decode steps (the
    // same arithmetic for a prompt's tokens as for the generated ones: llama.cpp's Q8_0/Q4_0).
    run_rows(view, x2d, b, y);
    return y.view(out_shape(x, out)).to(x.scalar_type());
  }
  if (M >= kBf16PrefillRows) {
    // A long prefill: bfloat16 products (oneDNN over the intra-op pool, ~4x OpenBLAS's float32 here) of x and chunks
    // of kChunk weight rows dequantized and rounded to bfloat16 (the --dtype bfloat16 arithmetic; one chunk exists
    // at a time).
    constexpr std::int64_t kChunk = 1024;
    const auto xb = x2d.to(torch::kBFloat16);
    auto chunk = torch::empty({std::min(kChunk, out), in}, x2d.options());
    for (std::int64_t r0 = 0; r0 < out; r0 += kChunk) {
      const std::int64_t n = std::min(kChunk, out - r0);
      float* tile = chunk.data_ptr<float>();
      at::parallel_for(0, n, 64, [&](std::int64_t begin, std::int64_t end) {
        dequantize_rows(view, r0 + begin, r0 + end, tile + begin * in);
      });
      y.narrow(1, r0, n).copy_(torch::mm(xb, chunk.narrow(0, 0, n).to(torch::kBFloat16).t()));
    }
    if (b.defined()) y.add_(b);
    return y.view(out_shape(x, out)).to(x.scalar_type());
  }
  // Many rows (prefill): compute-bound, so BLAS multiplies dequantized tiles of kTile weight rows, each tile made
  // by the thread that uses it (it stays in cache; the layer never exists densely). Tiles split over the pool.
  constexpr std::int64_t kTile = 128;
  SingleThreadedBlas one_blas_thread;
  const std::int64_t tiles = (out + kTile - 1) / kTile;
  at::parallel_for(0, tiles, 1, [&](std::int64_t t0, std::int64_t t1) {
    c10::InferenceMode inference;  // worker threads do not inherit the caller's mode
    auto tile = torch::empty({kTile, in}, x2d.options());
    for (std::int64_t t = t0; t < t1; ++t) {
      const std::int64_t r0 = t * kTile, n = std::min(kTile, out - r0);
      dequantize_rows(view, r0, r0 + n, tile.data_ptr<float>());
      auto part = tile.narrow(0, 0, n);
      y.narrow(1, r0, n).copy_(b.defined() ? torch::addmm(b.narrow(0, r0, n), x2d, part.t())
                                           : torch::mm(x2d, part.t()));
    }
  });
  return y.view(out_shape(x, out)).to(x.scalar_type());
}

const std::vector<const QuantizedTensor*>*& QuantizedWeights::current() {
  thread_local const std::vector<const QuantizedTensor*>* list = nullptr;
  return list;
}

const QuantizedTensor* QuantizedWeights::find(const torch::Tensor& handle) {
  if (const auto* list = current())
    for (const QuantizedTensor* q : *list)
      if (q->data.is_same(handle)) return q;
  return nullptr;
}

torch::Tensor huge_page_copy(const torch::Tensor& t) {
  constexpr std::size_t kHuge = std::size_t{2} << 20, kPage = 4096;
  if (!t.defined() || !t.device().is_cpu() || t.nbytes() < kHuge) return t;
  const auto source = t.contiguous();
  const std::size_t length = (source.nbytes() + kPage - 1) / kPage * kPage;
  // Map length + 2 MiB, keep the 2 MiB-aligned `length` bytes inside, unmap the rest.
  void* raw = ::mmap(nullptr, length + kHuge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) return t;  // an optimisation only: the weight stays where it is
  const auto base = reinterpret_cast<std::uintptr_t>(raw);
  const std::uintptr_t start = (base + kHuge - 1) / kHuge * kHuge, end = start + length;
  if (start > base) ::munmap(raw, start - base);
  if (base + length + kHuge > end) ::munmap(reinterpret_cast<void*>(end), base + length + kHuge - end);
  void* data = reinterpret_cast<void*>(start);
  ::madvise(data, length, MADV_HUGEPAGE);  // refused where THP is off: 4 KiB pages then, nothing else changes
  std::memcpy(data, source.data_ptr(), source.nbytes());
  return torch::from_blob(
      data, source.sizes(), [length](void* p) { ::munmap(p, length); }, source.options());
}

std::string threads_report() {
  const auto& b = BlasThreads::instance();
  return std::to_string(at::get_num_threads()) + " intra-op threads, " +
         (b.get ? "OpenBLAS " + std::to_string(b.get()) + " threads (1 inside the engine's products)"
                : std::string("a BLAS without threads")) +
         ", kernels " + isa_name(active_isa());
}

}  // namespace lal::lm::cpu
