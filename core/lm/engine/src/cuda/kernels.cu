// Fused CUDA kernels of the decoder (kernels.hpp). Products and sums that the unfused LibTorch path computes as
// separate kernels are written with __fmul_rn/__fadd_rn so that the compiler does not contract them into FMAs: in
// float32 these kernels then round exactly as the LibTorch ops do (reductions excepted: their order differs).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <type_traits>

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

__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

/// Max over the block (as block_sum).
__device__ float block_max(float v) {
  __shared__ float partial[32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  v = lane < warps ? partial[lane] : -INFINITY;
  return warp_max(v);
}

/// Whether value v at index i is a better argmax than bv at bi (bi < 0: none yet): larger, NaN above everything
/// (torch.argmax), the lower index on ties.
template <typename V>
__device__ __forceinline__ bool better_arg(V v, int i, V bv, int bi) {
  if (i < 0) return false;
  if (bi < 0) return true;
  if (isnan(v)) return !isnan(bv) || i < bi;
  if (isnan(bv)) return false;
  return v > bv || (v == bv && i < bi);
}

/// The best (value, index) over the warp; every lane gets it.
template <typename V>
__device__ __forceinline__ void warp_best(V& v, int& i) {
  for (int o = 16; o > 0; o >>= 1) {
    const V ov = __shfl_xor_sync(0xffffffffu, v, o);
    const int oi = __shfl_xor_sync(0xffffffffu, i, o);
    if (better_arg(ov, oi, v, i)) v = ov, i = oi;
  }
}

/// The best (value, index) over the block (at most 32 warps); true in the one thread that holds it (thread 0). Every
/// thread of the block must call it.
template <typename V>
__device__ __forceinline__ bool block_best(V& v, int& i) {
  __shared__ V best_v[32];
  __shared__ int best_i[32];
  warp_best(v, i);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  if (lane == 0) best_v[warp] = v, best_i[warp] = i;
  __syncthreads();
  if (warp != 0) return false;
  v = lane < warps ? best_v[lane] : V(0);
  i = lane < warps ? best_i[lane] : -1;
  warp_best(v, i);
  return lane == 0;
}

void check(const char* kernel) {
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) throw std::runtime_error(std::string("CUDA kernel ") + kernel + ": " + cudaGetErrorString(e));
}

// ---- programmatic dependent launch (Hopper and later) --------------------------------------------------------
// A decode step is hundreds of small kernels; between two of them the GPU idles while the next one is launched and
// its blocks are scheduled. The kernels here (but the GEMVs) are launched allowing the next one to be scheduled while
// they still run (launch()); each first waits until the kernel before it has finished and its writes are visible
// (wait_for_previous(), before reading anything), then lets the next one be scheduled. A kernel of LibTorch or
// cuBLAS before or after one of these is waited for as usual. The GEMVs are launched plainly: a variant that asked
// for its first weights before waiting measured ~1.9 µs slower per GEMV on the H200 (BENCHMARKS.md), and the plain
// variant with the wait first was not measured.

/// Waits for the previous kernel of the stream (griddepcontrol.wait); nothing where PDL does not exist.
__device__ __forceinline__ void wait_for_previous() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

/// Compiled with the same architectures as the kernels: its PTX version says whether they wait (sm_90 and later).
__global__ void pdl_probe_kernel() {}

/// Whether kernels launched on the current device may overlap the previous one: the device and the code compiled
/// for it support it, and LAL_CUDA_PDL is not "off".
bool pdl_enabled() {
  static const bool off = [] {
    const char* v = std::getenv("LAL_CUDA_PDL");
    return v && std::strcmp(v, "off") == 0;
  }();
  if (off) return false;
  constexpr int kDevices = 64;
  static int known[kDevices] = {};  // 0 unknown, 1 no, 2 yes
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess || device < 0 || device >= kDevices) {
    (void)cudaGetLastError();
    return false;
  }
  if (!known[device]) {
    int major = 0;
    cudaFuncAttributes attributes{};
    const bool yes = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) == cudaSuccess &&
                     major >= 9 && cudaFuncGetAttributes(&attributes, pdl_probe_kernel) == cudaSuccess &&
                     attributes.ptxVersion >= 90;
    (void)cudaGetLastError();
    known[device] = yes ? 2 : 1;
  }
  return known[device] == 2;
}

/// kernel<<<grid, block, 0, stream>>>(args...), allowed to start while the stream's previous kernel finishes
/// (programmatic stream serialization) where pdl_enabled(). Every kernel launched so calls wait_for_previous() first.
template <typename... Params, typename... Args>
void launch(void (*kernel)(Params...), dim3 grid, dim3 block, cudaStream_t stream, Args... args) {
  cudaLaunchAttribute attribute[1];
  attribute[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute[0].val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t config = {};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = 0;
  config.stream = stream;
  config.attrs = attribute;
  config.numAttrs = pdl_enabled() ? 1 : 0;
  (void)cudaLaunchKernelEx(&config, kernel, static_cast<Params>(args)...);  // check() reports a failure
}

int norm_threads(std::int64_t cols) {
  int t = 32;
  while (t < 1024 && t * 4 < cols) t *= 2;
  return t;
}

template <typename T>
__global__ void add_rms_norm_kernel(T* residual, const T* delta, T* out, const T* weight, std::int64_t cols,
                                    float eps) {
  wait_for_previous();
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
  wait_for_previous();
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
  wait_for_previous();
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
  wait_for_previous();
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
  wait_for_previous();
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

/// rotary_kernel + kv_append_kernel for one decode token per row (block b): q pairs rotated in place, each k
/// element rotated (the same rounding) on its way into the cache, v copied.
template <typename T>
__global__ void rotary_kv_append_kernel(T* qkv, QkvLayout L, const std::int64_t* positions, const float* inv_freq,
                                        int rot, T* k_cache, T* v_cache, std::int64_t capacity,
                                        const std::int64_t* slots, std::int64_t slot_stride) {
  wait_for_previous();
  const std::int64_t b = blockIdx.x;
  const int half = rot / 2, D = L.head_dim;
  const float pos = static_cast<float>(positions[b]);
  const std::int64_t slot = slots[b * slot_stride];
  T* row = qkv + b * L.token_stride;
  // Block (row, y) takes items y * blockDim.x + threadIdx.x, + gridDim.y * blockDim.x, ...: the q pairs first, then
  // the k/v elements (one block per row did 2 304 items of the 7B shape in 18 dependent rounds, 10.7 us).
  const int first = static_cast<int>(blockIdx.y * blockDim.x + threadIdx.x), stride = gridDim.y * blockDim.x;
  const int q_items = L.heads * half;
  for (int idx = first; idx < q_items; idx += stride) {
    const int head = idx / half, j = idx % half;
    T* p = row + L.q_offset + head * L.q_stride;
    const float angle = __fmul_rn(pos, inv_freq[j]);
    const float c = rnd<T>(cosf(angle)), s = rnd<T>(sinf(angle));
    const float x1 = to_f<T>(p[j]), x2 = to_f<T>(p[j + half]);
    p[j] = from_f<T>(__fadd_rn(rnd<T>(__fmul_rn(x1, c)), rnd<T>(__fmul_rn(x2, -s))));
    p[j + half] = from_f<T>(__fadd_rn(rnd<T>(__fmul_rn(x2, c)), rnd<T>(__fmul_rn(x1, s))));
  }
  for (int item = first; item < q_items + L.kv_heads * D; item += stride) {
    if (item < q_items) continue;
    const int idx = item - q_items, h = idx / D, d = idx % D;
    const T* k = row + L.k_offset + h * L.k_stride;
    T out = k[d];
    if (d < 2 * half) {
      const int j = d % half;
      const float angle = __fmul_rn(pos, inv_freq[j]);
      const float c = rnd<T>(cosf(angle)), s = rnd<T>(sinf(angle));
      const float x1 = to_f<T>(k[j]), x2 = to_f<T>(k[j + half]);
      out = d < half ? from_f<T>(__fadd_rn(rnd<T>(__fmul_rn(x1, c)), rnd<T>(__fmul_rn(x2, -s))))
                     : from_f<T>(__fadd_rn(rnd<T>(__fmul_rn(x2, c)), rnd<T>(__fmul_rn(x1, s))));
    }
    const std::int64_t at = ((b * L.kv_heads + h) * capacity + slot) * D + d;
    k_cache[at] = out;
    v_cache[at] = row[L.v_offset + h * L.v_stride + d];
  }
}

// ---- matrix times a few vectors -------------------------------------------------------------------------------

constexpr int kGemvWarps = 4;               // warps per block
constexpr std::int64_t kGemvSplitK = 8192;  // from this K on, a block's warps split K (gemv_kernel's KSPLIT)
enum GemvMode { kGemvPlain, kGemvFloatOut, kGemvSwiglu };

/// 16 bytes of weights, read once per step: not kept in L1 (the activations x are).
__device__ __forceinline__ uint4 load_weights(const uint4* p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 700
  uint4 v;
  asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
      : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
      : "l"(p));
  return v;
#else
  return __ldg(p);
#endif
}

/// Two 16-bit values of T as one 32-bit pair, and the pair in float32.
template <typename T>
struct PairOf;
template <>
struct PairOf<__nv_bfloat16> {
  using type = __nv_bfloat162;
};
template <>
struct PairOf<__half> {
  using type = __half2;
};
__device__ __forceinline__ float2 to_float2(__nv_bfloat162 v) { return __bfloat1622float2(v); }
__device__ __forceinline__ float2 to_float2(__half2 v) { return __half22float2(v); }

/// The dot product of two 16-byte vectors of T, in float32 (16-bit T: eight values as four pairs).
template <typename T>
__device__ __forceinline__ float dot16(const uint4& a, const uint4& b) {
  using Pair = typename PairOf<T>::type;
  const unsigned av[4] = {a.x, a.y, a.z, a.w}, bv[4] = {b.x, b.y, b.z, b.w};
  float s = 0.0f;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    Pair ap, bp;
    memcpy(&ap, &av[i], 4);
    memcpy(&bp, &bv[i], 4);
    const float2 af = to_float2(ap), bf = to_float2(bp);
    s = fmaf(af.x, bf.x, s);
    s = fmaf(af.y, bf.y, s);
  }
  return s;
}
template <>
__device__ __forceinline__ float dot16<float>(const uint4& a, const uint4& b) {
  float s = __uint_as_float(a.x) * __uint_as_float(b.x);
  s = fmaf(__uint_as_float(a.y), __uint_as_float(b.y), s);
  s = fmaf(__uint_as_float(a.z), __uint_as_float(b.z), s);
  return fmaf(__uint_as_float(a.w), __uint_as_float(b.w), s);
}

/// With KSPLIT = kGemvWarps (long K, where n / ROWS units leave too few warps with too long a chain each: the 7B
/// shape's down projection, K = 18 944, ran at 3.2 TB/s against 4.3 for gate/up), block `unit` computes its rows
/// with each warp taking every KSPLIT-th run of 32 * UNROLL vectors, and warp 0 adds the warps' sums in order.
/// Otherwise warp `unit` computes ROWS weight rows against the NB rows of x (launched with ROWS = 2, UNROLL = 4: on the
/// H200 one row x 8 loads was 2 % slower at one row of x and 4-8 % faster at 2-4, where cuBLAS is faster still for 7B):
/// rows ROWS*u ... ROWS*u + ROWS-1 (the last one repeated, computed but not written, past n), or for SwiGLU (ROWS = 2)
/// the gate row u and the up row n + u (n = inner). Lane l reads the 16-byte vectors l, l + 32, ... of its rows, UNROLL
/// of each row in flight.
template <typename T, int NB, int MODE, int ROWS, int UNROLL, int KSPLIT>
__global__ void __launch_bounds__(kGemvWarps * 32)
    gemv_kernel(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ bias, void* __restrict__ out,
                std::int64_t units, std::int64_t n, std::int64_t k) {
  static_assert(MODE != kGemvSwiglu || ROWS == 2, "SwiGLU pairs a gate row with its up row");
  static_assert(KSPLIT == 1 || KSPLIT == kGemvWarps, "a block's warps split K, or each warp has its own unit");
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const std::int64_t unit =
      KSPLIT == 1 ? static_cast<std::int64_t>(blockIdx.x) * kGemvWarps + warp : static_cast<std::int64_t>(blockIdx.x);
  if (unit >= units) return;
  std::int64_t row[ROWS];
#pragma unroll
  for (int r = 0; r < ROWS; ++r) row[r] = MODE == kGemvSwiglu ? unit + r * n : min(ROWS * unit + r, n - 1);
  constexpr int V = 16 / static_cast<int>(sizeof(T));
  const std::int64_t vecs = k / V;
  const uint4* xv = reinterpret_cast<const uint4*>(x);
  const uint4* wr[ROWS];
#pragma unroll
  for (int r = 0; r < ROWS; ++r) wr[r] = reinterpret_cast<const uint4*>(w + row[r] * k);
  float acc[ROWS][NB];
#pragma unroll
  for (int r = 0; r < ROWS; ++r)
#pragma unroll
    for (int b = 0; b < NB; ++b) acc[r][b] = 0.0f;
  for (std::int64_t i = lane + (KSPLIT == 1 ? 0 : 32 * UNROLL * warp); i < vecs; i += 32 * UNROLL * KSPLIT) {
    uint4 p[ROWS][UNROLL];
#pragma unroll
    for (int u = 0; u < UNROLL; ++u) {
      const std::int64_t j = i + 32 * u;
      if (j < vecs)
#pragma unroll
        for (int r = 0; r < ROWS; ++r) p[r][u] = load_weights(wr[r] + j);
    }
#pragma unroll
    for (int u = 0; u < UNROLL; ++u) {
      const std::int64_t j = i + 32 * u;
      if (j < vecs) {
#pragma unroll
        for (int b = 0; b < NB; ++b) {
          const uint4 xx = __ldg(xv + b * vecs + j);
#pragma unroll
          for (int r = 0; r < ROWS; ++r) acc[r][b] += dot16<T>(p[r][u], xx);
        }
      }
    }
  }
#pragma unroll
  for (int r = 0; r < ROWS; ++r)
#pragma unroll
    for (int b = 0; b < NB; ++b) acc[r][b] = warp_sum(acc[r][b]);
  if constexpr (KSPLIT > 1) {
    __shared__ float part[KSPLIT][ROWS][NB];
    if (lane == 0)
#pragma unroll
      for (int r = 0; r < ROWS; ++r)
#pragma unroll
        for (int b = 0; b < NB; ++b) part[warp][r][b] = acc[r][b];
    __syncthreads();
    if (warp != 0) return;
#pragma unroll
    for (int r = 0; r < ROWS; ++r)
#pragma unroll
      for (int b = 0; b < NB; ++b) {
        float sum = part[0][r][b];
#pragma unroll
        for (int v = 1; v < KSPLIT; ++v) sum += part[v][r][b];
        acc[r][b] = sum;
      }
  }
  if (lane != 0) return;
  float bias_of[ROWS];
#pragma unroll
  for (int r = 0; r < ROWS; ++r) bias_of[r] = bias ? to_f<T>(bias[row[r]]) : 0.0f;
  if constexpr (MODE == kGemvSwiglu) {
#pragma unroll
    for (int b = 0; b < NB; ++b) {
      const float g = rnd<T>(__fadd_rn(acc[0][b], bias_of[0]));
      const float u = rnd<T>(__fadd_rn(acc[ROWS - 1][b], bias_of[ROWS - 1]));
      const float silu = rnd<T>(g / (1.0f + expf(-g)));
      static_cast<T*>(out)[b * n + unit] = from_f<T>(__fmul_rn(silu, u));
    }
  } else {
#pragma unroll
    for (int r = 0; r < ROWS; ++r) {
      if (ROWS * unit + r >= n) break;
#pragma unroll
      for (int b = 0; b < NB; ++b) {
        const float y = __fadd_rn(acc[r][b], bias_of[r]);
        if constexpr (MODE == kGemvFloatOut)
          static_cast<float*>(out)[b * n + row[r]] = rnd<T>(y);
        else
          static_cast<T*>(out)[b * n + row[r]] = from_f<T>(y);
      }
    }
  }
}

template <typename T, int MODE, int ROWS, int UNROLL, int KSPLIT = 1>
void launch_gemv(const void* x, const void* w, const void* bias, void* out, std::int64_t rows, std::int64_t n,
                 std::int64_t k, cudaStream_t stream) {
  const std::int64_t units = MODE == kGemvSwiglu ? n : (n + ROWS - 1) / ROWS;
  const auto blocks = static_cast<unsigned>(KSPLIT > 1 ? units : (units + kGemvWarps - 1) / kGemvWarps);
  const T* xt = static_cast<const T*>(x);
  const T* wt = static_cast<const T*>(w);
  const T* bt = static_cast<const T*>(bias);
#define LAL_GEMV_CASE(NB) \
  gemv_kernel<T, NB, MODE, ROWS, UNROLL, KSPLIT><<<blocks, kGemvWarps * 32, 0, stream>>>(xt, wt, bt, out, units, n, k)
  switch (rows) {
    case 1: LAL_GEMV_CASE(1); break;
    case 2: LAL_GEMV_CASE(2); break;
    case 3: LAL_GEMV_CASE(3); break;
    default: LAL_GEMV_CASE(4); break;
  }
#undef LAL_GEMV_CASE
  check(MODE == kGemvSwiglu ? "gemv_swiglu" : "gemv");
}

// ---- token statistics ---------------------------------------------------------------------------------------

constexpr int kStatsThreads = 256;
constexpr int kStatsFields = 6;  // per (row, chunk): max, sum exp, sum exp * shifted, best value, best index bits

/// Block (chunk, row): the -inf fill past `usable`, then the chunk's max, sum exp(x - max), sum exp(x - max) *
/// (x - max) and the best (logits + suppress, index), into scratch.
__global__ void __launch_bounds__(kStatsThreads)
    token_stats_partial_kernel(float* logits, std::int64_t vocab, std::int64_t usable, const float* suppress,
                               std::int64_t suppress_stride, float* scratch, int chunks) {
  wait_for_previous();
  const std::int64_t r = blockIdx.y;
  const int c = blockIdx.x;
  const std::int64_t chunk = (vocab + chunks - 1) / chunks;
  const std::int64_t c0 = c * chunk, c1 = min(vocab, c0 + chunk);
  float* row = logits + r * vocab;
  const float* add = suppress ? suppress + r * suppress_stride : nullptr;
  float m = -INFINITY, best = 0.0f;
  int best_at = -1;
  for (std::int64_t i = c0 + threadIdx.x; i < c1; i += blockDim.x) {
    float v = row[i];
    if (i >= usable) row[i] = v = -INFINITY;
    m = fmaxf(m, v);
    if (add) v += add[i];
    if (better_arg(v, static_cast<int>(i), best, best_at)) best = v, best_at = static_cast<int>(i);
  }
  m = block_max(m);
  float z = 0.0f, weighted = 0.0f;
  if (m > -INFINITY)
    for (std::int64_t i = c0 + threadIdx.x; i < c1; i += blockDim.x) {  // the thread's own elements: no sync needed
      const float shifted = row[i] - m;
      const float e = expf(shifted);
      if (e > 0.0f) z += e, weighted += e * shifted;  // exp(-inf) terms add nothing (not 0 * -inf)
    }
  z = block_sum(z);
  weighted = block_sum(weighted);
  if (block_best(best, best_at)) {
    float* out = scratch + (r * chunks + c) * kStatsFields;
    out[0] = m, out[1] = z, out[2] = weighted, out[3] = best, out[4] = __int_as_float(best_at);
  }
}

/// One warp per row: the chunks combined (each sum rescaled to the row's max), then log_z, entropy, argmax and
/// its log-probability.
__global__ void token_stats_final_kernel(const float* logits, std::int64_t vocab, const float* scratch, int chunks,
                                         float* log_z, float* entropy, std::int64_t* argmax, float* logprob) {
  wait_for_previous();
  const std::int64_t r = blockIdx.x;
  const int lane = threadIdx.x;
  const float* part = scratch + r * chunks * kStatsFields;
  float top = -INFINITY;
  for (int c = lane; c < chunks; c += 32) top = fmaxf(top, part[c * kStatsFields]);
  top = warp_max(top);
  float z = 0.0f, weighted = 0.0f, best = 0.0f;
  int best_at = -1;
  for (int c = lane; c < chunks; c += 32) {
    const float* p = part + c * kStatsFields;
    if (p[1] > 0.0f) {
      const float shift = p[0] - top, scale = expf(shift);
      z += p[1] * scale;
      weighted += scale * (p[2] + p[1] * shift);
    }
    const int at = __float_as_int(p[4]);
    if (better_arg(p[3], at, best, best_at)) best = p[3], best_at = at;
  }
  z = warp_sum(z);
  weighted = warp_sum(weighted);
  warp_best(best, best_at);
  if (lane != 0) return;
  const float lz = top + logf(z);
  const std::int64_t id = best_at < 0 ? 0 : best_at;
  log_z[r] = lz;
  entropy[r] = logf(z) - weighted / z;
  argmax[r] = id;
  logprob[r] = logits[r * vocab + id] - lz;
}

// ---- Gumbel-max choice -------------------------------------------------------------------------------------

constexpr std::uint64_t kGolden = 0x9e3779b97f4a7c15ull, kMix1 = 0xbf58476d1ce4e5b9ull, kMix2 = 0x94d049bb133111ebull;

/// splitmix64's finaliser (sampling.cpp's mix()).
__device__ __forceinline__ std::uint64_t mix64(std::uint64_t z) {
  z += kGolden;
  z = (z ^ (z >> 30)) * kMix1;
  z = (z ^ (z >> 27)) * kMix2;
  return z ^ (z >> 31);
}

constexpr int kGumbelFields = 2;  // per (row, chunk): the best noisy value (float64) and its index

/// Block (chunk, row): the best of double(scores) - log(-log(u)) over the chunk, u the counter noise of sampling.cpp:
/// u = ((h >> 11) + 0.5) * 2^-53, h = mix(r * index_stride + i + mix(seed + mix(column))), seed and column those
/// of row r * seed_stride.
__global__ void __launch_bounds__(kStatsThreads)
    gumbel_partial_kernel(const float* scores, std::int64_t vocab, const std::int64_t* seed, const std::int64_t* column,
                          std::int64_t seed_stride, std::int64_t index_stride, double* scratch, int chunks) {
  wait_for_previous();
  const std::int64_t r = blockIdx.y;
  const int c = blockIdx.x;
  const std::int64_t chunk = (vocab + chunks - 1) / chunks;
  const std::int64_t c0 = c * chunk, c1 = min(vocab, c0 + chunk);
  const float* row = scores + r * vocab;
  const std::uint64_t stream = mix64(static_cast<std::uint64_t>(seed[r * seed_stride]) +
                                     mix64(static_cast<std::uint64_t>(column[r * seed_stride])));
  double best = 0.0;
  int best_at = -1;
  for (std::int64_t i = c0 + threadIdx.x; i < c1; i += blockDim.x) {
    const std::uint64_t h = mix64(static_cast<std::uint64_t>(r * index_stride + i) + stream);
    const double u = (static_cast<double>(h >> 11) + 0.5) * 0x1p-53;
    const double noisy = static_cast<double>(row[i]) - log(-log(u));
    if (better_arg(noisy, static_cast<int>(i), best, best_at)) best = noisy, best_at = static_cast<int>(i);
  }
  if (block_best(best, best_at)) {
    double* out = scratch + (r * chunks + c) * kGumbelFields;
    out[0] = best;
    out[1] = static_cast<double>(best_at);
  }
}

/// One warp per row: the chunks' best; rows with greedy[r] keep ids[r] (their plain argmax, computed before).
__global__ void gumbel_final_kernel(const double* scratch, int chunks, const bool* greedy, std::int64_t* ids) {
  wait_for_previous();
  const std::int64_t r = blockIdx.x;
  const int lane = threadIdx.x;
  double best = 0.0;
  int best_at = -1;
  for (int c = lane; c < chunks; c += 32) {
    const double* p = scratch + (r * chunks + c) * kGumbelFields;
    const int at = static_cast<int>(p[1]);
    if (better_arg(p[0], at, best, best_at)) best = p[0], best_at = at;
  }
  warp_best(best, best_at);
  if (lane == 0 && !(greedy && greedy[r])) ids[r] = best_at < 0 ? 0 : best_at;
}

constexpr int kAttentionMinKeys = 32;  // the fewest keys a split of decode attention takes

/// The keys [start, end) of split `split` of a row with `length` cached keys: the splits share the row's keys (not
/// the cache's capacity: with 256 of 32 768 positions filled, the first of 64 capacity-sized splits held every key
/// and 4 blocks did the whole layer's work), at least kAttentionMinKeys each; `used` splits hold keys, the others
/// none (they write nothing, and the combine reads only the used parts).
struct SplitKeys {
  std::int64_t start, end;
  int used;
};
__device__ __forceinline__ SplitKeys split_keys(std::int64_t length, int splits, int split) {
  const std::int64_t chunk = max(static_cast<std::int64_t>(kAttentionMinKeys), (length + splits - 1) / splits);
  SplitKeys k;
  k.start = split * chunk;
  k.end = min(length, k.start + chunk);
  k.used = static_cast<int>(min(static_cast<std::int64_t>(splits), (length + chunk - 1) / chunk));
  return k;
}

constexpr int kMaxAttentionSplits = 64;

/// Query head row bh (b * H + head): its `used` parts combined exactly into out, by the whole block (every thread
/// calls it, any block size; the weights exp(m_s - M) and l_s exp(m_s - M) of the parts go through shared memory
/// once, then each thread sums some channels over the parts, their loads independent and streamed past L1).
template <typename T>
__device__ void combine_head(const float* scratch, T* out, int D, int splits, int used, std::int64_t parts,
                             std::int64_t bh) {
  __shared__ float sm_w[kMaxAttentionSplits], sm_lw[kMaxAttentionSplits];
  const int tid = threadIdx.x;
  const float* m = scratch + parts * D + bh * splits;
  const float* l = scratch + parts * D + parts + bh * splits;
  __syncthreads();  // sm_w may still be read for the previous head
  for (int s = tid; s < used; s += blockDim.x) sm_w[s] = __ldcg(m + s);
  __syncthreads();
  float M = -INFINITY;
  for (int s = 0; s < used; ++s) M = fmaxf(M, sm_w[s]);
  __syncthreads();
  for (int s = tid; s < used; s += blockDim.x) {
    const float ms = sm_w[s], e = ms == -INFINITY ? 0.0f : expf(ms - M);
    sm_w[s] = e;
    sm_lw[s] = e == 0.0f ? 0.0f : __ldcg(l + s) * e;
  }
  __syncthreads();
  float sum = 0.0f;
  for (int s = 0; s < used; ++s) sum += sm_lw[s];
  const float* part = scratch + bh * splits * D;
  for (int d = tid; d < D; d += blockDim.x) {
    float a = 0.0f;
#pragma unroll 4
    for (int s = 0; s < used; ++s) a += __ldcg(part + static_cast<std::int64_t>(s) * D + d) * sm_w[s];
    out[bh * D + d] = from_f<T>(sum > 0.0f ? a / sum : 0.0f);
  }
}

/// Channel d of query head `head` of row b for this block's split (blockIdx.z): when the row's keys fit one split,
/// the output (a / sum), otherwise the split's part in scratch (a, and for d == 0 the running max M and the sum; see
/// decode_attention).
template <typename T>
__device__ __forceinline__ void store_part(T* out, float* scratch, const QkvLayout& L, std::int64_t b, int head, int d,
                                           int splits, int used, float a, float M, float sum) {
  const int D = L.head_dim;
  const std::int64_t bh = b * L.heads + head;
  if (used == 1) {
    out[bh * D + d] = from_f<T>(sum > 0.0f ? a / sum : 0.0f);
    return;
  }
  const std::int64_t part = bh * splits + blockIdx.z;
  const std::int64_t parts = static_cast<std::int64_t>(gridDim.y) * L.heads * splits;
  scratch[part * D + d] = a;
  if (d == 0) {
    scratch[parts * D + part] = M;
    scratch[parts * D + parts + part] = sum;
  }
}

constexpr int kAttentionWarps = 4;
constexpr int kAttentionKeys = 4;  // keys whose loads a warp issues before it uses the first

/// Block (kv head, row, split): its G = H/KV query heads against the keys of its split, each warp a block of
/// kAttentionKeys keys in turn (online softmax per warp, one rescale per block), then the warps combined. Lane l holds
/// channels l, l+32, ... (DPL of them).
template <typename T, int DPL, int MAXG>
__global__ void __launch_bounds__(kAttentionWarps * 32)
    decode_attention_kernel(const T* qkv, QkvLayout L, const T* k_cache, const T* v_cache, std::int64_t capacity,
                            const std::int64_t* slots, std::int64_t slot_stride, const bool* valid, float scale, T* out,
                            float* scratch, int splits) {
  wait_for_previous();
  const int kvh = blockIdx.x, split = blockIdx.z;
  const std::int64_t b = blockIdx.y;
  const int G = L.heads / L.kv_heads, D = L.head_dim;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const SplitKeys keys = split_keys(slots[b * slot_stride] + 1, splits, split);
  if (split >= keys.used) return;
  const std::int64_t start = keys.start, end = keys.end;

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
  // A warp takes keys start + warp, + kAttentionWarps, ... in this order (the online softmax's order), reading
  // kAttentionKeys keys' validity flags and K/V rows before it uses the first: one key at a time, each key's flag then
  // its rows were two dependent global reads with nothing else in flight.
  for (std::int64_t j0 = start + warp; j0 < end; j0 += kAttentionWarps * kAttentionKeys) {
    float kv[kAttentionKeys][DPL], vv[kAttentionKeys][DPL];
    bool use[kAttentionKeys];
#pragma unroll
    for (int u = 0; u < kAttentionKeys; ++u) {
      const std::int64_t j = j0 + static_cast<std::int64_t>(u) * kAttentionWarps;
      const std::int64_t at = j < end ? j : j0;  // past the split's end: read key j0 again, unused
      use[u] = j < end && !(row_valid && !row_valid[at]);
#pragma unroll
      for (int i = 0; i < DPL; ++i) {
        const int d = lane + 32 * i;
        kv[u][i] = d < D ? to_f<T>(kh[at * D + d]) : 0.0f;
        vv[u][i] = d < D ? to_f<T>(vh[at * D + d]) : 0.0f;
      }
    }
    // The kAttentionKeys x MAXG scores at once (groups past G have q = 0 and are never written out): their warp sums
    // are independent, so the shuffles overlap instead of one key's one group's five after another.
    float s[kAttentionKeys][MAXG];
#pragma unroll
    for (int u = 0; u < kAttentionKeys; ++u)
#pragma unroll
      for (int g = 0; g < MAXG; ++g) {
        float t = 0.0f;
#pragma unroll
        for (int i = 0; i < DPL; ++i) t += q[g][i] * kv[u][i];
        s[u][g] = t;
      }
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2) {
#pragma unroll
      for (int u = 0; u < kAttentionKeys; ++u) {
#pragma unroll
        for (int g = 0; g < MAXG; ++g) s[u][g] += __shfl_xor_sync(0xffffffffu, s[u][g], offset);
      }
    }
    // Online softmax over the block of keys: one rescale of the running sums per block.
#pragma unroll
    for (int g = 0; g < MAXG; ++g) {
      float mn = m[g];
#pragma unroll
      for (int u = 0; u < kAttentionKeys; ++u)
        if (use[u]) mn = fmaxf(mn, s[u][g]);
      if (mn == -INFINITY) continue;  // no usable key yet
      const float correction = expf(m[g] - mn);
      float p[kAttentionKeys], sum = 0.0f;
#pragma unroll
      for (int u = 0; u < kAttentionKeys; ++u) {
        p[u] = use[u] ? expf(s[u][g] - mn) : 0.0f;
        sum += p[u];
      }
      l[g] = l[g] * correction + sum;
#pragma unroll
      for (int i = 0; i < DPL; ++i) {
        float a = acc[g][i] * correction;
#pragma unroll
        for (int u = 0; u < kAttentionKeys; ++u) a += p[u] * vv[u][i];
        acc[g][i] = a;
      }
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
    store_part(out, scratch, L, b, kvh * G + g, d, splits, keys.used, a, M, sum);
  }
}

/// Block bh (b * H + head): the used parts of query head row bh combined (rows whose keys fit one split were written
/// by decode attention itself).
template <typename T>
__global__ void combine_splits_kernel(const float* scratch, T* out, int heads, int D, int splits, std::int64_t parts,
                                      const std::int64_t* slots, std::int64_t slot_stride) {
  wait_for_previous();
  const std::int64_t bh = blockIdx.x;
  const int used = split_keys(slots[(bh / heads) * slot_stride] + 1, splits, 0).used;
  if (used > 1) combine_head(scratch, out, D, splits, used, parts, bh);
}

constexpr int kTileThreads = 128;
constexpr int kTileKeys = 128;  // keys whose scores a block holds in shared memory at once
constexpr int kTileUnroll = 4;  // keys per thread whose 16-byte loads are in flight together

/// The 16-byte vector v as 16 / sizeof(T) floats.
template <typename T>
__device__ __forceinline__ void unpack16(const uint4& v, float* f) {
  using Pair = typename PairOf<T>::type;
  const unsigned w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    Pair p;
    memcpy(&p, &w[i], 4);
    const float2 x = to_float2(p);
    f[2 * i] = x.x, f[2 * i + 1] = x.y;
  }
}
template <>
__device__ __forceinline__ void unpack16<float>(const uint4& v, float* f) {
  f[0] = __uint_as_float(v.x), f[1] = __uint_as_float(v.y), f[2] = __uint_as_float(v.z), f[3] = __uint_as_float(v.w);
}

/// Block (kv head and MAXG of its query heads, row, split), the "tile" variant of decode attention: `lanes` threads
/// (a power of two, <= 32) share a key, each holding VEC = 16 / sizeof(T) of its channels (one 16-byte load per
/// row), so a block works on kTileThreads / lanes keys at once, kTileUnroll of them per thread in flight. The split's
/// keys go by tiles of kTileKeys: (1) the block's query heads' scores of every key of the tile into shared memory
/// (-inf where masked), (2) per query head the tile's max and the exponentials (one rescale of the running sums per
/// tile), (3) the values weighted by them. Each pass over a tile is one round of loads for up to 32 keys (the warp
/// kernel: one dependent round per four keys per warp). With fewer query heads per block than the kv head has (small
/// batches: more blocks, each a shorter chain) the blocks of a kv head read its keys once each from L2.
template <typename T, int MAXG>
__global__ void __launch_bounds__(kTileThreads)
    decode_attention_tile_kernel(const T* qkv, QkvLayout L, const T* k_cache, const T* v_cache, std::int64_t capacity,
                                 const std::int64_t* slots, std::int64_t slot_stride, const bool* valid, float scale,
                                 T* out, float* scratch, int splits, int lanes) {
  constexpr int VEC = 16 / static_cast<int>(sizeof(T));
  wait_for_previous();
  // blockIdx.x: kv head kvh, and which MAXG of its G query heads (the first g0 + 0 ... NG - 1).
  const int G = L.heads / L.kv_heads, D = L.head_dim, head_groups = static_cast<int>(gridDim.x) / L.kv_heads;
  const int kvh = static_cast<int>(blockIdx.x) / head_groups, g0 = static_cast<int>(blockIdx.x) % head_groups * MAXG;
  const int NG = min(MAXG, G - g0);
  const std::int64_t b = blockIdx.y;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int c = tid % lanes, kg = tid / lanes, keys_at_once = kTileThreads / lanes;
  const bool has_channels = c * VEC < D;
  const SplitKeys keys = split_keys(slots[b * slot_stride] + 1, splits, static_cast<int>(blockIdx.z));
  if (static_cast<int>(blockIdx.z) >= keys.used) return;
  const std::int64_t start = keys.start, end = keys.end;

  __shared__ float sm_p[MAXG][kTileKeys];
  __shared__ float sm_m[MAXG], sm_l[MAXG], sm_corr[MAXG];
  __shared__ float sm_red[kTileThreads * MAXG * VEC];
  if (tid < MAXG) sm_m[tid] = -INFINITY, sm_l[tid] = 0.0f;

  float q[MAXG][VEC], acc[MAXG][VEC];
  const T* qrow = qkv + b * L.token_stride + L.q_offset + c * VEC;
#pragma unroll
  for (int g = 0; g < MAXG; ++g) {
    float f[VEC];
    const uint4 raw =
        g < NG && has_channels
            ? __ldg(reinterpret_cast<const uint4*>(qrow + static_cast<std::int64_t>(kvh * G + g0 + g) * L.q_stride))
            : make_uint4(0, 0, 0, 0);
    unpack16<T>(raw, f);
#pragma unroll
    for (int v = 0; v < VEC; ++v) q[g][v] = f[v] * scale, acc[g][v] = 0.0f;
  }
  const std::int64_t head_base = (b * L.kv_heads + kvh) * capacity * D + c * VEC;
  const T* kh = k_cache + head_base;
  const T* vh = v_cache + head_base;
  const bool* row_valid = valid ? valid + b * capacity : nullptr;
  const int step = keys_at_once * kTileUnroll;

#pragma unroll 1
  for (std::int64_t t0 = start; t0 < end; t0 += kTileKeys) {
    const int n = static_cast<int>(min(static_cast<std::int64_t>(kTileKeys), end - t0));
    // (1) Scores. The loop bound is the same for every thread (the shuffles need the whole warp); a thread's keys
    // past the tile read key t0 again, unused.
#pragma unroll 1
    for (int j0 = 0; j0 < n; j0 += step) {
      uint4 kr[kTileUnroll];
      bool use[kTileUnroll];
#pragma unroll
      for (int u = 0; u < kTileUnroll; ++u) {
        const int j = j0 + kg + u * keys_at_once;
        const std::int64_t at = t0 + (j < n ? j : 0);
        use[u] = j < n && !(row_valid && !row_valid[at]);
        kr[u] = has_channels ? __ldg(reinterpret_cast<const uint4*>(kh + at * D)) : make_uint4(0, 0, 0, 0);
      }
#pragma unroll
      for (int u = 0; u < kTileUnroll; ++u) {
        float kf[VEC], sc[MAXG];
        unpack16<T>(kr[u], kf);
#pragma unroll
        for (int g = 0; g < MAXG; ++g) {
          float t = 0.0f;
#pragma unroll
          for (int v = 0; v < VEC; ++v) t = fmaf(q[g][v], kf[v], t);
          sc[g] = t;
        }
#pragma unroll 1
        for (int o = lanes / 2; o > 0; o /= 2) {
#pragma unroll
          for (int g = 0; g < MAXG; ++g) sc[g] += __shfl_xor_sync(0xffffffffu, sc[g], o);
        }
        const int j = j0 + kg + u * keys_at_once;
        if (c == 0 && j < n) {
#pragma unroll
          for (int g = 0; g < MAXG; ++g)
            if (g < NG) sm_p[g][j] = use[u] ? sc[g] : -INFINITY;
        }
      }
    }
    __syncthreads();
    // (2) Per query head: the running max, the tile's exponentials in place of its scores, the running sum.
#pragma unroll 1
    for (int g = warp; g < NG; g += kTileThreads / 32) {
      float mx = -INFINITY;
#pragma unroll 1
      for (int j = lane; j < n; j += 32) mx = fmaxf(mx, sm_p[g][j]);
      mx = warp_max(mx);
      const float m_old = sm_m[g], m_new = fmaxf(m_old, mx);
      float sum = 0.0f;
#pragma unroll 1
      for (int j = lane; j < n; j += 32) {
        const float p = m_new == -INFINITY ? 0.0f : expf(sm_p[g][j] - m_new);
        sm_p[g][j] = p;
        sum += p;
      }
      sum = warp_sum(sum);
      if (lane == 0) {
        const float corr = m_old == -INFINITY ? 1.0f : expf(m_old - m_new);
        sm_corr[g] = corr;
        sm_l[g] = sm_l[g] * corr + sum;
        sm_m[g] = m_new;
      }
    }
    __syncthreads();
    // (3) The values, weighted.
#pragma unroll
    for (int g = 0; g < MAXG; ++g) {
      const float corr = g < NG ? sm_corr[g] : 1.0f;
#pragma unroll
      for (int v = 0; v < VEC; ++v) acc[g][v] *= corr;
    }
#pragma unroll 1
    for (int j0 = 0; j0 < n; j0 += step) {
      uint4 vr[kTileUnroll];
#pragma unroll
      for (int u = 0; u < kTileUnroll; ++u) {
        const int j = j0 + kg + u * keys_at_once;
        vr[u] =
            has_channels && j < n ? __ldg(reinterpret_cast<const uint4*>(vh + (t0 + j) * D)) : make_uint4(0, 0, 0, 0);
      }
#pragma unroll
      for (int u = 0; u < kTileUnroll; ++u) {
        const int j = j0 + kg + u * keys_at_once;
        if (j >= n) continue;
        float vf[VEC];
        unpack16<T>(vr[u], vf);
#pragma unroll
        for (int g = 0; g < MAXG; ++g) {
          const float p = g < NG ? sm_p[g][j] : 0.0f;
#pragma unroll
          for (int v = 0; v < VEC; ++v) acc[g][v] = fmaf(p, vf[v], acc[g][v]);
        }
      }
    }
    __syncthreads();  // sm_p and sm_corr are the next tile's
  }

  // The key groups' sums of each channel, in order of key group.
  const int row_width = lanes * VEC;
#pragma unroll
  for (int g = 0; g < MAXG; ++g)
#pragma unroll
    for (int v = 0; v < VEC; ++v) sm_red[(kg * MAXG + g) * row_width + c * VEC + v] = acc[g][v];
  __syncthreads();
#pragma unroll 1
  for (int idx = tid; idx < NG * D; idx += kTileThreads) {
    const int g = idx / D, d = idx % D;
    float a = 0.0f;
#pragma unroll 1
    for (int k = 0; k < keys_at_once; ++k) a += sm_red[(k * MAXG + g) * row_width + d];
    store_part(out, scratch, L, b, kvh * G + g0 + g, d, splits, keys.used, a, sm_m[g], sm_l[g]);
  }
}

/// The splits' parts combined by a second kernel.
template <typename T>
void launch_combine(const QkvLayout& L, std::int64_t batch, void* out, int splits, const float* scratch,
                    const std::int64_t* slots, std::int64_t slot_stride, cudaStream_t stream) {
  if (splits == 1) return;
  const std::int64_t parts = batch * L.heads * splits;
  launch(combine_splits_kernel<T>, static_cast<unsigned>(batch * L.heads), std::min(256, ((L.head_dim + 31) / 32) * 32),
         stream, scratch, static_cast<T*>(out), L.heads, L.head_dim, splits, parts, slots, slot_stride);
  check("decode_attention (combine)");
}

/// Calls f(std::integral_constant<int, MAXG>{}) with the fewest of 1, 2, 4, 8 query heads per kv head that holds
/// `groups`; false (calling nothing) past 8.
template <typename F>
bool by_groups(int groups, F&& f) {
  if (groups <= 1)
    f(std::integral_constant<int, 1>{});
  else if (groups <= 2)
    f(std::integral_constant<int, 2>{});
  else if (groups <= 4)
    f(std::integral_constant<int, 4>{});
  else if (groups <= 8)
    f(std::integral_constant<int, 8>{});
  else
    return false;
  return true;
}

/// Everything decode attention's kernels take.
struct AttentionArgs {
  const void* qkv;
  QkvLayout L;
  std::int64_t batch;
  const void* k;
  const void* v;
  std::int64_t capacity;
  const std::int64_t* slots;
  std::int64_t slot_stride;
  const bool* valid;
  float scale;
  void* out;
  int splits;
  float* scratch;
  AttentionChoice choice;
  cudaStream_t stream;
};

/// Query heads per block of the tile kernel (1, 2, 4 or 8): the most that still give ~2 blocks per multiprocessor of
/// an H200 for each split (batch x kv heads x head groups >= 256; measured there: 7B shape 1 head at batch 1, 4 at
/// 32; 0.5B 1 and 2), down to one at small batches, where a block's chain of work over its heads is what a layer
/// waits for. `chosen` (AttentionChoice::heads_per_block, > 0) sets it, capped at the group's size.
int tile_heads_per_block(int groups, std::int64_t batch, int kv_heads, int chosen) {
  int all = 1;
  while (all < groups) all *= 2;
  if (chosen > 0) return std::min(all, chosen);
  int per_block = all;
  while (per_block > 1 && batch * kv_heads * ((groups + per_block - 1) / per_block) < 256) per_block /= 2;
  return per_block;
}

bool aligned16(const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 16 == 0; }

template <typename T>
bool dispatch_attention(const AttentionArgs& a) {
  const QkvLayout& L = a.L;
  const dim3 grid(static_cast<unsigned>(L.kv_heads), static_cast<unsigned>(a.batch), static_cast<unsigned>(a.splits));
  const int groups = L.heads / L.kv_heads;
  constexpr int kVec = 16 / static_cast<int>(sizeof(T));
  const bool tiles = a.choice.tiles && L.head_dim % kVec == 0 && L.head_dim / kVec <= 32 &&
                     L.token_stride % kVec == 0 && L.q_offset % kVec == 0 && L.q_stride % kVec == 0 &&
                     aligned16(a.qkv) && aligned16(a.k) && aligned16(a.v);
  bool launched;
  if (tiles) {
    int lanes = 1;
    while (lanes * kVec < L.head_dim) lanes *= 2;
    const int per_block = tile_heads_per_block(groups, a.batch, L.kv_heads, a.choice.heads_per_block);
    const dim3 tile_grid(static_cast<unsigned>(L.kv_heads * ((groups + per_block - 1) / per_block)),
                         static_cast<unsigned>(a.batch), static_cast<unsigned>(a.splits));
    launched = by_groups(per_block, [&](auto maxg) {
      launch(decode_attention_tile_kernel<T, decltype(maxg)::value>, tile_grid, kTileThreads, a.stream,
             static_cast<const T*>(a.qkv), L, static_cast<const T*>(a.k), static_cast<const T*>(a.v), a.capacity,
             a.slots, a.slot_stride, a.valid, a.scale, static_cast<T*>(a.out), a.scratch, a.splits, lanes);
    });
  } else {
    const int dpl = (L.head_dim + 31) / 32;
    auto warp_kernel = [&](auto dpl_c) {
      return by_groups(groups, [&](auto maxg) {
        launch(decode_attention_kernel<T, decltype(dpl_c)::value, decltype(maxg)::value>, grid, kAttentionWarps * 32,
               a.stream, static_cast<const T*>(a.qkv), L, static_cast<const T*>(a.k), static_cast<const T*>(a.v),
               a.capacity, a.slots, a.slot_stride, a.valid, a.scale, static_cast<T*>(a.out), a.scratch, a.splits);
      });
    };
    if (dpl <= 1)
      launched = warp_kernel(std::integral_constant<int, 1>{});
    else if (dpl <= 2)
      launched = warp_kernel(std::integral_constant<int, 2>{});
    else if (dpl <= 4)
      launched = warp_kernel(std::integral_constant<int, 4>{});
    else if (dpl <= 8)
      launched = warp_kernel(std::integral_constant<int, 8>{});
    else
      launched = false;
  }
  if (!launched) return false;
  check("decode_attention");
  launch_combine<T>(L, a.batch, a.out, a.splits, a.scratch, a.slots, a.slot_stride, a.stream);
  return true;
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
    launch(add_rms_norm_kernel<T>, static_cast<unsigned>(rows), norm_threads(cols), stream, static_cast<T*>(residual),
           static_cast<const T*>(delta), static_cast<T*>(out), static_cast<const T*>(weight), cols, eps);
    check("add_rms_norm");
  }
};
template <typename T>
struct LayerNorm {
  static void run(const void* x, void* out, const void* weight, const void* bias, std::int64_t rows, std::int64_t cols,
                  float eps, cudaStream_t stream) {
    launch(layer_norm_kernel<T>, static_cast<unsigned>(rows), norm_threads(cols), stream, static_cast<const T*>(x),
           static_cast<T*>(out), static_cast<const T*>(weight), static_cast<const T*>(bias), cols, eps);
    check("layer_norm");
  }
};
template <typename T>
struct Rotary {
  static void run(void* qkv, const QkvLayout& L, std::int64_t tokens, const std::int64_t* positions,
                  const float* inv_freq, int rot, cudaStream_t stream) {
    launch(rotary_kernel<T>, static_cast<unsigned>(tokens), 128, stream, static_cast<T*>(qkv), L, positions, inv_freq,
           rot);
    check("rotary");
  }
};
template <typename T>
struct Swiglu {
  static void run(const void* gate_up, void* out, std::int64_t rows, std::int64_t inner, cudaStream_t stream) {
    const std::int64_t n = rows * inner;
    const auto blocks = static_cast<unsigned>(std::min<std::int64_t>((n + 255) / 256, 65535));
    launch(swiglu_kernel<T>, blocks, 256, stream, static_cast<const T*>(gate_up), static_cast<T*>(out), rows, inner);
    check("swiglu");
  }
};
template <typename T>
struct KvAppend {
  static void run(const void* qkv, const QkvLayout& L, std::int64_t batch, void* k, void* v, std::int64_t capacity,
                  const std::int64_t* slots, std::int64_t slot_stride, cudaStream_t stream) {
    launch(kv_append_kernel<T>, static_cast<unsigned>(batch), 128, stream, static_cast<const T*>(qkv), L,
           static_cast<T*>(k), static_cast<T*>(v), capacity, slots, slot_stride);
    check("kv_append");
  }
};
template <typename T>
struct RotaryKvAppend {
  static void run(void* qkv, const QkvLayout& L, std::int64_t batch, const std::int64_t* positions,
                  const float* inv_freq, int rot, void* k, void* v, std::int64_t capacity, const std::int64_t* slots,
                  std::int64_t slot_stride, cudaStream_t stream) {
    const int items = L.heads * (rot / 2) + L.kv_heads * L.head_dim;
    const dim3 grid(static_cast<unsigned>(batch), static_cast<unsigned>(std::min(32, (items + 127) / 128)));
    launch(rotary_kv_append_kernel<T>, grid, 128, stream, static_cast<T*>(qkv), L, positions, inv_freq, rot,
           static_cast<T*>(k), static_cast<T*>(v), capacity, slots, slot_stride);
    check("rotary_kv_append");
  }
};
template <typename T>
struct Gemv {
  static void run(const void* x, const void* w, const void* bias, void* out, bool float_out, std::int64_t rows,
                  std::int64_t n, std::int64_t k, cudaStream_t stream) {
    if (float_out)
      launch_gemv<T, kGemvFloatOut, 2, 4>(x, w, bias, out, rows, n, k, stream);
    else if (k >= kGemvSplitK)
      launch_gemv<T, kGemvPlain, 2, 4, kGemvWarps>(x, w, bias, out, rows, n, k, stream);
    else
      launch_gemv<T, kGemvPlain, 2, 4>(x, w, bias, out, rows, n, k, stream);
  }
};
template <typename T>
struct GemvSwiglu {
  static void run(const void* x, const void* w, const void* bias, void* out, std::int64_t rows, std::int64_t inner,
                  std::int64_t k, cudaStream_t stream) {
    launch_gemv<T, kGemvSwiglu, 2, 4>(x, w, bias, out, rows, inner, k, stream);
  }
};
template <typename T>
struct Attention {
  static bool run(const AttentionArgs& a) { return dispatch_attention<T>(a); }
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

void kv_append(const void* qkv, const QkvLayout& layout, std::int64_t batch, void* k_cache, void* v_cache,
               std::int64_t capacity, const std::int64_t* slots, std::int64_t slot_stride, ScalarType type,
               void* stream) {
  if (batch > 0)
    by_type<KvAppend>(type, qkv, layout, batch, k_cache, v_cache, capacity, slots, slot_stride,
                      static_cast<cudaStream_t>(stream));
}

void rotary_kv_append(void* qkv, const QkvLayout& layout, std::int64_t batch, const std::int64_t* positions,
                      const float* inv_freq, int rotary_dim, void* k_cache, void* v_cache, std::int64_t capacity,
                      const std::int64_t* slots, std::int64_t slot_stride, ScalarType type, void* stream) {
  if (batch > 0)
    by_type<RotaryKvAppend>(type, qkv, layout, batch, positions, inv_freq, rotary_dim >= 2 ? rotary_dim : 0, k_cache,
                            v_cache, capacity, slots, slot_stride, static_cast<cudaStream_t>(stream));
}

namespace {
bool gemv_fits(const void* x, const void* w, std::int64_t rows, std::int64_t k, ScalarType type) {
  const std::int64_t per_vector = type == ScalarType::Float32 ? 4 : 8;
  return rows >= 1 && rows <= kGemvMaxRows && k > 0 && k % per_vector == 0 && aligned16(x) && aligned16(w);
}
}  // namespace

bool gemv(const void* x, const void* w, const void* bias, void* out, bool float_out, std::int64_t rows, std::int64_t n,
          std::int64_t k, ScalarType type, void* stream) {
  if (!gemv_fits(x, w, rows, k, type) || n <= 0) return false;
  by_type<Gemv>(type, x, w, bias, out, float_out, rows, n, k, static_cast<cudaStream_t>(stream));
  return true;
}

bool gemv_swiglu(const void* x, const void* w, const void* bias, void* out, std::int64_t rows, std::int64_t inner,
                 std::int64_t k, ScalarType type, void* stream) {
  if (!gemv_fits(x, w, rows, k, type) || inner <= 0) return false;
  by_type<GemvSwiglu>(type, x, w, bias, out, rows, inner, k, static_cast<cudaStream_t>(stream));
  return true;
}

namespace {
int token_stats_chunks(std::int64_t rows, std::int64_t vocab) {
  const std::int64_t by_occupancy = (264 + std::max<std::int64_t>(rows, 1) - 1) / std::max<std::int64_t>(rows, 1);
  const std::int64_t by_length = (vocab + 2047) / 2048;  // at least 2048 logits per block
  return static_cast<int>(std::max<std::int64_t>(1, std::min<std::int64_t>({by_occupancy, by_length, 64})));
}

/// The chunks per row of the token statistics / Gumbel kernels, after the limits of their grids (`what` names the
/// caller in the error).
int row_chunks(const char* what, std::int64_t rows, std::int64_t vocab) {
  if (vocab > 0x7fffffff) throw std::invalid_argument(std::string(what) + ": a vocabulary over 2^31 entries");
  if (rows > 65535) throw std::invalid_argument(std::string(what) + ": more than 65535 rows");
  return token_stats_chunks(rows, vocab);
}
}  // namespace

std::int64_t token_stats_scratch(std::int64_t rows, std::int64_t vocab) {
  return rows * token_stats_chunks(rows, vocab) * kStatsFields;
}

void token_stats(float* logits, std::int64_t rows, std::int64_t vocab, std::int64_t usable, const float* suppress,
                 std::int64_t suppress_stride, float* log_z, float* entropy, std::int64_t* argmax, float* logprob,
                 float* scratch, void* stream) {
  if (rows <= 0 || vocab <= 0) return;
  const int chunks = row_chunks("token_stats", rows, vocab);
  const auto s = static_cast<cudaStream_t>(stream);
  launch(token_stats_partial_kernel, dim3(static_cast<unsigned>(chunks), static_cast<unsigned>(rows)), kStatsThreads, s,
         logits, vocab, usable, suppress, suppress_stride, scratch, chunks);
  check("token_stats");
  launch(token_stats_final_kernel, static_cast<unsigned>(rows), 32, s, logits, vocab, scratch, chunks, log_z, entropy,
         argmax, logprob);
  check("token_stats (final)");
}

std::int64_t gumbel_scratch(std::int64_t rows, std::int64_t vocab) {
  return rows * token_stats_chunks(rows, vocab) * kGumbelFields;
}

void gumbel_choose(const float* scores, std::int64_t rows, std::int64_t vocab, const std::int64_t* seed,
                   const std::int64_t* column, bool noise_per_row, const bool* greedy, std::int64_t* ids,
                   double* scratch, void* stream) {
  if (rows <= 0 || vocab <= 0) return;
  const int chunks = row_chunks("gumbel_choose", rows, vocab);
  const auto s = static_cast<cudaStream_t>(stream);
  launch(gumbel_partial_kernel, dim3(static_cast<unsigned>(chunks), static_cast<unsigned>(rows)), kStatsThreads, s,
         scores, vocab, seed, column, std::int64_t{noise_per_row ? 1 : 0}, noise_per_row ? std::int64_t{0} : vocab,
         scratch, chunks);
  check("gumbel_choose");
  launch(gumbel_final_kernel, static_cast<unsigned>(rows), 32, s, scratch, chunks, greedy, ids);
  check("gumbel_choose (final)");
}

bool decode_attention(const void* qkv, const QkvLayout& layout, std::int64_t batch, const void* k_cache,
                      const void* v_cache, std::int64_t capacity, const std::int64_t* slots, std::int64_t slot_stride,
                      const bool* valid, float scale, void* out, int splits, float* scratch,
                      const AttentionChoice& choice, ScalarType type, void* stream) {
  if (layout.head_dim > 256 || layout.kv_heads <= 0 || layout.heads % layout.kv_heads != 0 ||
      layout.heads / layout.kv_heads > 8 || splits < 1 || splits > kMaxAttentionSplits || (splits > 1 && !scratch))
    return false;
  const AttentionArgs args{qkv,      layout, batch,       k_cache, v_cache,
                           capacity, slots,  slot_stride, valid,   scale,
                           out,      splits, scratch,     choice,  static_cast<cudaStream_t>(stream)};
  return by_type<Attention>(type, args);
}

int decode_attention_splits(std::int64_t batch, int kv_heads, std::int64_t capacity, const AttentionChoice& choice) {
  if (choice.splits > 0) return std::min(choice.splits, kMaxAttentionSplits);
  // ~2 blocks per multiprocessor of a 132-SM GPU for each (row, kv head), rounded down: on the H200 the 7B shape at
  // batch 32 (128 of them) ran at 6053 tok/s with 2 splits, 5794 with 3, 5645 with 6 (docs/benchmarks.md).
  const std::int64_t blocks = std::max<std::int64_t>(1, batch * kv_heads);
  const std::int64_t by_occupancy = 264 / blocks;
  const std::int64_t by_length = (capacity + 31) / 32;  // at least 32 keys per split
  return static_cast<int>(
      std::max<std::int64_t>(1, std::min<std::int64_t>({by_occupancy, by_length, kMaxAttentionSplits})));
}

AttentionChoice attention_choice_from_env() {
  AttentionChoice c;
  auto refuse = [](const char* name, const std::string& value, const char* expected) {
    throw std::invalid_argument(std::string(name) + "=" + value + ": expected " + expected);
  };
  if (const char* v = std::getenv("LAL_CUDA_ATTENTION"); v && *v) {
    const std::string s(v);
    if (s != "tile" && s != "warp") refuse("LAL_CUDA_ATTENTION", s, "tile or warp");
    c.tiles = s == "tile";
  }
  if (const char* v = std::getenv("LAL_CUDA_ATTENTION_HEADS"); v && *v) {
    const std::string s(v);
    if (s != "1" && s != "2" && s != "4" && s != "8") refuse("LAL_CUDA_ATTENTION_HEADS", s, "1, 2, 4 or 8");
    c.heads_per_block = std::stoi(s);
  }
  if (const char* v = std::getenv("LAL_CUDA_ATTENTION_SPLITS"); v && *v) {
    char* end = nullptr;
    const long n = std::strtol(v, &end, 10);
    if (*end || n < 1 || n > kMaxAttentionSplits)
      refuse("LAL_CUDA_ATTENTION_SPLITS", v, ("1 to " + std::to_string(kMaxAttentionSplits)).c_str());
    c.splits = static_cast<int>(n);
  }
  return c;
}

// ---- training kernels (kernels.hpp, "training") --------------------------------------------------------------

namespace {

constexpr int kTrainThreads = 256;
constexpr std::int64_t kRmsWeightRows = 64;  // rows per partial sum of the RMSNorm weight's gradient

/// One warp per row: grad_x and the row's rsqrt(mean(x^2) + eps) (for the weight's gradient).
template <typename T>
__global__ void rms_norm_backward_rows_kernel(const T* x, const T* weight, const T* grad_out, T* grad_x, float* rstd,
                                              std::int64_t rows, std::int64_t cols, float eps) {
  wait_for_previous();
  const std::int64_t r = static_cast<std::int64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (r >= rows) return;
  const T* xr = x + r * cols;
  const T* dy = grad_out + r * cols;
  float squares = 0.0f, dot = 0.0f;  // sum x^2, sum (dy * w) * x
  for (std::int64_t i = lane; i < cols; i += 32) {
    const float v = to_f<T>(xr[i]);
    squares += v * v;
    dot += to_f<T>(dy[i]) * to_f<T>(weight[i]) * v;
  }
  squares = warp_sum(squares);
  dot = warp_sum(dot);
  const float inv_cols = 1.0f / static_cast<float>(cols);
  const float rs = rsqrtf(squares * inv_cols + eps);
  const float c = rs * rs * rs * dot * inv_cols;  // r^3 mean(dn x) = r mean(dn n)
  T* dx = grad_x + r * cols;
  for (std::int64_t i = lane; i < cols; i += 32)
    dx[i] = from_f<T>(rs * to_f<T>(dy[i]) * to_f<T>(weight[i]) - to_f<T>(xr[i]) * c);
  if (lane == 0) rstd[r] = rs;
}

/// The weight's gradient over one chunk of kRmsWeightRows rows, one column per thread: sum dy * round(x * rstd).
template <typename T>
__global__ void rms_norm_weight_grad_kernel(const T* x, const T* grad_out, const float* rstd, float* partial,
                                            std::int64_t rows, std::int64_t cols) {
  wait_for_previous();
  const std::int64_t col = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (col >= cols) return;
  const std::int64_t begin = static_cast<std::int64_t>(blockIdx.y) * kRmsWeightRows;
  const std::int64_t end = begin + kRmsWeightRows < rows ? begin + kRmsWeightRows : rows;
  float acc = 0.0f;
  for (std::int64_t r = begin; r < end; ++r)
    acc += to_f<T>(grad_out[r * cols + col]) * rnd<T>(to_f<T>(x[r * cols + col]) * rstd[r]);
  partial[blockIdx.y * cols + col] = acc;
}

template <typename T>
__global__ void swiglu_backward_kernel(const T* gate_up, const T* grad_out, T* grad_gate_up, std::int64_t rows,
                                       std::int64_t inner) {
  wait_for_previous();
  const std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (i >= inner) return;
  for (std::int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
    const float g = to_f<T>(gate_up[r * 2 * inner + i]), u = to_f<T>(gate_up[r * 2 * inner + inner + i]);
    const float dy = to_f<T>(grad_out[r * inner + i]);
    const float s = 1.0f / (1.0f + expf(-g));
    grad_gate_up[r * 2 * inner + i] = from_f<T>(dy * u * (s * (1.0f + g * (1.0f - s))));
    grad_gate_up[r * 2 * inner + inner + i] = from_f<T>(dy * rnd<T>(g * s));
  }
}

/// Eight consecutive elements at p (16-byte aligned for 2-byte types, 32 for float32) as float32, and back.
template <typename T>
__device__ __forceinline__ void load8(const T* p, float* f) {
  if constexpr (sizeof(T) == 2) {
    const uint4 u = *reinterpret_cast<const uint4*>(p);
    const T* h = reinterpret_cast<const T*>(&u);
#pragma unroll
    for (int k = 0; k < 8; ++k) f[k] = to_f<T>(h[k]);
  } else {
    const float4 a = *reinterpret_cast<const float4*>(p), b = *reinterpret_cast<const float4*>(p + 4);
    f[0] = a.x, f[1] = a.y, f[2] = a.z, f[3] = a.w, f[4] = b.x, f[5] = b.y, f[6] = b.z, f[7] = b.w;
  }
}
template <typename T>
__device__ __forceinline__ void store8(T* p, const float* f) {
  if constexpr (sizeof(T) == 2) {
    uint4 u;
    T* h = reinterpret_cast<T*>(&u);
#pragma unroll
    for (int k = 0; k < 8; ++k) h[k] = from_f<T>(f[k]);
    *reinterpret_cast<uint4*>(p) = u;
  } else {
    *reinterpret_cast<float4*>(p) = make_float4(f[0], f[1], f[2], f[3]);
    *reinterpret_cast<float4*>(p + 4) = make_float4(f[4], f[5], f[6], f[7]);
  }
}

/// Running (max, sum exp(x - max), sum exp((x - max) * inv_t)) of a row; merge() combines two.
struct RowStats {
  float m = -INFINITY, s = 0.0f, st = 0.0f;
  __device__ __forceinline__ void merge(float om, float os, float ost, float inv_t) {
    const float nm = fmaxf(m, om);
    if (nm == -INFINITY) return;
    s = (m == -INFINITY ? 0.0f : s * __expf(m - nm)) + (om == -INFINITY ? 0.0f : os * __expf(om - nm));
    st = (m == -INFINITY ? 0.0f : st * __expf((m - nm) * inv_t)) +
         (om == -INFINITY ? 0.0f : ost * __expf((om - nm) * inv_t));
    m = nm;
  }
  /// The warp's statistics merged; every lane gets them.
  __device__ __forceinline__ void warp_merge(float inv_t) {
    for (int o = 16; o > 0; o >>= 1)
      merge(__shfl_xor_sync(0xffffffffu, m, o), __shfl_xor_sync(0xffffffffu, s, o), __shfl_xor_sync(0xffffffffu, st, o),
            inv_t);
  }
  /// Adds n values (n <= 8): one rescale for the group.
  __device__ __forceinline__ void add(const float* f, int n, float inv_t, bool two) {
    float gm = -INFINITY;
    for (int k = 0; k < n; ++k) gm = fmaxf(gm, f[k]);
    if (gm == -INFINITY) return;
    if (gm > m) {
      if (m != -INFINITY) {
        s *= __expf(m - gm);
        if (two) st *= __expf((m - gm) * inv_t);
      }
      m = gm;
    }
    for (int k = 0; k < n; ++k) {
      s += __expf(f[k] - m);
      if (two) st += __expf((f[k] - m) * inv_t);
    }
  }
};

template <typename T>
__global__ void logit_row_stats_kernel(const T* logits, std::int64_t cols, float inv_t, bool vec, float* row_max,
                                       float* log_sum, float* log_sum_t) {
  wait_for_previous();
  const T* row = logits + blockIdx.x * cols;
  const bool two = inv_t != 1.0f;
  RowStats a;
  float f[8];
  if (vec) {
    for (std::int64_t i = threadIdx.x * 8; i < cols; i += blockDim.x * 8) {
      load8<T>(row + i, f);
      a.add(f, 8, inv_t, two);
    }
  } else {
    for (std::int64_t i = threadIdx.x; i < cols; i += blockDim.x) {
      f[0] = to_f<T>(row[i]);
      a.add(f, 1, inv_t, two);
    }
  }
  if (!two) a.st = a.s;
  a.warp_merge(inv_t);
  __shared__ float pm[32], ps[32], pst[32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  if (lane == 0) pm[warp] = a.m, ps[warp] = a.s, pst[warp] = a.st;
  __syncthreads();
  if (warp == 0) {
    RowStats b;
    if (lane < warps) b.m = pm[lane], b.s = ps[lane], b.st = pst[lane];
    b.warp_merge(inv_t);
    if (lane == 0) {
      row_max[blockIdx.x] = b.m;
      log_sum[blockIdx.x] = logf(b.s);
      log_sum_t[blockIdx.x] = logf(b.st);
    }
  }
}

template <typename T, bool vec>
__global__ void logit_softmax_gradient_kernel(T* logits, std::int64_t rows, std::int64_t cols, const float* row_max,
                                              const float* log_sum, const float* log_sum_t, float inv_t, float ce_coef,
                                              const float* kd_coef) {
  wait_for_previous();
  constexpr int per = vec ? 8 : 1;
  const std::int64_t i = (blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x) * per;
  if (i >= cols) return;
  for (std::int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
    const float m = row_max[r], shift = m + log_sum[r], lst = log_sum_t[r];
    const float kd = kd_coef ? kd_coef[r] : 0.0f;
    T* p = logits + r * cols + i;
    float f[8];
    if constexpr (vec)
      load8<T>(p, f);
    else
      f[0] = to_f<T>(*p);
#pragma unroll
    for (int k = 0; k < per; ++k) {
      float g = ce_coef * __expf(f[k] - shift);
      if (kd != 0.0f) g += kd * __expf((f[k] - m) * inv_t - lst);
      f[k] = g;
    }
    if constexpr (vec)
      store8<T>(p, f);
    else
      *p = from_f<T>(f[0]);
  }
}

/// Two consecutive elements at p (aligned to two elements) as float32, and back.
template <typename T>
__device__ __forceinline__ float2 load2(const T* p) {
  if constexpr (sizeof(T) == 2) {
    const unsigned u = *reinterpret_cast<const unsigned*>(p);
    const T* h = reinterpret_cast<const T*>(&u);
    return make_float2(to_f<T>(h[0]), to_f<T>(h[1]));
  } else {
    return *reinterpret_cast<const float2*>(p);
  }
}
template <typename T>
__device__ __forceinline__ void store2(T* p, float a, float b) {
  if constexpr (sizeof(T) == 2) {
    unsigned u;
    T* h = reinterpret_cast<T*>(&u);
    h[0] = from_f<T>(a);
    h[1] = from_f<T>(b);
    *reinterpret_cast<unsigned*>(p) = u;
  } else {
    *reinterpret_cast<float2*>(p) = make_float2(a, b);
  }
}

/// The rotary kernels' launch shape: a block is (head_dim / 2) x kRotaryTokensY threads, each thread two consecutive
/// channels of one head in kRotaryUnroll tokens (all their loads issued before the first store: a thread with one
/// token's 8 bytes in flight leaves the memory system idle); blockIdx.y is the head (of the outputs forward, of the
/// fused row backward), blockIdx.x strides over the tokens.
constexpr int kRotaryUnroll = 4;
struct RotaryShape {
  dim3 grid, block;
  RotaryShape(std::int64_t tokens, int heads_in_y, int head_dim) {
    const int pairs = head_dim / 2, per_block = std::max(1, 256 / pairs);
    const std::int64_t tokens_per_block = static_cast<std::int64_t>(per_block) * kRotaryUnroll;
    block = dim3(static_cast<unsigned>(pairs), static_cast<unsigned>(per_block));
    grid =
        dim3(static_cast<unsigned>(std::min<std::int64_t>((tokens + tokens_per_block - 1) / tokens_per_block, 1 << 20)),
             static_cast<unsigned>(heads_in_y));
  }
};

/// The rotary kernels' tokens: a thread takes blocks of kRotaryUnroll tokens, the first at rotary_first_token(), the
/// next rotary_token_step() further (grid-stride); token u of a block is rotary_token(t0, u).
__device__ __forceinline__ std::int64_t rotary_first_token() {
  return static_cast<std::int64_t>(blockIdx.x) * blockDim.y * kRotaryUnroll + threadIdx.y;
}
__device__ __forceinline__ std::int64_t rotary_token_step() {
  return static_cast<std::int64_t>(gridDim.x) * blockDim.y * kRotaryUnroll;
}
__device__ __forceinline__ std::int64_t rotary_token(std::int64_t t0, int u) {
  return t0 + u * static_cast<std::int64_t>(blockDim.y);
}

/// Channels ch, ch + 1 (ch even) of a head at p and of its rotary partner (ch + half or ch - half), as float32: the
/// partner pair in one load when half is even, else two.
template <typename T>
__device__ __forceinline__ float2 load_partner(const T* p, int partner, bool paired) {
  if (paired) return load2<T>(p + partner);
  return make_float2(to_f<T>(p[partner]), to_f<T>(p[partner + 1]));
}

/// Forward: a token's fused projection row [q heads | k heads | v heads] (H + 2 KV heads of D) -> q, k, v [H * D]
/// each, q and k rotated on their first `rot` channels, k and v heads repeated for the H / KV query heads of their
/// group (grouped-query attention's expansion). With signed sin s: out[c] = x[c] cos[c] + x[partner(c)] s[c],
/// partner(c) = c + rot/2 in the first half, c - rot/2 in the second; each product rounded, then the sum, as the
/// LibTorch ops. Launched as RotaryShape(tokens, 3 * heads, head_dim): blockIdx.y = part * heads + head, part 0 q,
/// 1 k, 2 v.
template <typename T>
__global__ void rotary_train_forward_kernel(const T* row_data, T* q, T* k, T* v, std::int64_t tokens, int heads,
                                            int kv_heads, int head_dim, int rot, const T* cos, const T* ssin) {
  wait_for_previous();
  const int half = rot / 2, group = heads / kv_heads;
  const int part = static_cast<int>(blockIdx.y) / heads, h = static_cast<int>(blockIdx.y) - part * heads;
  const int src_head = part == 0 ? h : part == 1 ? heads + h / group : heads + kv_heads + h / group;
  const int ch = 2 * static_cast<int>(threadIdx.x);
  const int partner = ch < half ? ch + half : ch - half;
  const bool copy = part == 2 || ch >= rot, paired = half % 2 == 0;  // rot even: ch, ch + 1 both rotated or copied
  const std::int64_t hd = static_cast<std::int64_t>(heads) * head_dim, row = hd + 2LL * kv_heads * head_dim;
  T* const out_of_part = part == 0 ? q : part == 1 ? k : v;
  for (std::int64_t t0 = rotary_first_token(); t0 < tokens; t0 += rotary_token_step()) {
    float2 x[kRotaryUnroll], y[kRotaryUnroll], c[kRotaryUnroll], s[kRotaryUnroll];
#pragma unroll
    for (int u = 0; u < kRotaryUnroll; ++u) {
      const std::int64_t t = rotary_token(t0, u);
      if (t >= tokens) break;
      const T* src = row_data + t * row + static_cast<std::int64_t>(src_head) * head_dim;
      x[u] = load2<T>(src + ch);
      if (!copy) {
        y[u] = load_partner<T>(src, partner, paired);
        c[u] = load2<T>(cos + t * rot + ch);
        s[u] = load2<T>(ssin + t * rot + ch);
      }
    }
#pragma unroll
    for (int u = 0; u < kRotaryUnroll; ++u) {
      const std::int64_t t = rotary_token(t0, u);
      if (t >= tokens) break;
      T* out = out_of_part + t * hd + static_cast<std::int64_t>(h) * head_dim + ch;
      if (copy) {
        store2<T>(out, x[u].x, x[u].y);
      } else {
        store2<T>(out, __fadd_rn(rnd<T>(__fmul_rn(x[u].x, c[u].x)), rnd<T>(__fmul_rn(y[u].x, s[u].x))),
                  __fadd_rn(rnd<T>(__fmul_rn(x[u].y, c[u].y)), rnd<T>(__fmul_rn(y[u].y, s[u].y))));
      }
    }
  }
}

/// Backward of rotary_train_forward_kernel: the gradients of q, k, v [H * D] -> the row's gradient. A group's k/v head
/// gradients g are summed, then the transposed rotation: dx[c] = g[c] cos[c] + g[partner(c)] s[partner(c)], in
/// float32, rounded once. Launched as RotaryShape(tokens, heads + 2 * kv_heads, head_dim): blockIdx.y is the head of
/// the fused row.
template <typename T>
__global__ void rotary_train_backward_kernel(T* row_grad, const T* dq, const T* dk, const T* dv, std::int64_t tokens,
                                             int heads, int kv_heads, int head_dim, int rot, const T* cos,
                                             const T* ssin) {
  wait_for_previous();
  const int half = rot / 2, group = heads / kv_heads, head = static_cast<int>(blockIdx.y);
  const int ch = 2 * static_cast<int>(threadIdx.x);
  const int partner = ch < half ? ch + half : ch - half;
  const std::int64_t hd = static_cast<std::int64_t>(heads) * head_dim, row = hd + 2LL * kv_heads * head_dim;
  const T* d;
  int first_head, count;
  if (head < heads) {
    d = dq, first_head = head, count = 1;
  } else if (head < heads + kv_heads) {
    d = dk, first_head = (head - heads) * group, count = group;
  } else {
    d = dv, first_head = (head - heads - kv_heads) * group, count = group;
  }
  const bool plain = head >= heads + kv_heads || ch >= rot, paired = half % 2 == 0;  // v, or past the rotary channels
  for (std::int64_t t0 = rotary_first_token(); t0 < tokens; t0 += rotary_token_step()) {
    float2 g[kRotaryUnroll], gp[kRotaryUnroll], c[kRotaryUnroll], s[kRotaryUnroll];
#pragma unroll
    for (int u = 0; u < kRotaryUnroll; ++u) {
      const std::int64_t t = rotary_token(t0, u);
      if (t >= tokens) break;
      const T* dt = d + t * hd + static_cast<std::int64_t>(first_head) * head_dim;
      g[u] = make_float2(0.0f, 0.0f), gp[u] = make_float2(0.0f, 0.0f);
      for (int j = 0; j < count; ++j) {
        const float2 a = load2<T>(dt + static_cast<std::int64_t>(j) * head_dim + ch);
        g[u].x += a.x, g[u].y += a.y;
        if (!plain) {
          const float2 b = load_partner<T>(dt + static_cast<std::int64_t>(j) * head_dim, partner, paired);
          gp[u].x += b.x, gp[u].y += b.y;
        }
      }
      if (!plain) {
        c[u] = load2<T>(cos + t * rot + ch);
        s[u] = load_partner<T>(ssin + t * rot, partner, paired);
      }
    }
#pragma unroll
    for (int u = 0; u < kRotaryUnroll; ++u) {
      const std::int64_t t = rotary_token(t0, u);
      if (t >= tokens) break;
      T* r = row_grad + t * row + static_cast<std::int64_t>(head) * head_dim + ch;
      if (plain)
        store2<T>(r, g[u].x, g[u].y);
      else
        store2<T>(r, g[u].x * c[u].x + gp[u].x * s[u].x, g[u].y * c[u].y + gp[u].y * s[u].y);
    }
  }
}

/// swiglu_kernel / swiglu_backward_kernel eight elements at a time (inner % 8 == 0, rows 16-byte aligned): the
/// same arithmetic per element.
template <typename T>
__global__ void swiglu_vec_kernel(const T* gate_up, T* out, std::int64_t rows, std::int64_t inner) {
  wait_for_previous();
  const std::int64_t per_row = inner / 8, n = rows * per_row;
  for (std::int64_t idx = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; idx < n;
       idx += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t r = idx / per_row, i = (idx - r * per_row) * 8;
    float g[8], u[8];
    load8<T>(gate_up + r * 2 * inner + i, g);
    load8<T>(gate_up + r * 2 * inner + inner + i, u);
#pragma unroll
    for (int k = 0; k < 8; ++k) g[k] = __fmul_rn(rnd<T>(g[k] / (1.0f + expf(-g[k]))), u[k]);
    store8<T>(out + r * inner + i, g);
  }
}

template <typename T>
__global__ void swiglu_backward_vec_kernel(const T* gate_up, const T* grad_out, T* grad_gate_up, std::int64_t rows,
                                           std::int64_t inner) {
  wait_for_previous();
  const std::int64_t per_row = inner / 8, n = rows * per_row;
  for (std::int64_t idx = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; idx < n;
       idx += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t r = idx / per_row, i = (idx - r * per_row) * 8;
    float g[8], u[8], dy[8];
    load8<T>(gate_up + r * 2 * inner + i, g);
    load8<T>(gate_up + r * 2 * inner + inner + i, u);
    load8<T>(grad_out + r * inner + i, dy);
#pragma unroll
    for (int k = 0; k < 8; ++k) {
      const float s = 1.0f / (1.0f + expf(-g[k]));
      const float du = dy[k] * rnd<T>(g[k] * s);
      g[k] = dy[k] * u[k] * (s * (1.0f + g[k] * (1.0f - s)));
      u[k] = du;
    }
    store8<T>(grad_gate_up + r * 2 * inner + i, g);
    store8<T>(grad_gate_up + r * 2 * inner + inner + i, u);
  }
}

/// Blocks of kTrainThreads for a grid-stride loop over n items (~8 blocks per multiprocessor of a 132-SM GPU at most).
unsigned stride_blocks(std::int64_t n) {
  return static_cast<unsigned>(
      std::max<std::int64_t>(1, std::min<std::int64_t>((n + kTrainThreads - 1) / kTrainThreads, 1056)));
}

/// Whether rows of `cols` elements starting at `p` take the 8-wide loads (every row start aligned).
template <typename T>
bool eight_wide(const void* p, std::int64_t cols) {
  return cols % 8 == 0 && reinterpret_cast<std::uintptr_t>(p) % (8 * sizeof(T)) == 0;
}

unsigned row_grid(std::int64_t rows) { return static_cast<unsigned>(std::min<std::int64_t>(rows, 65535)); }

template <typename T>
struct RmsNormBackward {
  static void run(const void* x, const void* w, const void* dy, void* dx, float* rstd, float* partial,
                  std::int64_t rows, std::int64_t cols, float eps, cudaStream_t stream) {
    const std::int64_t warps = kTrainThreads / 32;
    launch(rms_norm_backward_rows_kernel<T>, static_cast<unsigned>((rows + warps - 1) / warps), kTrainThreads, stream,
           static_cast<const T*>(x), static_cast<const T*>(w), static_cast<const T*>(dy), static_cast<T*>(dx), rstd,
           rows, cols, eps);
    check("rms_norm_backward");
    const dim3 grid(static_cast<unsigned>((cols + kTrainThreads - 1) / kTrainThreads),
                    static_cast<unsigned>(rms_norm_backward_blocks(rows)));
    launch(rms_norm_weight_grad_kernel<T>, grid, kTrainThreads, stream, static_cast<const T*>(x),
           static_cast<const T*>(dy), static_cast<const float*>(rstd), partial, rows, cols);
    check("rms_norm_backward (weight)");
  }
};
/// swiglu(): eight elements at a time where the rows allow it, else one (the same values either way).
template <typename T>
struct SwigluAny {
  static void run(const void* gate_up, void* out, std::int64_t rows, std::int64_t inner, cudaStream_t stream) {
    if (!(eight_wide<T>(gate_up, 2 * inner) && eight_wide<T>(out, inner)))
      return Swiglu<T>::run(gate_up, out, rows, inner, stream);
    launch(swiglu_vec_kernel<T>, stride_blocks(rows * inner / 8), kTrainThreads, stream, static_cast<const T*>(gate_up),
           static_cast<T*>(out), rows, inner);
    check("swiglu");
  }
};
template <typename T>
struct SwigluBackward {
  static void run(const void* gate_up, const void* dy, void* d, std::int64_t rows, std::int64_t inner,
                  cudaStream_t stream) {
    if (eight_wide<T>(gate_up, 2 * inner) && eight_wide<T>(dy, inner) && eight_wide<T>(d, 2 * inner)) {
      launch(swiglu_backward_vec_kernel<T>, stride_blocks(rows * inner / 8), kTrainThreads, stream,
             static_cast<const T*>(gate_up), static_cast<const T*>(dy), static_cast<T*>(d), rows, inner);
    } else {
      const dim3 grid(static_cast<unsigned>((inner + kTrainThreads - 1) / kTrainThreads), row_grid(rows));
      launch(swiglu_backward_kernel<T>, grid, kTrainThreads, stream, static_cast<const T*>(gate_up),
             static_cast<const T*>(dy), static_cast<T*>(d), rows, inner);
    }
    check("swiglu_backward");
  }
};
template <typename T>
struct LogitRowStats {
  static void run(const void* logits, std::int64_t rows, std::int64_t cols, float inv_t, float* m, float* ls,
                  float* lst, cudaStream_t stream) {
    launch(logit_row_stats_kernel<T>, static_cast<unsigned>(rows), 512, stream, static_cast<const T*>(logits), cols,
           inv_t, eight_wide<T>(logits, cols), m, ls, lst);
    check("logit_row_stats");
  }
};
template <typename T>
struct LogitSoftmaxGradient {
  static void run(void* logits, std::int64_t rows, std::int64_t cols, const float* m, const float* ls, const float* lst,
                  float inv_t, float ce_coef, const float* kd_coef, cudaStream_t stream) {
    const bool vec = eight_wide<T>(logits, cols);
    const std::int64_t per_block = kTrainThreads * (vec ? 8 : 1);
    const dim3 grid(static_cast<unsigned>((cols + per_block - 1) / per_block), row_grid(rows));
    if (vec)
      launch(logit_softmax_gradient_kernel<T, true>, grid, kTrainThreads, stream, static_cast<T*>(logits), rows, cols,
             m, ls, lst, inv_t, ce_coef, kd_coef);
    else
      launch(logit_softmax_gradient_kernel<T, false>, grid, kTrainThreads, stream, static_cast<T*>(logits), rows, cols,
             m, ls, lst, inv_t, ce_coef, kd_coef);
    check("logit_softmax_gradient");
  }
};

template <typename T>
struct RotaryTrain {
  static void run(void* row_data, void* q, void* k, void* v, std::int64_t tokens, int heads, int kv_heads, int head_dim,
                  int rot, const void* cos, const void* ssin, bool backward, cudaStream_t stream) {
    if (backward) {
      const RotaryShape shape(tokens, heads + 2 * kv_heads, head_dim);
      launch(rotary_train_backward_kernel<T>, shape.grid, shape.block, stream, static_cast<T*>(row_data),
             static_cast<const T*>(q), static_cast<const T*>(k), static_cast<const T*>(v), tokens, heads, kv_heads,
             head_dim, rot, static_cast<const T*>(cos), static_cast<const T*>(ssin));
    } else {
      const RotaryShape shape(tokens, 3 * heads, head_dim);
      launch(rotary_train_forward_kernel<T>, shape.grid, shape.block, stream, static_cast<const T*>(row_data),
             static_cast<T*>(q), static_cast<T*>(k), static_cast<T*>(v), tokens, heads, kv_heads, head_dim, rot,
             static_cast<const T*>(cos), static_cast<const T*>(ssin));
    }
    check("rotary_train");
  }
};

}  // namespace

int rms_norm_backward_blocks(std::int64_t rows) {
  return static_cast<int>(std::max<std::int64_t>(1, (rows + kRmsWeightRows - 1) / kRmsWeightRows));
}

void rms_norm_backward(const void* x, const void* weight, const void* grad_out, void* grad_x, float* rstd,
                       float* grad_weight_partial, std::int64_t rows, std::int64_t cols, float eps, ScalarType type,
                       void* stream) {
  if (rms_norm_backward_blocks(rows) > 65535) throw std::invalid_argument("rms_norm_backward: too many rows");
  if (rows > 0 && cols > 0)
    by_type<RmsNormBackward>(type, x, weight, grad_out, grad_x, rstd, grad_weight_partial, rows, cols, eps,
                             static_cast<cudaStream_t>(stream));
}

void swiglu_backward(const void* gate_up, const void* grad_out, void* grad_gate_up, std::int64_t rows,
                     std::int64_t inner, ScalarType type, void* stream) {
  if (rows > 0 && inner > 0)
    by_type<SwigluBackward>(type, gate_up, grad_out, grad_gate_up, rows, inner, static_cast<cudaStream_t>(stream));
}

void logit_row_stats(const void* logits, std::int64_t rows, std::int64_t cols, float inv_temperature, float* row_max,
                     float* log_sum, float* log_sum_t, ScalarType type, void* stream) {
  if (rows > 0x7fffffff) throw std::invalid_argument("logit_row_stats: more than 2^31 rows");
  if (rows > 0)
    by_type<LogitRowStats>(type, logits, rows, cols, inv_temperature, row_max, log_sum, log_sum_t,
                           static_cast<cudaStream_t>(stream));
}

void logit_softmax_gradient(void* logits, std::int64_t rows, std::int64_t cols, const float* row_max,
                            const float* log_sum, const float* log_sum_t, float inv_temperature, float ce_coef,
                            const float* kd_coef, ScalarType type, void* stream) {
  if (rows > 0 && cols > 0)
    by_type<LogitSoftmaxGradient>(type, logits, rows, cols, row_max, log_sum, log_sum_t, inv_temperature, ce_coef,
                                  kd_coef, static_cast<cudaStream_t>(stream));
}

void rotary_train(void* row_data, void* q, void* k, void* v, std::int64_t tokens, int heads, int kv_heads, int head_dim,
                  int rotary_dim, const void* cos, const void* signed_sin, bool backward, ScalarType type,
                  void* stream) {
  if (heads <= 0 || kv_heads <= 0 || heads % kv_heads != 0 || rotary_dim % 2 != 0 || rotary_dim > head_dim ||
      head_dim % 2 != 0 || head_dim > 2048 || 3LL * heads > 65535)
    throw std::invalid_argument(
        "rotary_train: heads must be a multiple of kv_heads (at most 21845), head_dim even and at most 2048, "
        "rotary_dim even and <= head_dim");
  if (tokens > 0)
    by_type<RotaryTrain>(type, row_data, q, k, v, tokens, heads, kv_heads, head_dim, rotary_dim, cos, signed_sin,
                         backward, static_cast<cudaStream_t>(stream));
}

void swiglu(const void* gate_up, void* out, std::int64_t rows, std::int64_t inner, ScalarType type, void* stream) {
  if (rows > 0) by_type<SwigluAny>(type, gate_up, out, rows, inner, static_cast<cudaStream_t>(stream));
}

}  // namespace lal::lm::cuda
