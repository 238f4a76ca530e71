// CPU matrix-times-few-vectors kernels (see matvec.hpp). Each ISA has its own functions compiled with a target
// attribute, so one binary runs everywhere and uses what the CPU has. The loops are the same in every ISA: a block
// of weight rows at a time (independent accumulator chains), per quantisation group a float32 partial dot product
// of the unpacked integers with x, then that partial sum times the group's scale.
#include "matvec.hpp"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define LAL_CPU_X86 1
#else
#define LAL_CPU_X86 0
#endif

namespace lal::lm::cpu {

float half_to_float(std::uint16_t h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  std::uint32_t exponent = (h >> 10) & 0x1fu, mantissa = h & 0x3ffu, bits = 0;
  if (exponent == 0x1f) {
    bits = sign | 0x7f800000u | (mantissa << 13);  // inf / nan
  } else if (exponent != 0) {
    bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
  } else if (mantissa == 0) {
    bits = sign;
  } else {  // subnormal half: normalise
    int shift = 0;
    while (!(mantissa & 0x400u)) mantissa <<= 1, ++shift;
    bits = sign | (static_cast<std::uint32_t>(113 - shift) << 23) | ((mantissa & 0x3ffu) << 13);
  }
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

namespace {

bool quantized(WeightFormat f) { return f == WeightFormat::Int8 || f == WeightFormat::Int4; }

/// W[r, c] as stored (integers before their scale).
float stored_value(const WeightView& w, std::int64_t r, std::int64_t c) {
  const std::int64_t i = r * w.cols + c;
  switch (w.format) {
    case WeightFormat::F32: return static_cast<const float*>(w.data)[i];
    case WeightFormat::BF16: {
      const std::uint32_t bits = static_cast<std::uint32_t>(static_cast<const std::uint16_t*>(w.data)[i]) << 16;
      float f;
      std::memcpy(&f, &bits, sizeof f);
      return f;
    }
    case WeightFormat::Int8: return static_cast<float>(static_cast<const std::int8_t*>(w.data)[i]);
    case WeightFormat::Int4: {
      const std::uint8_t byte = static_cast<const std::uint8_t*>(w.data)[i / 2];
      return static_cast<float>(static_cast<int>((c & 1) ? byte >> 4 : byte & 15) - 8);
    }
  }
  return 0.0f;
}

// ---- portable ---------------------------------------------------------------------------------------------------

void rows_portable(const WeightView& w, const float* x, std::int64_t m, const float* bias, float* y,
                   std::int64_t y_stride, std::int64_t r0, std::int64_t r1) {
  const bool quant = quantized(w.format);
  const std::int64_t group = quant ? w.group : w.cols, groups = w.cols / group;
  for (std::int64_t r = r0; r < r1; ++r)
    for (std::int64_t i = 0; i < m; ++i) {
      const float* xi = x + i * w.cols;
      float total = 0.0f;
      for (std::int64_t g = 0; g < groups; ++g) {
        float lanes[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        const std::int64_t c0 = g * group, c1 = c0 + group, vec_end = c0 + (group / 8) * 8;
        for (std::int64_t c = c0; c < vec_end; c += 8)
          for (int j = 0; j < 8; ++j) lanes[j] += stored_value(w, r, c + j) * xi[c + j];
        float part = ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
        for (std::int64_t c = vec_end; c < c1; ++c) part += stored_value(w, r, c) * xi[c];
        total += quant ? part * half_to_float(w.scales[r * groups + g]) : part;
      }
      y[i * y_stride + r] = total + (bias ? bias[r] : 0.0f);
    }
}

#if LAL_CPU_X86
// ---- AVX2 + FMA + F16C: 8 lanes, 16 columns per step ------------------------------------------------------------
// GCC takes the target from `#pragma GCC target`; clang ignores that pragma and takes `#pragma clang attribute`.
#ifdef __clang__
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#endif
namespace avx2 {
struct S {
  using Vec = __m256;
  static constexpr int kStep = 16;  // columns per load(): two vectors
  static Vec zero() { return _mm256_setzero_ps(); }
  static Vec load_x(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, Vec v) { _mm256_storeu_ps(p, v); }
  static Vec fma(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
  static Vec broadcast(float s) { return _mm256_set1_ps(s); }
  static float scale(std::uint16_t h) { return _cvtsh_ss(h); }
  static float sum(Vec v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
  }
  template <WeightFormat F>
  static const float* prepare_x(const float* x, std::int64_t, std::int64_t) {
    return x;
  }
  /// Columns [c, c + 16) of row `r` as two float vectors (stored values, before the group scale).
  template <WeightFormat F>
  static void load(const WeightView& w, std::int64_t r, std::int64_t c, Vec& a, Vec& b) {
    const std::int64_t i = r * w.cols + c;
    if constexpr (F == WeightFormat::F32) {
      const float* p = static_cast<const float*>(w.data) + i;
      a = _mm256_loadu_ps(p), b = _mm256_loadu_ps(p + 8);
    } else if constexpr (F == WeightFormat::BF16) {
      const auto* p = static_cast<const std::uint16_t*>(w.data) + i;
      __m256i lo = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
      __m256i hi = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 8)));
      a = _mm256_castsi256_ps(_mm256_slli_epi32(lo, 16)), b = _mm256_castsi256_ps(_mm256_slli_epi32(hi, 16));
    } else if constexpr (F == WeightFormat::Int8) {
      __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const std::int8_t*>(w.data) + i));
      a = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q));
      b = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(q, 8)));
    } else {
      // 8 bytes = 16 nibbles; widen each byte to 16 bits and move its high nibble into the upper byte: the 16 bytes
      // are then the 16 columns in order; minus 8 makes them signed.
      __m128i t = _mm_cvtepu8_epi16(
          _mm_loadl_epi64(reinterpret_cast<const __m128i*>(static_cast<const std::uint8_t*>(w.data) + i / 2)));
      __m128i v = _mm_or_si128(_mm_and_si128(t, _mm_set1_epi16(0x000f)),
                               _mm_and_si128(_mm_slli_epi16(t, 4), _mm_set1_epi16(0x0f00)));
      v = _mm_sub_epi8(v, _mm_set1_epi8(8));
      a = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v));
      b = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(v, 8)));
    }
  }
};
#include "matvec_loops.inc"
}  // namespace avx2
#ifdef __clang__
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

// ---- AVX-512 (F, BW, VL, DQ) + FMA + F16C: 16 lanes, 32 columns per step ------------------------------------------
#ifdef __clang__
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c"))), \
                             apply_to = function)
#else
#pragma GCC push_options
// GCC 12's AVX-512 intrinsics build "undefined" vectors as `__m512 __Y = __Y;`, which -Wmaybe-uninitialized
// reports inside every inlined intrinsic: a false positive in the compiler's own header.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")
#endif
namespace avx512 {
struct S {
  using Vec = __m512;
  static constexpr int kStep = 32;
  static Vec zero() { return _mm512_setzero_ps(); }
  static Vec load_x(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, Vec v) { _mm512_storeu_ps(p, v); }
  static Vec fma(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
  static Vec broadcast(float s) { return _mm512_set1_ps(s); }
  static float scale(std::uint16_t h) { return _cvtsh_ss(h); }
  static float sum(Vec v) { return _mm512_reduce_add_ps(v); }
  template <WeightFormat F>
  static void load(const WeightView& w, std::int64_t r, std::int64_t c, Vec& a, Vec& b) {
    const std::int64_t i = r * w.cols + c;
    if constexpr (F == WeightFormat::F32) {
      const float* p = static_cast<const float*>(w.data) + i;
      a = _mm512_loadu_ps(p), b = _mm512_loadu_ps(p + 16);
    } else if constexpr (F == WeightFormat::BF16) {
      const auto* p = static_cast<const std::uint16_t*>(w.data) + i;
      __m512i lo = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
      __m512i hi = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 16)));
      a = _mm512_castsi512_ps(_mm512_slli_epi32(lo, 16)), b = _mm512_castsi512_ps(_mm512_slli_epi32(hi, 16));
    } else if constexpr (F == WeightFormat::Int8) {
      const auto* p = static_cast<const std::int8_t*>(w.data) + i;
      a = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
      b = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16))));
    } else {
      // 16 bytes = 32 nibbles: each byte widened to a 32-bit lane, its low nibble (even column) and high nibble (odd
      // column) looked up in a 16-entry table of their values (nibble - 8). `a` holds the even columns, `b` the odd
      // ones: prepare_x() below hands x to the loops in that order.
      const __m512 values = _mm512_setr_ps(-8, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7);
      __m512i bytes = _mm512_cvtepu8_epi32(
          _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const std::uint8_t*>(w.data) + i / 2)));
      a = _mm512_permutexvar_ps(_mm512_and_si512(bytes, _mm512_set1_epi32(15)), values);
      b = _mm512_permutexvar_ps(_mm512_srli_epi32(bytes, 4), values);
    }
  }
  /// x as the loops read it: for Int4, each 32 columns as [16 even | 16 odd] (see load), in a per-thread buffer.
  template <WeightFormat F>
  static const float* prepare_x(const float* x, std::int64_t m, std::int64_t cols) {
    if constexpr (F != WeightFormat::Int4) {
      return x;
    } else {
      thread_local std::vector<float> split;
      split.resize(static_cast<std::size_t>(m * cols));
      for (std::int64_t c = 0; c < m * cols; c += 32)
        for (int k = 0; k < 16; ++k) {
          split[static_cast<std::size_t>(c + k)] = x[c + 2 * k];
          split[static_cast<std::size_t>(c + 16 + k)] = x[c + 2 * k + 1];
        }
      return split.data();
    }
  }
};
#include "matvec_loops.inc"
}  // namespace avx512
#ifdef __clang__
#pragma clang attribute pop
#else
#pragma GCC diagnostic pop
#pragma GCC pop_options
#endif
#endif

Isa parse_isa_env() {
  const char* v = std::getenv("LAL_CPU_ISA");
  const Isa best = detected_isa();
  if (!v || !*v) return best;
  const std::string s = v;
  Isa want;
  if (s == "portable") {
    want = Isa::Portable;
  } else if (s == "avx2") {
    want = Isa::Avx2;
  } else if (s == "avx512") {
    want = Isa::Avx512;
  } else {
    throw std::invalid_argument("LAL_CPU_ISA='" + s + "': expected portable, avx2 or avx512");
  }
  return std::min(want, best);
}

}  // namespace

Isa detected_isa() {
#if LAL_CPU_X86
  static const Isa isa = [] {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("fma"))
      return Isa::Avx512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::Avx2;
    return Isa::Portable;
  }();
  return isa;
#else
  return Isa::Portable;
#endif
}

Isa active_isa() {
  static const Isa isa = parse_isa_env();
  return isa;
}

int isa_count() { return static_cast<int>(detected_isa()) + 1; }

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::Avx512: return "avx512";
    case Isa::Avx2: return "avx2";
    case Isa::Portable: return "portable";
  }
  return "?";
}

void dequantize_rows(const WeightView& w, std::int64_t row_begin, std::int64_t row_end, float* out) {
  if (!quantized(w.format) || w.group <= 0 || w.cols % w.group)
    throw std::invalid_argument("dequantize_rows: expected an int8/int4 weight whose width is whole groups");
  const std::int64_t cols = w.cols, groups = cols / w.group;
  for (std::int64_t r = row_begin; r < row_end; ++r) {
    float* o = out + (r - row_begin) * cols;
    for (std::int64_t g = 0; g < groups; ++g) {
      const float s = half_to_float(w.scales[r * groups + g]);
      const std::int64_t c0 = g * w.group;
      if (w.format == WeightFormat::Int8) {
        const std::int8_t* q = static_cast<const std::int8_t*>(w.data) + r * cols + c0;
        for (std::int64_t c = 0; c < w.group; ++c) o[c0 + c] = static_cast<float>(q[c]) * s;
      } else {  // group is even (quantize.hpp): whole bytes
        const std::uint8_t* q = static_cast<const std::uint8_t*>(w.data) + (r * cols + c0) / 2;
        for (std::int64_t c = 0; c < w.group / 2; ++c) {
          o[c0 + 2 * c] = static_cast<float>(static_cast<int>(q[c] & 15) - 8) * s;
          o[c0 + 2 * c + 1] = static_cast<float>(static_cast<int>(q[c] >> 4) - 8) * s;
        }
      }
    }
  }
}

void weighted_row_sum(const WeightView& w, const float* p, std::int64_t m, std::int64_t p_stride, float* out, Isa isa) {
  if (w.format != WeightFormat::F32 && w.format != WeightFormat::BF16)
    throw std::invalid_argument("weighted_row_sum: expected a float32 or bfloat16 matrix");
  isa = std::min(isa, detected_isa());
#if LAL_CPU_X86
  if (isa == Isa::Avx512) return avx512::weighted_sum(w, p, m, p_stride, out);
  if (isa == Isa::Avx2) return avx2::weighted_sum(w, p, m, p_stride, out);
#endif
  for (std::int64_t i = 0; i < m; ++i)
    for (std::int64_t c = 0; c < w.cols; ++c) {
      float s = 0.0f;
      for (std::int64_t r = 0; r < w.rows; ++r) s += p[i * p_stride + r] * stored_value(w, r, c);
      out[i * w.cols + c] = s;
    }
}

void matmul_rows(const WeightView& w, const float* x, std::int64_t m, const float* bias, float* y,
                 std::int64_t y_stride, std::int64_t row_begin, std::int64_t row_end, Isa isa) {
  if (quantized(w.format) && (w.group <= 0 || w.cols % w.group))
    throw std::invalid_argument("matmul_rows: quantised weight with " + std::to_string(w.cols) + " columns and group " +
                                std::to_string(w.group));
  isa = std::min(isa, detected_isa());
#if LAL_CPU_X86
  // The SIMD loops step over whole groups: a group must hold whole steps (32 columns for AVX-512, 16 for AVX2).
  if (isa == Isa::Avx512 && (!quantized(w.format) || w.group % avx512::S::kStep == 0))
    return avx512::rows(w, x, m, bias, y, y_stride, row_begin, row_end);
  if (isa >= Isa::Avx2 && (!quantized(w.format) || w.group % avx2::S::kStep == 0))
    return avx2::rows(w, x, m, bias, y, y_stride, row_begin, row_end);
#endif
  rows_portable(w, x, m, bias, y, y_stride, row_begin, row_end);
}

}  // namespace lal::lm::cpu
