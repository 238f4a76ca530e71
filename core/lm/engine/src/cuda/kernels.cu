// Fused CUDA kernels of the decoder (kernels.hpp). Products and sums that the unfused LibTorch path computes as
// separate kernels are written with __fmul_rn/__fadd_rn so that the compiler does not contract them into FMAs: in
// float32 these kernels then round exactly as the LibTorch ops do (reductions excepted: their order differs).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "kernels.hpp"

namespace lal::lm::cuda {

namespace {

template <typename T>
__device__ __forceinline__ float to_f(T v);
template <>
__device__ __forceinline__ float to_f<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ float to_f<__nv_bfloat16>(__nv_bfloat16 v) {
  return __bfloat162float(v);
}
template <>
__device__ __forceinline__ float to_f<__half>(__half v) {
  return __half2float(v);
}

template <typename T>
__device__ __forceinline__ T from_f(float v);
template <>
__device__ __forceinline__ float from_f<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}
template <>
__device__ __forceinline__ __half from_f<__half>(float v) {
  return __float2half_rn(v);
}

/// v rounded to T and back: what storing an intermediate in the model dtype does.
template <typename T>
__device__ __forceinline__ float rnd(float v) {
  return to_f<T>(from_f<T>(v));
}

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

/// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the result.
__device__ float block_sum(float v) {
  __shared__ float partial[32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  v = warp_sum(v);
  __syncthreads();  // `partial` may still be read by a previous call
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  v = lane < warps ? partial[lane] : 0.0f;
  return warp_sum(v);
}

void check(const char* kernel) {
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) throw std::runtime_error(std::string("CUDA kernel ") + kernel + ": " + cudaGetErrorString(e));
}

int norm_threads(std::int64_t cols) {
  int t = 32;
  while (t < 1024 && t * 4 < cols) t *= 2;
  return t;
}

template <typename T>
__global__ void add_rms_norm_kernel(T* residual, const T* delta, T* out, const T* weight, std::int64_t cols,
                                    float eps) {
  T* res = residual + blockIdx.x * cols;
  const T* del = delta ? delta + blockIdx.x * cols : nullptr;
  T* o = out + blockIdx.x * cols;
  float squares = 0.0f;
  for (std::int64_t i = threadIdx.x; i < cols; i += blockDim.x) {
    float v = to_f<T>(res[i]);
    if (del) {
      const T sum = from_f<T>(__fadd_rn(v, to_f<T>(del[i])));
      res[i] = sum;
      v = to_f<T>(sum);
    }
    squares += v * v;
  }
  const float r = rsqrtf(__fadd_rn(block_sum(squares) / static_cast<float>(cols), eps));
  for (std::int64_t i = threadIdx.x; i < cols; i += blockDim.x)
    o[i] = from_f<T>(__fmul_rn(to_f<T>(weight[i]), rnd<T>(__fmul_rn(to_f<T>(res[i]), r))));
}

template <typename T>
__global__ void layer_norm_kernel(const T* x, T* out, const T* weight, const T* bias, std::int64_t cols, float eps) {
  const T* row = x + blockIdx.x * cols;
  T* o = out + blockIdx.x * cols;
  float sum = 0.0f;
  for (std::int64_t i = threadIdx.x; i < cols; i += blockDim.x) sum += to_f<T>(row[i]);
  const float mean = block_sum(sum) / static_cast<float>(cols);
  float var = 0.0f;
  for (std::int64_t i = threadIdx.x; i < cols; i += blockDim.x) {
    const float d = to_f<T>(row[i]) - mean;
    var += d * d;
  }
  const float rstd = rsqrtf(block_sum(var) / static_cast<float>(cols) + eps);
  for (std::int64_t i = threadIdx.x; i < cols; i += blockDim.x) {
    float y = (to_f<T>(row[i]) - mean) * rstd * to_f<T>(weight[i]);
    if (bias) y += to_f<T>(bias[i]);
    o[i] = from_f<T>(y);
  }
}

template <typename T>
__global__ void rotary_kernel(T* qkv, QkvLayout L, const std::int64_t* positions, const float* inv_freq, int rot) {
  const std::int64_t t = blockIdx.x;
  const int half = rot / 2;
  const float pos = static_cast<float>(positions[t]);
  T* row = qkv + t * L.token_stride;
  const int pairs = (L.heads + L.kv_heads) * half;
  for (int idx = threadIdx.x; idx < pairs; idx += blockDim.x) {
    const int head = idx / half, j = idx % half;
    T* p = row + (head < L.heads ? L.q_offset + head * L.q_stride : L.k_offset + (head - L.heads) * L.k_stride);
    const float angle = __fmul_rn(pos, inv_freq[j]);
    const float c = rnd<T>(cosf(angle)), s = rnd<T>(sinf(angle));
    const float x1 = to_f<T>(p[j]), x2 = to_f<T>(p[j + half]);
    p[j] = from_f<T>(__fadd_rn(rnd<T>(__fmul_rn(x1, c)), rnd<T>(__fmul_rn(x2, -s))));
    p[j + half] = from_f<T>(__fadd_rn(rnd<T>(__fmul_rn(x2, c)), rnd<T>(__fmul_rn(x1, s))));
  }
}

template <typename T>
__global__ void swiglu_kernel(const T* gate_up, T* out, std::int64_t rows, std::int64_t inner) {
  const std::int64_t n = rows * inner;
  for (std::int64_t idx = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; idx < n;
       idx += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t r = idx / inner, i = idx % inner;
    const float g = to_f<T>(gate_up[r * 2 * inner + i]);
    const float silu = rnd<T>(g / (1.0f + expf(-g)));
    out[idx] = from_f<T>(__fmul_rn(silu, to_f<T>(gate_up[r * 2 * inner + inner + i])));
  }
}

template <typename T>
__global__ void kv_append_kernel(const T* qkv, QkvLayout L, T* k_cache, T* v_cache, std::int64_t capacity,
                                 const std::int64_t* slots, std::int64_t slot_stride) {
  const std::int64_t b = blockIdx.x;
  const std::int64_t slot = slots[b * slot_stride];
  const T* row = qkv + b * L.token_stride;
  const int D = L.head_dim;
  for (int idx = threadIdx.x; idx < L.kv_heads * D; idx += blockDim.x) {
    const int h = idx / D, d = idx % D;
    const std::int64_t at = ((b * L.kv_heads + h) * capacity + slot) * D + d;
    k_cache[at] = row[L.k_offset + h * L.k_stride + d];
    v_cache[at] = row[L.v_offset + h * L.v_stride + d];
  }
}

constexpr int kAttentionWarps = 4;

/// Block (kv head, row, split): its G = H/KV query heads against the keys of its split, one warp per key in turn
/// (online softmax per warp), then the warps combined. Lane l holds channels l, l+32, ... (DPL of them).
template <typename T, int DPL, int MAXG>
__global__ void __launch_bounds__(kAttentionWarps * 32)
    decode_attention_kernel(const T* qkv, QkvLayout L, const T* k_cache, const T* v_cache, std::int64_t capacity,
                            const std::int64_t* slots, std::int64_t slot_stride, const bool* valid, float scale, T* out,
                            float* scratch, int splits) {
  const int kvh = blockIdx.x, split = blockIdx.z;
  const std::int64_t b = blockIdx.y;
  const int G = L.heads / L.kv_heads, D = L.head_dim;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const std::int64_t length = slots[b * slot_stride] + 1;
  const std::int64_t chunk = (capacity + splits - 1) / splits;
  const std::int64_t start = split * chunk;
  const std::int64_t end = min(length, start + chunk);

  float q[MAXG][DPL], acc[MAXG][DPL], m[MAXG], l[MAXG];
  const T* qrow = qkv + b * L.token_stride + L.q_offset;
#pragma unroll
  for (int g = 0; g < MAXG; ++g) {
    m[g] = -INFINITY;
    l[g] = 0.0f;
#pragma unroll
    for (int i = 0; i < DPL; ++i) {
      const int d = lane + 32 * i;
      q[g][i] = (g < G && d < D) ? to_f<T>(qrow[(kvh * G + g) * L.q_stride + d]) * scale : 0.0f;
      acc[g][i] = 0.0f;
    }
  }
  const std::int64_t head_base = (b * L.kv_heads + kvh) * capacity * D;
  const T* kh = k_cache + head_base;
  const T* vh = v_cache + head_base;
  const bool* row_valid = valid ? valid + b * capacity : nullptr;
  for (std::int64_t j = start + warp; j < end; j += kAttentionWarps) {
    if (row_valid && !row_valid[j]) continue;
    float kv[DPL], vv[DPL];
#pragma unroll
    for (int i = 0; i < DPL; ++i) {
      const int d = lane + 32 * i;
      kv[i] = d < D ? to_f<T>(kh[j * D + d]) : 0.0f;
      vv[i] = d < D ? to_f<T>(vh[j * D + d]) : 0.0f;
    }
#pragma unroll
    for (int g = 0; g < MAXG; ++g) {
      if (g >= G) break;
      float s = 0.0f;
#pragma unroll
      for (int i = 0; i < DPL; ++i) s += q[g][i] * kv[i];
      s = warp_sum(s);
      const float mn = fmaxf(m[g], s);
      const float correction = expf(m[g] - mn);
      const float p = expf(s - mn);
      l[g] = l[g] * correction + p;
#pragma unroll
      for (int i = 0; i < DPL; ++i) acc[g][i] = acc[g][i] * correction + p * vv[i];
      m[g] = mn;
    }
  }

  __shared__ float sm_m[kAttentionWarps][MAXG], sm_l[kAttentionWarps][MAXG];
  __shared__ float sm_acc[kAttentionWarps][MAXG][DPL * 32];
#pragma unroll
  for (int g = 0; g < MAXG; ++g) {
    if (lane == 0) {
      sm_m[warp][g] = m[g];
      sm_l[warp][g] = l[g];
    }
#pragma unroll
    for (int i = 0; i < DPL; ++i) sm_acc[warp][g][lane + 32 * i] = acc[g][i];
  }
  __syncthreads();
  for (int idx = threadIdx.x; idx < G * D; idx += blockDim.x) {
    const int g = idx / D, d = idx % D;
    float M = -INFINITY;
    for (int w = 0; w < kAttentionWarps; ++w) M = fmaxf(M, sm_m[w][g]);
    float sum = 0.0f, a = 0.0f;
    if (M > -INFINITY)
      for (int w = 0; w < kAttentionWarps; ++w) {
        if (sm_m[w][g] == -INFINITY) continue;
        const float e = expf(sm_m[w][g] - M);
        sum += sm_l[w][g] * e;
        a += sm_acc[w][g][d] * e;
      }
    const std::int64_t bh = b * L.heads + kvh * G + g;
    if (splits == 1) {
      out[bh * D + d] = from_f<T>(sum > 0.0f ? a / sum : 0.0f);
    } else {
      const std::int64_t part = bh * splits + split;
      const std::int64_t parts = static_cast<std::int64_t>(gridDim.y) * L.heads * splits;
      scratch[part * D + d] = a;
      if (d == 0) {
        scratch[parts * D + part] = M;
        scratch[parts * D + parts + part] = sum;
      }
    }
  }
}

template <typename T>
__global__ void combine_splits_kernel(const float* scratch, T* out, int D, int splits, std::int64_t parts) {
  const std::int64_t bh = blockIdx.x;
  const float* m = scratch + parts * D + bh * splits;
  const float* l = scratch + parts * D + parts + bh * splits;
  float M = -INFINITY;
  for (int s = 0; s < splits; ++s) M = fmaxf(M, m[s]);
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    float sum = 0.0f, a = 0.0f;
    if (M > -INFINITY)
      for (int s = 0; s < splits; ++s) {
        if (m[s] == -INFINITY) continue;
        const float e = expf(m[s] - M);
        sum += l[s] * e;
        a += scratch[(bh * splits + s) * D + d] * e;
      }
    out[bh * D + d] = from_f<T>(sum > 0.0f ? a / sum : 0.0f);
  }
}

template <typename T, int DPL, int MAXG>
void launch_attention(const void* qkv, const QkvLayout& L, std::int64_t batch, const void* k, const void* v,
                      std::int64_t capacity, const std::int64_t* slots, std::int64_t slot_stride, const bool* valid,
                      float scale, void* out, int splits, float* scratch, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(L.kv_heads), static_cast<unsigned>(batch), static_cast<unsigned>(splits));
  decode_attention_kernel<T, DPL, MAXG><<<grid, kAttentionWarps * 32, 0, stream>>>(
      static_cast<const T*>(qkv), L, static_cast<const T*>(k), static_cast<const T*>(v), capacity, slots, slot_stride,
      valid, scale, static_cast<T*>(out), scratch, splits);
  check("decode_attention");
  if (splits > 1) {
    const std::int64_t parts = batch * L.heads * splits;
    combine_splits_kernel<T>
        <<<static_cast<unsigned>(batch * L.heads), std::min(256, ((L.head_dim + 31) / 32) * 32), 0, stream>>>(
            scratch, static_cast<T*>(out), L.head_dim, splits, parts);
    check("decode_attention (combine)");
  }
}

template <typename T, int DPL>
bool dispatch_groups(int groups, const void* qkv, const QkvLayout& L, std::int64_t batch, const void* k, const void* v,
                     std::int64_t capacity, const std::int64_t* slots, std::int64_t slot_stride, const bool* valid,
                     float scale, void* out, int splits, float* scratch, cudaStream_t stream) {
  if (groups <= 1)
    launch_attention<T, DPL, 1>(qkv, L, batch, k, v, capacity, slots, slot_stride, valid, scale, out, splits, scratch,
                                stream);
  else if (groups <= 2)
    launch_attention<T, DPL, 2>(qkv, L, batch, k, v, capacity, slots, slot_stride, valid, scale, out, splits, scratch,
                                stream);
  else if (groups <= 4)
    launch_attention<T, DPL, 4>(qkv, L, batch, k, v, capacity, slots, slot_stride, valid, scale, out, splits, scratch,
                                stream);
  else if (groups <= 8)
    launch_attention<T, DPL, 8>(qkv, L, batch, k, v, capacity, slots, slot_stride, valid, scale, out, splits, scratch,
                                stream);
  else
    return false;
  return true;
}

template <typename T>
bool dispatch_attention(const void* qkv, const QkvLayout& L, std::int64_t batch, const void* k, const void* v,
                        std::int64_t capacity, const std::int64_t* slots, std::int64_t slot_stride, const bool* valid,
                        float scale, void* out, int splits, float* scratch, cudaStream_t stream) {
  const int groups = L.heads / L.kv_heads;
  const int dpl = (L.head_dim + 31) / 32;
#define LAL_ATTENTION_CASE(N)                                                                                        \
  return dispatch_groups<T, N>(groups, qkv, L, batch, k, v, capacity, slots, slot_stride, valid, scale, out, splits, \
                               scratch, stream)
  if (dpl <= 1) LAL_ATTENTION_CASE(1);
  if (dpl <= 2) LAL_ATTENTION_CASE(2);
  if (dpl <= 4) LAL_ATTENTION_CASE(4);
  if (dpl <= 8) LAL_ATTENTION_CASE(8);
#undef LAL_ATTENTION_CASE
  return false;
}

/// Runs `fn` with the element type of `type` as its template argument.
template <template <typename> class Fn, typename... Args>
auto by_type(ScalarType type, Args&&... args) {
  switch (type) {
    case ScalarType::BFloat16: return Fn<__nv_bfloat16>::run(std::forward<Args>(args)...);
    case ScalarType::Float16: return Fn<__half>::run(std::forward<Args>(args)...);
    case ScalarType::Float32: break;
  }
  return Fn<float>::run(std::forward<Args>(args)...);
}

template <typename T>
struct AddRmsNorm {
  static void run(void* residual, const void* delta, void* out, const void* weight, std::int64_t rows,
                  std::int64_t cols, float eps, cudaStream_t stream) {
    add_rms_norm_kernel<T><<<static_cast<unsigned>(rows), norm_threads(cols), 0, stream>>>(
        static_cast<T*>(residual), static_cast<const T*>(delta), static_cast<T*>(out), static_cast<const T*>(weight),
        cols, eps);
    check("add_rms_norm");
  }
};
template <typename T>
struct LayerNorm {
  static void run(const void* x, void* out, const void* weight, const void* bias, std::int64_t rows, std::int64_t cols,
                  float eps, cudaStream_t stream) {
    layer_norm_kernel<T><<<static_cast<unsigned>(rows), norm_threads(cols), 0, stream>>>(
        static_cast<const T*>(x), static_cast<T*>(out), static_cast<const T*>(weight), static_cast<const T*>(bias),
        cols, eps);
    check("layer_norm");
  }
};
template <typename T>
struct Rotary {
  static void run(void* qkv, const QkvLayout& L, std::int64_t tokens, const std::int64_t* positions,
                  const float* inv_freq, int rot, cudaStream_t stream) {
    rotary_kernel<T>
        <<<static_cast<unsigned>(tokens), 128, 0, stream>>>(static_cast<T*>(qkv), L, positions, inv_freq, rot);
    check("rotary");
  }
};
template <typename T>
struct Swiglu {
  static void run(const void* gate_up, void* out, std::int64_t rows, std::int64_t inner, cudaStream_t stream) {
    const std::int64_t n = rows * inner;
    const auto blocks = static_cast<unsigned>(std::min<std::int64_t>((n + 255) / 256, 65535));
    swiglu_kernel<T><<<blocks, 256, 0, stream>>>(static_cast<const T*>(gate_up), static_cast<T*>(out), rows, inner);
    check("swiglu");
  }
};
template <typename T>
struct KvAppend {
  static void run(const void* qkv, const QkvLayout& L, std::int64_t batch, void* k, void* v, std::int64_t capacity,
                  const std::int64_t* slots, std::int64_t slot_stride, cudaStream_t stream) {
    kv_append_kernel<T><<<static_cast<unsigned>(batch), 128, 0, stream>>>(
        static_cast<const T*>(qkv), L, static_cast<T*>(k), static_cast<T*>(v), capacity, slots, slot_stride);
    check("kv_append");
  }
};
template <typename T>
struct Attention {
  static bool run(const void* qkv, const QkvLayout& L, std::int64_t batch, const void* k, const void* v,
                  std::int64_t capacity, const std::int64_t* slots, std::int64_t slot_stride, const bool* valid,
                  float scale, void* out, int splits, float* scratch, cudaStream_t stream) {
    return dispatch_attention<T>(qkv, L, batch, k, v, capacity, slots, slot_stride, valid, scale, out, splits, scratch,
                                 stream);
  }
};

}  // namespace

void add_rms_norm(void* residual, const void* delta, void* out, const void* weight, std::int64_t rows,
                  std::int64_t cols, float eps, ScalarType type, void* stream) {
  if (rows > 0)
    by_type<AddRmsNorm>(type, residual, delta, out, weight, rows, cols, eps, static_cast<cudaStream_t>(stream));
}

void layer_norm(const void* x, void* out, const void* weight, const void* bias, std::int64_t rows, std::int64_t cols,
                float eps, ScalarType type, void* stream) {
  if (rows > 0) by_type<LayerNorm>(type, x, out, weight, bias, rows, cols, eps, static_cast<cudaStream_t>(stream));
}

void rotary(void* qkv, const QkvLayout& layout, std::int64_t tokens, const std::int64_t* positions,
            const float* inv_freq, int rotary_dim, ScalarType type, void* stream) {
  if (tokens > 0 && rotary_dim >= 2)
    by_type<Rotary>(type, qkv, layout, tokens, positions, inv_freq, rotary_dim, static_cast<cudaStream_t>(stream));
}

void swiglu(const void* gate_up, void* out, std::int64_t rows, std::int64_t inner, ScalarType type, void* stream) {
  if (rows > 0) by_type<Swiglu>(type, gate_up, out, rows, inner, static_cast<cudaStream_t>(stream));
}

void kv_append(const void* qkv, const QkvLayout& layout, std::int64_t batch, void* k_cache, void* v_cache,
               std::int64_t capacity, const std::int64_t* slots, std::int64_t slot_stride, ScalarType type,
               void* stream) {
  if (batch > 0)
    by_type<KvAppend>(type, qkv, layout, batch, k_cache, v_cache, capacity, slots, slot_stride,
                      static_cast<cudaStream_t>(stream));
}

bool decode_attention(const void* qkv, const QkvLayout& layout, std::int64_t batch, const void* k_cache,
                      const void* v_cache, std::int64_t capacity, const std::int64_t* slots, std::int64_t slot_stride,
                      const bool* valid, float scale, void* out, int splits, float* scratch, ScalarType type,
                      void* stream) {
  if (layout.head_dim > 256 || layout.kv_heads <= 0 || layout.heads % layout.kv_heads != 0 ||
      layout.heads / layout.kv_heads > 8 || splits < 1 || (splits > 1 && !scratch))
    return false;
  return by_type<Attention>(type, qkv, layout, batch, k_cache, v_cache, capacity, slots, slot_stride, valid, scale, out,
                            splits, scratch, static_cast<cudaStream_t>(stream));
}

int decode_attention_splits(std::int64_t batch, int kv_heads, std::int64_t capacity) {
  const std::int64_t blocks = std::max<std::int64_t>(1, batch * kv_heads);
  const std::int64_t by_occupancy = (264 + blocks - 1) / blocks;  // ~2 blocks per multiprocessor on a 132-SM GPU
  const std::int64_t by_length = (capacity + 31) / 32;            // at least 32 keys per split
  return static_cast<int>(std::max<std::int64_t>(1, std::min<std::int64_t>({by_occupancy, by_length, 64})));
}

}  // namespace lal::lm::cuda
