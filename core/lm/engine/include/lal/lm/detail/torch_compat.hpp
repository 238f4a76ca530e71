// lal::lm::detail — every difference between the LibTorch versions we build against, in one place.
//
// Debian's LibTorch 1.13 (CPU) has no fused attention; LibTorch 2.x (the one inside a PyTorch wheel, with CUDA)
// has at::scaled_dot_product_attention. Include only from engine sources (this header includes LibTorch).
#pragma once

#include <torch/torch.h>
#include <torch/version.h>

#include <cstdint>
#include <cstdlib>
#include <limits>
#include <string>

#if defined(LAL_LM_HAVE_CUDA) && !defined(LAL_LM_DISABLE_CUDA_GRAPHS)
#define LAL_LM_CUDA_GRAPHS 1
#include <ATen/cuda/CUDAGraph.h>
#endif
#if defined(LAL_LM_HAVE_CUDA) && !defined(LAL_LM_DISABLE_ASYNC_READ)
#define LAL_LM_ASYNC_READ 1
#include <ATen/cuda/CUDAEvent.h>
#endif
#if defined(LAL_LM_HAVE_CUDA)
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

#include <deque>
#include <functional>
#include <memory>
#include <stdexcept>

#define LAL_TORCH_HAS_SDPA (TORCH_VERSION_MAJOR >= 2 && (TORCH_VERSION_MAJOR > 2 || TORCH_VERSION_MINOR >= 1))
// LibTorch >= 2.3 can switch its cuDNN attention backend off (at::Context::setSDPUseCuDNN).
#define LAL_TORCH_HAS_CUDNN_SDPA_SWITCH \
  (TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 3))

namespace lal::lm::detail {

/// Attention over q [B,H,T,D] and k/v [B,H,S,D] (heads already expanded). `mask` is bool [B,1,T,S] (true = may
/// attend) or undefined; `causal` (only with an undefined mask and T == S) applies the usual lower-triangular mask.
/// The softmax runs in float32, as transformers' eager attention does.
inline at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask,
                            bool causal, double scale) {
#if LAL_TORCH_HAS_SDPA
  if (q.is_cuda()) {
#if LAL_TORCH_HAS_CUDNN_SDPA_SWITCH
    // Inference (no gradient) keeps off cuDNN's attention, which LibTorch puts first on sm90 with a recent cuDNN:
    // it builds an execution plan for every new (batch, query length, key length), 55-70 ms and up to ~1 s each,
    // and every prefill of a chat turn has new lengths. Training's fixed shapes keep it. LAL_CUDA_SDPA_CUDNN=on
    // leaves LibTorch's choice everywhere (to measure one against the other).
    struct CudnnOff {
      bool restore = false;
      CudnnOff() {
        static const bool keep = [] {
          const char* v = std::getenv("LAL_CUDA_SDPA_CUDNN");
          return v && std::string(v) == "on";
        }();
        if (keep || at::GradMode::is_enabled() || !at::globalContext().userEnabledCuDNNSDP()) return;
        at::globalContext().setSDPUseCuDNN(false);
        restore = true;
      }
      ~CudnnOff() {
        if (restore) at::globalContext().setSDPUseCuDNN(true);
      }
    } cudnn_off;
#endif
    return at::scaled_dot_product_attention(q, k, v, mask.defined() ? c10::optional<at::Tensor>(mask) : c10::nullopt,
                                            0.0, causal && !mask.defined(), scale);
  }
#endif
  auto scores = at::matmul(q, k.transpose(-2, -1)).to(at::kFloat) * scale;
  if (mask.defined()) {
    scores = scores.masked_fill(mask.logical_not(), -std::numeric_limits<float>::infinity());
  } else if (causal) {
    const auto t = q.size(2), s = k.size(2);
    auto tri = at::ones({t, s}, at::TensorOptions().dtype(at::kBool).device(q.device())).tril(s - t);
    scores = scores.masked_fill(tri.logical_not(), -std::numeric_limits<float>::infinity());
  }
  return at::matmul(at::softmax(scores, -1).to(q.scalar_type()), v);
}

inline bool cuda_available() { return torch::cuda::is_available(); }

inline void synchronize(const at::Device& device) {
#if defined(LAL_LM_HAVE_CUDA)
  if (device.is_cuda()) torch::cuda::synchronize(device.index() < 0 ? -1 : device.index());
#else
  (void)device;
#endif
}

/// Peak bytes allocated by LibTorch on a CUDA device since the last reset (0 on CPU / CPU-only builds).
inline std::int64_t cuda_peak_allocated(const at::Device& device) {
#if defined(LAL_LM_HAVE_CUDA)
  if (device.is_cuda()) {
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device.index() < 0 ? 0 : device.index());
    return stats.allocated_bytes[0].peak;  // 0 = StatType::AGGREGATE
  }
#endif
  (void)device;
  return 0;
}

/// Bytes free on a CUDA device now (cudaMemGetInfo), or -1 when unknown (CPU, CPU-only builds, an error).
inline std::int64_t cuda_free_bytes(const at::Device& device) {
#if defined(LAL_LM_HAVE_CUDA)
  if (device.is_cuda()) {
    c10::cuda::CUDAGuard guard(device.index() < 0 ? 0 : device.index());
    std::size_t free_bytes = 0, total_bytes = 0;
    if (cudaMemGetInfo(&free_bytes, &total_bytes) == cudaSuccess) return static_cast<std::int64_t>(free_bytes);
    (void)cudaGetLastError();  // clear the sticky error state of this call
  }
#endif
  (void)device;
  return -1;
}

inline void cuda_reset_peak(const at::Device& device) {
#if defined(LAL_LM_HAVE_CUDA)
  if (device.is_cuda()) c10::cuda::CUDACachingAllocator::resetPeakStats(device.index() < 0 ? 0 : device.index());
#endif
  (void)device;
}

/// A captured CUDA graph of one decode step (one launch instead of hundreds: kernel-launch overhead, not memory
/// bandwidth, dominates small-batch decode otherwise). `step` must be shape-static and read its inputs from tensors
/// that stay alive; replay() re-runs it on the current stream and returns the same output tensor, overwritten.
/// capture() runs `step` once for real first (lazy initialisation, workspaces): a step that updates its own inputs
/// must be undone by the caller afterwards.
class DecodeGraph {
 public:
  static bool supported(const at::Device& device) {
#if LAL_LM_CUDA_GRAPHS
    return device.is_cuda();
#else
    (void)device;
    return false;
#endif
  }
  void capture(const std::function<at::Tensor()>& step, const at::Device& device) {
#if LAL_LM_CUDA_GRAPHS
    synchronize(device);  // the side stream must see what the current stream wrote
    auto stream = c10::cuda::getStreamFromPool(/*isHighPriority=*/false, device.index() < 0 ? 0 : device.index());
    {
      c10::cuda::CUDAStreamGuard guard(stream);
      step();  // warm-up outside the capture (lazy initialisation, workspace allocation)
      stream.synchronize();
      graph_ = std::make_unique<at::cuda::CUDAGraph>();
      graph_->capture_begin();
      output_ = step();
      graph_->capture_end();
    }
    stream.synchronize();
#else
    (void)step;
    (void)device;
    throw std::runtime_error("CUDA graphs need a LibTorch with CUDA");
#endif
  }
  bool captured() const { return output_.defined(); }
  void reset() {
#if LAL_LM_CUDA_GRAPHS
    graph_.reset();
#endif
    output_ = at::Tensor();
  }
  at::Tensor replay() {
#if LAL_LM_CUDA_GRAPHS
    graph_->replay();
#endif
    return output_;
  }

 private:
#if LAL_LM_CUDA_GRAPHS
  std::unique_ptr<at::cuda::CUDAGraph> graph_;
#endif
  at::Tensor output_;
};

/// Device-to-host transfer of small per-step results without stalling the device: push() queues a copy of a device
/// tensor into pinned host memory behind the work already queued on the current stream and records an event; pop()
/// waits for the oldest such copy only. The host thus reads step t while the device already runs step t+1. On the
/// CPU (or a LibTorch without CUDA) push() keeps the tensor and pop() returns it. Results must be popped in order;
/// a popped tensor stays valid until `depth` more pushes.
class HostReader {
 public:
  HostReader(const at::Device& device, int depth) : device_(device), depth_(depth) {}
  void push(const at::Tensor& value) {
    if (static_cast<int>(pending_.size()) >= depth_) throw std::logic_error("HostReader: more than depth pending");
#if LAL_LM_ASYNC_READ
    if (device_.is_cuda()) {
      if (buffers_.empty()) {
        buffers_.resize(static_cast<std::size_t>(depth_));
        events_.resize(static_cast<std::size_t>(depth_));
      }
      const auto k = static_cast<std::size_t>(next_++ % depth_);
      // A buffer of the tensor's shape and type (the one before in this slot was popped: its copy is done).
      if (!buffers_[k].defined() || buffers_[k].sizes() != value.sizes() ||
          buffers_[k].scalar_type() != value.scalar_type())
        buffers_[k] = at::empty(value.sizes(), value.options().device(at::kCPU).pinned_memory(true));
      buffers_[k].copy_(value, /*non_blocking=*/true);
      events_[k].record(c10::cuda::getCurrentCUDAStream(device_.index() < 0 ? 0 : device_.index()));
      pending_.push_back(k);
      return;
    }
#endif
    cpu_.push_back(value.to(at::kCPU));
    pending_.push_back(0);
  }
  at::Tensor pop() {
    if (pending_.empty()) throw std::logic_error("HostReader: nothing pending");
    const auto k = pending_.front();
    pending_.pop_front();
#if LAL_LM_ASYNC_READ
    if (device_.is_cuda()) {
      events_[k].synchronize();
      return buffers_[k];
    }
#endif
    (void)k;
    auto v = cpu_.front();
    cpu_.pop_front();
    return v;
  }

 private:
  at::Device device_;
  int depth_;
  std::int64_t next_ = 0;
  std::deque<std::size_t> pending_;
  std::deque<at::Tensor> cpu_;
  std::vector<at::Tensor> buffers_;
#if LAL_LM_ASYNC_READ
  std::vector<at::cuda::CUDAEvent> events_;
#endif
};

}  // namespace lal::lm::detail
