// CPU matrix-times-few-vectors kernels (see matvec.hpp). Each ISA has its own functions compiled with a target
// attribute, so one binary runs everywhere and uses what the CPU has. The loops are the same in every ISA: a block
// of weight rows at a time (independent accumulator chains), per quantisation group a float32 partial dot product
// of the unpacked integers with x, then that partial sum times the group's scale.
#include "matvec.hpp"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
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

std::uint16_t float_to_half(float f) {
  std::uint32_t x;
  std::memcpy(&x, &f, sizeof x);
  const std::uint32_t sign = (x >> 16) & 0x8000u;
  x &= 0x7fffffffu;
  if (x >= 0x7f800000u) return static_cast<std::uint16_t>(sign | (x > 0x7f800000u ? 0x7e00u : 0x7c00u));
  if (x >= 0x477ff000u) return static_cast<std::uint16_t>(sign | 0x7c00u);  // rounds to 65520 or more: infinity
  if (x >= 0x38800000u) {  // a normal half: rebias the exponent, round the 13 dropped bits to nearest even
    const std::uint32_t rounded = x + 0x0fffu + ((x >> 13) & 1u);
    return static_cast<std::uint16_t>(sign | ((rounded - 0x38000000u) >> 13));
  }
  float magnitude;  // below 2^-14: a multiple of 2^-24 (a subnormal half, or the smallest normal when it rounds up)
  std::memcpy(&magnitude, &x, sizeof magnitude);
  return static_cast<std::uint16_t>(sign | static_cast<std::uint32_t>(std::nearbyint(magnitude * 16777216.0f)));
}

std::uint16_t float_to_bf16(float f) {
  std::uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  if (std::isnan(f)) return static_cast<std::uint16_t>((bits >> 16) | 0x40u);
  const std::uint32_t rounding = 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<std::uint16_t>((bits + rounding) >> 16);
}

namespace {

bool quantized(WeightFormat f) { return f == WeightFormat::Int8 || f == WeightFormat::Int4; }

float bf16_value(std::uint16_t bits16) {
  const std::uint32_t bits = static_cast<std::uint32_t>(bits16) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

/// W[r, c] as stored (integers before their scale).
float stored_value(const WeightView& w, std::int64_t r, std::int64_t c) {
  const std::int64_t i = r * w.cols + c;
  switch (w.format) {
    case WeightFormat::F32: return static_cast<const float*>(w.data)[i];
    case WeightFormat::BF16: return bf16_value(static_cast<const std::uint16_t*>(w.data)[i]);
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
// LAL_TARGET_BEGIN("isa,...") ... LAL_TARGET_END: the functions between are compiled for those ISA extensions (chosen
// at run time by cpuid). GCC takes the target from `#pragma GCC target`; clang ignores that pragma and takes
// `#pragma clang attribute`. GCC 12's AVX-512 intrinsics build "undefined" vectors as `__m512 __Y = __Y;`, which
// -Wmaybe-uninitialized reports inside every inlined intrinsic: a false positive in the compiler's own header.
#define LAL_PRAGMA(...) _Pragma(#__VA_ARGS__)
#ifdef __clang__
#define LAL_TARGET_BEGIN(isa) LAL_PRAGMA(clang attribute push(__attribute__((target(isa))), apply_to = function))
#define LAL_TARGET_END LAL_PRAGMA(clang attribute pop)
#else
#define LAL_TARGET_BEGIN(isa)  \
  LAL_PRAGMA(GCC push_options) \
  LAL_PRAGMA(GCC diagnostic push) LAL_PRAGMA(GCC diagnostic ignored "-Wmaybe-uninitialized") LAL_PRAGMA(GCC target(isa))
#define LAL_TARGET_END LAL_PRAGMA(GCC diagnostic pop) LAL_PRAGMA(GCC pop_options)
#endif

// ---- AVX2 + FMA + F16C: 8 lanes, 16 columns per step ------------------------------------------------------------
LAL_TARGET_BEGIN("avx2,fma,f16c")
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
// The integer dot products (matmul_rows_int8) without VNNI, under the same target.
namespace avx2_int {
/// Without VNNI: bytes widened to 16 bits, `vpmaddwd` (pairs into 32-bit lanes), neighbouring pairs added so that
/// lanes 0-3 hold bytes 0-15 and lanes 4-7 bytes 16-31, as `vpdpbusd` has them.
struct D {
  static __m256i dot(__m256i acc, __m256i u, __m256i s) {
    const __m256i lo = _mm256_madd_epi16(_mm256_cvtepu8_epi16(_mm256_castsi256_si128(u)),
                                         _mm256_cvtepi8_epi16(_mm256_castsi256_si128(s)));
    const __m256i hi = _mm256_madd_epi16(_mm256_cvtepu8_epi16(_mm256_extracti128_si256(u, 1)),
                                         _mm256_cvtepi8_epi16(_mm256_extracti128_si256(s, 1)));
    // hadd: [lo lo hi hi | lo lo hi hi] in 64-bit pairs; the permute puts the lo pairs first.
    return _mm256_add_epi32(acc, _mm256_permute4x64_epi64(_mm256_hadd_epi32(lo, hi), _MM_SHUFFLE(3, 1, 2, 0)));
  }
};
#include "int_dot_loops.inc"
}  // namespace avx2_int
LAL_TARGET_END

// ---- AVX-512 (F, BW, VL, DQ) + FMA + F16C: 16 lanes, 32 columns per step ------------------------------------------
LAL_TARGET_BEGIN("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")
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
LAL_TARGET_END

// ---- bfloat16 weights times bfloat16-rounded x with AVX512_BF16 (`vdpbf16ps`: 32 products per instruction) ------
LAL_TARGET_BEGIN("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx2,fma,f16c")
namespace avx512_bf16 {
/// Rows [r, r + R) for every activation row of `xb` (x rounded to bfloat16): per 32 columns one `vdpbf16ps` per row
/// (pairs of exact products added to 16 float32 lanes), R chains sharing each load of x.
template <int R>
inline void row_block(const WeightView& w, const std::uint16_t* xb, std::int64_t m, const float* bias, float* y,
                      std::int64_t y_stride, std::int64_t r) {
  const std::int64_t cols = w.cols, vec_end = cols / 32 * 32;
  const auto* weights = static_cast<const std::uint16_t*>(w.data);
  for (std::int64_t i = 0; i < m; ++i) {
    const std::uint16_t* xi = xb + i * cols;
    __m512 acc[R];
    for (int j = 0; j < R; ++j) acc[j] = _mm512_setzero_ps();
    for (std::int64_t c = 0; c < vec_end; c += 32) {
      const __m512i xv = _mm512_loadu_si512(xi + c);
      for (int j = 0; j < R; ++j) {
        const std::uint16_t* p = weights + (r + j) * cols + c;
        _mm_prefetch(reinterpret_cast<const char*>(p) + 4096, _MM_HINT_T0);  // 4 KiB ahead (see matvec_loops.inc)
        acc[j] = _mm512_dpbf16_ps(acc[j], (__m512bh)_mm512_loadu_si512(p), (__m512bh)xv);
      }
    }
    for (int j = 0; j < R; ++j) {
      float s = _mm512_reduce_add_ps(acc[j]);
      for (std::int64_t c = vec_end; c < cols; ++c) s += stored_value(w, r + j, c) * bf16_value(xi[c]);
      y[i * y_stride + r + j] = s + (bias ? bias[r + j] : 0.0f);
    }
  }
}
void rows(const WeightView& w, const std::uint16_t* xb, std::int64_t m, const float* bias, float* y,
          std::int64_t y_stride, std::int64_t r0, std::int64_t r1) {
  std::int64_t r = r0;
  for (; r + 4 <= r1; r += 4) row_block<4>(w, xb, m, bias, y, y_stride, r);
  for (; r < r1; ++r) row_block<1>(w, xb, m, bias, y, y_stride, r);
}
}  // namespace avx512_bf16
LAL_TARGET_END

// ---- integer dot products with VNNI (matmul_rows_int8; avx2_int above is the one without) --------------------------
LAL_TARGET_BEGIN("avx2,fma,f16c,avxvnni")
namespace avx_vnni {
/// AVX-VNNI (VEX `vpdpbusd`): 4 neighbouring products per lane in one instruction.
struct D {
  static __m256i dot(__m256i acc, __m256i u, __m256i s) { return _mm256_dpbusd_avx_epi32(acc, u, s); }
};
#include "int_dot_loops.inc"
}  // namespace avx_vnni
LAL_TARGET_END
LAL_TARGET_BEGIN("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")
namespace avx512_vnni {
/// AVX512-VNNI on 256-bit registers (EVEX `vpdpbusd`: CPUs with AVX-512 VNNI but without AVX-VNNI).
struct D {
  static __m256i dot(__m256i acc, __m256i u, __m256i s) { return _mm256_dpbusd_epi32(acc, u, s); }
};
#include "int_dot_loops.inc"
}  // namespace avx512_vnni
LAL_TARGET_END

/// CPUID leaf 7: AVX512-VNNI (sub-leaf 0, ECX bit 11) and AVX-VNNI (sub-leaf 1, EAX bit 4). The OS support of the
/// registers is what detected_isa() checked for the ISA they extend.
bool cpu_has_avx512_vnni() {
  static const bool has = [] {
    unsigned a = 0, b = 0, c = 0, d = 0;
    return __get_cpuid_count(7, 0, &a, &b, &c, &d) && (c & (1u << 11));
  }();
  return has;
}
/// CPUID leaf 7 sub-leaf 1, EAX bit 5: AVX512_BF16.
bool cpu_has_avx512_bf16() {
  static const bool has = [] {
    unsigned a = 0, b = 0, c = 0, d = 0;
    return __get_cpuid_count(7, 1, &a, &b, &c, &d) && (a & (1u << 5));
  }();
  return has;
}
bool cpu_has_avx_vnni() {
  static const bool has = [] {
    unsigned a = 0, b = 0, c = 0, d = 0;
    return __get_cpuid_count(7, 1, &a, &b, &c, &d) && (a & (1u << 4));
  }();
  return has;
}
#endif

/// matmul_rows_int8 in plain C++: per group the integer dot product, then its two scales.
void int_rows_portable(const WeightView& w, const Int8Rows& x, const float* bias, float* y, std::int64_t y_stride,
                       std::int64_t r0, std::int64_t r1) {
  const std::int64_t cols = w.cols, group = w.group, groups = cols / group;
  for (std::int64_t r = r0; r < r1; ++r)
    for (std::int64_t i = 0; i < x.m; ++i) {
      const std::int8_t* xq = x.values.data() + i * cols;
      float total = 0.0f;
      for (std::int64_t g = 0; g < groups; ++g) {
        std::int32_t dot = 0;
        for (std::int64_t c = g * group; c < (g + 1) * group; ++c)
          dot += static_cast<std::int32_t>(stored_value(w, r, c)) * xq[c];
        total += static_cast<float>(dot) * (half_to_float(w.scales[r * groups + g]) * x.scales[i * groups + g]);
      }
      y[i * y_stride + r] = total + (bias ? bias[r] : 0.0f);
    }
}

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

void quantize_activations(const float* x, std::int64_t m, std::int64_t cols, std::int64_t group, Int8Rows& out) {
  if (group <= 0 || cols % group)
    throw std::invalid_argument("quantize_activations: " + std::to_string(cols) + " columns in groups of " +
                                std::to_string(group));
  const std::int64_t groups = cols / group;
  out.m = m, out.cols = cols, out.group = group;
  out.values.resize(static_cast<std::size_t>(m * cols));
  out.scales.resize(static_cast<std::size_t>(m * groups));
  for (std::int64_t k = 0; k < m * groups; ++k) {
    const float* v = x + k * group;
    std::int8_t* q = out.values.data() + k * group;
    float top = 0.0f;
    bool finite = true;
    for (std::int64_t c = 0; c < group; ++c) {
      finite = finite && std::isfinite(v[c]);
      top = std::max(top, std::fabs(v[c]));
    }
    if (!finite || top == 0.0f) {
      std::fill(q, q + group, std::int8_t{0});
      out.scales[static_cast<std::size_t>(k)] = finite ? 0.0f : std::numeric_limits<float>::quiet_NaN();
      continue;
    }
    const float inverse = 127.0f / top;
    for (std::int64_t c = 0; c < group; ++c)
      q[c] = static_cast<std::int8_t>(std::nearbyint(v[c] * inverse));  // |v * inverse| <= 127 (+ rounding)
    const float scale = top / 127.0f, half = half_to_float(float_to_half(scale));
    out.scales[static_cast<std::size_t>(k)] = std::isinf(half) ? scale : half;  // llama.cpp's Q8_0 d is a half
  }
  out.block_sums.clear(), out.even_odd.clear();
  if (cols % 32) return;
  out.block_sums.resize(static_cast<std::size_t>(m * cols / 32));
  for (std::size_t b = 0; b < out.block_sums.size(); ++b) {
    std::int32_t sum = 0;
    for (std::size_t c = 0; c < 32; ++c) sum += out.values[b * 32 + c];
    out.block_sums[b] = sum;
  }
  if (cols % 64) return;
  out.even_odd.resize(out.values.size());
  for (std::size_t c = 0; c < out.values.size(); c += 64)
    for (std::size_t k = 0; k < 32; ++k)
      out.even_odd[c + k] = out.values[c + 2 * k], out.even_odd[c + 32 + k] = out.values[c + 2 * k + 1];
}

bool integer_dot_applies(const WeightView& w) {
  return quantized(w.format) && w.group > 0 && w.group <= kMaxIntGroup && w.cols % w.group == 0;
}

bool int8_activations() {
  const char* v = std::getenv("LAL_CPU_INT_DOT");
  if (!v || !*v || std::string(v) == "int8") return true;
  if (std::string(v) == "float") return false;
  throw std::invalid_argument(std::string("LAL_CPU_INT_DOT='") + v + "': expected int8 or float");
}

bool vnni_available(Isa isa) {
#if LAL_CPU_X86
  isa = std::min(isa, detected_isa());
  return (isa == Isa::Avx512 && cpu_has_avx512_vnni()) || (isa >= Isa::Avx2 && cpu_has_avx_vnni());
#else
  (void)isa;
  return false;
#endif
}

bool bf16_dot_available(Isa isa) {
#if LAL_CPU_X86
  return std::min(isa, detected_isa()) == Isa::Avx512 && cpu_has_avx512_bf16();
#else
  (void)isa;
  return false;
#endif
}

void matmul_rows_int8(const WeightView& w, const Int8Rows& x, const float* bias, float* y, std::int64_t y_stride,
                      std::int64_t row_begin, std::int64_t row_end, Isa isa, bool allow_vnni) {
  if (!integer_dot_applies(w) || x.group != w.group || x.cols != w.cols)
    throw std::invalid_argument("matmul_rows_int8: expected an int8/int4 weight and activations quantised in its " +
                                std::to_string(w.group) + "-column groups");
  isa = std::min(isa, detected_isa());
#if LAL_CPU_X86
  if (isa >= Isa::Avx2 && w.group % 32 == 0 && (w.format == WeightFormat::Int8 || w.cols % 64 == 0)) {
    if (allow_vnni && vnni_available(isa)) {
      if (isa == Isa::Avx512 && cpu_has_avx512_vnni())
        return avx512_vnni::int_rows(w, x, bias, y, y_stride, row_begin, row_end);
      return avx_vnni::int_rows(w, x, bias, y, y_stride, row_begin, row_end);
    }
    return avx2_int::int_rows(w, x, bias, y, y_stride, row_begin, row_end);
  }
#else
  (void)allow_vnni;
#endif
  int_rows_portable(w, x, bias, y, y_stride, row_begin, row_end);
}

void matmul_rows(const WeightView& w, const float* x, std::int64_t m, const float* bias, float* y,
                 std::int64_t y_stride, std::int64_t row_begin, std::int64_t row_end, Isa isa) {
  if (quantized(w.format) && (w.group <= 0 || w.cols % w.group))
    throw std::invalid_argument("matmul_rows: quantised weight with " + std::to_string(w.cols) + " columns and group " +
                                std::to_string(w.group));
  isa = std::min(isa, detected_isa());
  if (w.format == WeightFormat::BF16) {  // x rounded to bfloat16 (see matvec.hpp), once per call
    thread_local std::vector<std::uint16_t> rounded;
    rounded.resize(static_cast<std::size_t>(m * w.cols));
    for (std::size_t k = 0; k < rounded.size(); ++k) rounded[k] = float_to_bf16(x[k]);
#if LAL_CPU_X86
    if (bf16_dot_available(isa)) return avx512_bf16::rows(w, rounded.data(), m, bias, y, y_stride, row_begin, row_end);
#endif
    thread_local std::vector<float> widened;
    widened.resize(rounded.size());
    for (std::size_t k = 0; k < rounded.size(); ++k) widened[k] = bf16_value(rounded[k]);
    x = widened.data();
  }
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
