// One decoder layer of a CPU decode step over raw buffers (decode_layer.hpp).
#include "decode_layer.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>

namespace lal::lm::cpu {

namespace {

float bf16_to_float(std::uint16_t v) {
  const std::uint32_t bits = static_cast<std::uint32_t>(v) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

/// The values of `f` as float32: f's own buffer when it is float32, else converted into `scratch`; null for none.
const float* as_floats(const Floats& f, std::int64_t n, std::vector<float>& scratch) {
  if (!f.data) return nullptr;
  if (!f.bf16) return static_cast<const float*>(f.data);
  scratch.resize(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) scratch[static_cast<std::size_t>(i)] = f[i];
  return scratch.data();
}

/// A [rows, cols] block of the cache as a weight for the kernels.
WeightView cache_view(const void* base, bool bf16, std::int64_t offset, std::int64_t rows, std::int64_t cols) {
  WeightView v;
  v.format = bf16 ? WeightFormat::BF16 : WeightFormat::F32;
  v.rows = rows, v.cols = cols;
  v.data = bf16 ? static_cast<const void*>(static_cast<const std::uint16_t*>(base) + offset)
                : static_cast<const void*>(static_cast<const float*>(base) + offset);
  return v;
}

/// x[0, rotary_dim) <- x * cos + swap_halves(x) * signed_sin, the LibTorch ops' products and sum in their order.
void rotate(float* x, const float* cos, const float* signed_sin, std::int64_t rotary_dim, float* tmp) {
  const std::int64_t half = rotary_dim / 2;
  std::memcpy(tmp, x, static_cast<std::size_t>(rotary_dim) * sizeof(float));
  for (std::int64_t j = 0; j < rotary_dim; ++j) {
    const float a = tmp[j] * cos[j];
    const float b = tmp[j < half ? j + half : j - half] * signed_sin[j];
    x[j] = a + b;
  }
}

void store_row(void* base, bool bf16, std::int64_t offset, const float* x, std::int64_t n) {
  if (bf16) {
    auto* out = static_cast<std::uint16_t*>(base) + offset;
    for (std::int64_t i = 0; i < n; ++i) out[i] = float_to_bf16(x[i]);
  } else {
    std::memcpy(static_cast<float*>(base) + offset, x, static_cast<std::size_t>(n) * sizeof(float));
  }
}

}  // namespace

float Floats::operator[](std::int64_t i) const {
  return bf16 ? bf16_to_float(static_cast<const std::uint16_t*>(data)[i]) : static_cast<const float*>(data)[i];
}

void Pool::run(std::int64_t n, std::int64_t grain, const std::function<void(std::int64_t, std::int64_t)>& body) const {
  if (n <= 0) return;
  if (threads <= 1 || !parallel_for || n <= grain) return body(0, n);
  parallel_for(n, grain, body);
}

void parallel_matmul(const WeightView& w, const float* x, std::int64_t m, const float* bias, float* y, Isa isa,
                     const Pool& pool) {
  // Chunks of whole 4-row blocks (the kernels' row block), ~8 per thread so that a thread that starts late or
  // stalls leaves its share to the others (worker_pool.hpp), at least 64 rows (a chunk's weight streams for a while).
  const std::int64_t threads = std::max(1, pool.threads);
  const std::int64_t grain = std::max<std::int64_t>(64, (w.rows / (8 * threads) + 3) / 4 * 4);
  if (integer_dot_applies(w) && int8_activations()) {  // x quantised once, on the calling thread, for every part
    thread_local Int8Rows buffer;
    Int8Rows& quantized = buffer;  // the caller's: a thread_local named inside the lambda would be each worker's own
    quantize_activations(x, m, w.cols, w.group, quantized);
    pool.run(w.rows, grain, [&](std::int64_t begin, std::int64_t end) {
      matmul_rows_int8(w, quantized, bias, y, w.rows, begin, end, isa);
    });
    return;
  }
  pool.run(w.rows, grain,
           [&](std::int64_t begin, std::int64_t end) { matmul_rows(w, x, m, bias, y, w.rows, begin, end, isa); });
}

void rms_norm_rows(const float* x, std::int64_t rows, std::int64_t cols, const Floats& w, float eps, float* out) {
  for (std::int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * cols;
    float* o = out + r * cols;
    double sum = 0.0;
    for (std::int64_t c = 0; c < cols; ++c) sum += static_cast<double>(xr[c]) * xr[c];
    const float mean = static_cast<float>(sum / static_cast<double>(cols));
    const float scale = 1.0f / std::sqrt(mean + eps);
    for (std::int64_t c = 0; c < cols; ++c) o[c] = w[c] * (xr[c] * scale);
  }
}

void decode_layer(const DecodeShape& s, const DecodeLayerWeights& w, const DecodeRows& rows, float* h, Isa isa,
                  const Pool& pool) {
  const std::int64_t B = s.batch, E = s.hidden, H = s.heads, KV = s.kv_heads, D = s.head_dim, I = s.intermediate;
  const std::int64_t G = H / KV, width = (H + 2 * KV) * D;
  if (KV <= 0 || H % KV || s.rotary_dim > D || s.rotary_dim % 2)
    throw std::invalid_argument("decode_layer: unsupported head layout");
  std::vector<float> normed(static_cast<std::size_t>(B * E)), qkv(static_cast<std::size_t>(B * width)),
      attn(static_cast<std::size_t>(B * H * D)), delta(static_cast<std::size_t>(B * E)),
      gate_up(static_cast<std::size_t>(B * 2 * I)), bias_scratch;

  // Attention block: norm, q/k/v, rotary on q and k heads, k/v into the cache.
  rms_norm_rows(h, B, E, w.attn_norm, s.norm_eps, normed.data());
  parallel_matmul(w.qkv, normed.data(), B, as_floats(w.qkv_bias, width, bias_scratch), qkv.data(), isa, pool);
  std::vector<float> tmp(static_cast<std::size_t>(D));
  for (std::int64_t b = 0; b < B; ++b) {
    float* row = qkv.data() + b * width;
    for (std::int64_t head = 0; head < H + KV; ++head)
      rotate(row + head * D, rows.cos + b * s.rotary_dim, rows.signed_sin + b * s.rotary_dim, s.rotary_dim, tmp.data());
    for (std::int64_t kvh = 0; kvh < KV; ++kvh) {
      const std::int64_t at = ((b * KV + kvh) * s.capacity + rows.write_slot[static_cast<std::size_t>(b)]) * D;
      store_row(w.keys, s.cache_bf16, at, row + (H + kvh) * D, D);
      store_row(w.values, s.cache_bf16, at, row + (H + KV + kvh) * D, D);
    }
  }

  // Grouped-query attention over the cache in place: the G query heads of kv head `kvh` are G rows against its keys.
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(D)));
  pool.run(B * KV, 1, [&](std::int64_t begin, std::int64_t end) {
    std::vector<float> scores;
    for (std::int64_t task = begin; task < end; ++task) {
      const std::int64_t b = task / KV, kvh = task % KV, S = rows.keys[static_cast<std::size_t>(b)];
      const std::int64_t offset = (b * KV + kvh) * s.capacity * D;
      const float* q = qkv.data() + b * width + kvh * G * D;
      scores.resize(static_cast<std::size_t>(G * S));
      matmul_rows(cache_view(w.keys, s.cache_bf16, offset, S, D), q, G, nullptr, scores.data(), S, 0, S, isa);
      const bool* mask = rows.mask ? rows.mask + b * rows.mask_stride : nullptr;
      for (std::int64_t g = 0; g < G; ++g) {
        float* p = scores.data() + g * S;
        float top = -std::numeric_limits<float>::infinity();
        for (std::int64_t k = 0; k < S; ++k) {
          p[k] = (mask && !mask[k]) ? -std::numeric_limits<float>::infinity() : p[k] * scale;
          top = std::max(top, p[k]);
        }
        float sum = 0.0f;
        for (std::int64_t k = 0; k < S; ++k) sum += (p[k] = std::exp(p[k] - top));
        for (std::int64_t k = 0; k < S; ++k) p[k] /= sum;  // no visible key: NaN, as LibTorch's softmax gives
      }
      weighted_row_sum(cache_view(w.values, s.cache_bf16, offset, S, D), scores.data(), G, S,
                       attn.data() + (b * H + kvh * G) * D, isa);
    }
  });
  parallel_matmul(w.o, attn.data(), B, as_floats(w.o_bias, E, bias_scratch), delta.data(), isa, pool);
  for (std::int64_t i = 0; i < B * E; ++i) h[i] = h[i] + delta[static_cast<std::size_t>(i)];

  // MLP block: norm, gate/up, SwiGLU (silu(gate) * up), down, residual.
  rms_norm_rows(h, B, E, w.mlp_norm, s.norm_eps, normed.data());
  parallel_matmul(w.gate_up, normed.data(), B, as_floats(w.gate_up_bias, 2 * I, bias_scratch), gate_up.data(), isa,
                  pool);
  std::vector<float> gated(static_cast<std::size_t>(B * I));
  pool.run(B * I, 1024, [&](std::int64_t begin, std::int64_t end) {  // the exps are worth two threads
    for (std::int64_t k = begin; k < end; ++k) {
      const std::int64_t b = k / I, i = k % I;
      const float g = gate_up[static_cast<std::size_t>(b * 2 * I + i)];
      const float silu = g / (1.0f + std::exp(-g));
      gated[static_cast<std::size_t>(k)] = silu * gate_up[static_cast<std::size_t>(b * 2 * I + I + i)];
    }
  });
  parallel_matmul(w.down, gated.data(), B, as_floats(w.down_bias, E, bias_scratch), delta.data(), isa, pool);
  for (std::int64_t i = 0; i < B * E; ++i) h[i] = h[i] + delta[static_cast<std::size_t>(i)];
}

}  // namespace lal::lm::cpu
