// lal::lm::cpu — one decoder layer of a CPU decode step (one new token per sequence) in plain C++ over raw buffers:
// no LibTorch here.
//
// WHY: a decode step through LibTorch's ops runs ~60 small operators per layer (norms, rotary, views, casts, the
// attention's batched products and softmax), each a few microseconds of dispatch and allocation; on a 2-core CPU that
// was ~half of a step next to reading the weights. Here a layer of the pre-norm gated family (Llama, Qwen2, Phi-3:
// RMSNorm, q/k/v projection, rotate-half rotary, K/V append, grouped-query attention over the cache read in place,
// o projection, residual, RMSNorm, gate/up projection, SwiGLU, down projection, residual) is a few loops over the
// residual stream, with the products in the matvec kernels (matvec.hpp) split over the caller's pool.
//
// NUMERICS: activations, norms, rotary, softmax and SwiGLU in float32, the products with float32 accumulation, as the
// LibTorch float32 path computes them (the same operations in the same order, except the order inside sums: logits
// agree within ~1e-5, tested against that path). With bfloat16 weights the activations stay float32 and each product
// multiplies them rounded to bfloat16 (matvec.hpp: llama.cpp's BF16 arithmetic; LibTorch's bfloat16 path rounds every
// intermediate to bfloat16); the KV cache keeps its dtype (bfloat16 values rounded to nearest even), and the attention
// scores of a bfloat16 cache multiply q rounded to bfloat16 too (a product with the cache as its weight).
//
// THREADING: decode_layer() runs on the calling thread and splits products and attention groups through `Pool`.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "matvec.hpp"

namespace lal::lm::cpu {

/// The caller's thread pool: parallel_for(n, grain, body) runs body(begin, end) over chunks of `grain` (the last may
/// be shorter) covering [0, n), and returns when all are done. Empty: everything runs on the calling thread.
struct Pool {
  int threads = 1;
  std::function<void(std::int64_t n, std::int64_t grain, const std::function<void(std::int64_t, std::int64_t)>&)>
      parallel_for;
  void run(std::int64_t n, std::int64_t grain, const std::function<void(std::int64_t, std::int64_t)>& body) const;
};

/// y[i*w.rows + r] = x[i*w.cols ...] · W[r] (+ bias[r]) for all rows r and i in [0, m): matmul_rows split by weight
/// rows over the pool in blocks of 4 rows. Int8/Int4 weights: x quantised to int8 per group once
/// (quantize_activations), then matmul_rows_int8 (integer dot products, llama.cpp's arithmetic; see matvec.hpp),
/// unless LAL_CPU_INT_DOT=float (int8_activations()).
void parallel_matmul(const WeightView& w, const float* x, std::int64_t m, const float* bias, float* y, Isa isa,
                     const Pool& pool);

/// A float32 or bfloat16 vector (norm weights, biases), or none (data null).
struct Floats {
  const void* data = nullptr;
  bool bf16 = false;
  float operator[](std::int64_t i) const;
};

/// One layer's weights and KV cache.
struct DecodeLayerWeights {
  Floats attn_norm, mlp_norm, qkv_bias, o_bias, gate_up_bias, down_bias;
  WeightView qkv, o, gate_up, down;  ///< qkv rows [q heads | k heads | v heads]; gate_up rows [gate | up]
  void* keys = nullptr;              ///< the layer's cache [B, kv_heads, capacity, head_dim]
  void* values = nullptr;
};

struct DecodeShape {
  std::int64_t batch = 0, hidden = 0, heads = 0, kv_heads = 0, head_dim = 0, intermediate = 0, rotary_dim = 0,
               capacity = 0;
  float norm_eps = 1e-6f;
  bool cache_bf16 = false;  ///< the KV cache holds bfloat16 (else float32)
};

/// Per sequence b: the rotation of its new token, where its k/v go, which cached keys it attends to.
struct DecodeRows {
  const float* cos = nullptr;            ///< [B, rotary_dim]
  const float* signed_sin = nullptr;     ///< [B, rotary_dim]: [-sin | sin] (rotate-half's sign folded in)
  std::vector<std::int64_t> write_slot;  ///< [B]: cache slot of the new token
  std::vector<std::int64_t> keys;        ///< [B]: slots [0, keys[b]) are attended to (where the mask allows)
  const bool* mask = nullptr;            ///< mask[b * mask_stride + s]: slot s may be attended to; null: all
  std::int64_t mask_stride = 0;
};

/// h [B, hidden] (the residual stream, float32) through one layer of the pre-norm gated family (see above).
void decode_layer(const DecodeShape& shape, const DecodeLayerWeights& w, const DecodeRows& rows, float* h, Isa isa,
                  const Pool& pool);

/// out[r, :] = w * (x[r, :] * 1/sqrt(mean(x[r, :]^2) + eps)) in float32 (transformers' RMSNorm order).
void rms_norm_rows(const float* x, std::int64_t rows, std::int64_t cols, const Floats& w, float eps, float* out);

}  // namespace lal::lm::cpu
