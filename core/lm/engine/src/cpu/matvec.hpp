// lal::lm::cpu — matrix-times-few-vectors kernels for CPU decoding, over raw pointers (no LibTorch here).
//
// A decode step multiplies every linear weight W [rows, cols] by one activation row per sequence: the step is
// bound by reading W. These kernels read W once per call in its stored format — float32, bfloat16, or the
// group-wise int8 / int4 of lal/lm/quantize.hpp (dequantised inside the dot product: no dense copy of W) — and
// accumulate in float32.
//
// ISA: chosen at run time (cpuid): AVX-512 (F+BW+VL+DQ), AVX2+FMA+F16C, or portable C++. `LAL_CPU_ISA=portable|avx2|
// avx512` lowers the choice (never above what the CPU has); tests run every ISA the machine supports against the
// portable one and a float64 reference.
//
// THREADING: pure functions over the caller's buffers; the caller splits rows over its threads (cpu_linear.cpp).
#pragma once

#include <cstdint>
#include <vector>

namespace lal::lm::cpu {

enum class Isa { Portable = 0, Avx2 = 1, Avx512 = 2 };

/// The best ISA this CPU and OS support (cpuid + xgetbv through the compiler's builtins).
Isa detected_isa();
/// detected_isa(), lowered by the environment variable LAL_CPU_ISA when set (read once). Throws
/// std::invalid_argument naming the variable for an unknown value.
Isa active_isa();
const char* isa_name(Isa isa);
/// Every ISA from Portable up to detected_isa().
int isa_count();

enum class WeightFormat { F32, BF16, Int8, Int4 };

/// A read-only view of one linear weight [rows, cols] (row-major: rows = output features).
struct WeightView {
  WeightFormat format = WeightFormat::F32;
  std::int64_t rows = 0, cols = 0;
  /// F32: float[rows*cols]; BF16: uint16 bit patterns [rows*cols]; Int8: int8 [rows*cols];
  /// Int4: uint8 [rows*cols/2], two values per byte (value + 8), even column in the low nibble.
  const void* data = nullptr;
  /// Int8/Int4: float16 bit patterns [rows, cols/group]; value = stored integer * scale.
  const std::uint16_t* scales = nullptr;
  std::int64_t group = 0;
};

/// y[i*y_stride + r] = sum_c x[i*cols + c] * W[r, c] (+ bias[r]) for rows r in [row_begin, row_end) and activation
/// rows i in [0, m). x and y are float32; bias may be null. Any cols; quantised formats need cols % group == 0.
/// BF16 weights multiply x rounded to bfloat16 (nearest even): the products are exact in float32 and summed there,
/// as llama.cpp's BF16 products (and LibTorch's bfloat16 ones) compute; on AVX-512 with AVX512_BF16 one `vdpbf16ps`
/// per 32 columns (bf16_dot_available), else the rounded x through the converting loops.
void matmul_rows(const WeightView& w, const float* x, std::int64_t m, const float* bias, float* y,
                 std::int64_t y_stride, std::int64_t row_begin, std::int64_t row_end, Isa isa);

/// out[i*w.cols + c] = sum_r p[i*p_stride + r] * W[r, c] over all w.rows rows, for i in [0, m): the rows of W
/// weighted by p and summed (attention's probabilities times the cached values). F32 and BF16 weights only.
void weighted_row_sum(const WeightView& w, const float* p, std::int64_t m, std::int64_t p_stride, float* out, Isa isa);

/// Activation rows quantised for integer dot products with an Int8/Int4 weight (llama.cpp's arithmetic for Q8_0 and
/// Q4_0 weights, its `quantize_row_q8_0`): per group of `group` columns (the weight's groups) the values
/// round(x * 127 / max|x|) (to nearest even) as int8 and one scale, max|x| / 127 rounded to IEEE half as llama.cpp
/// stores it (kept in float32 where the half would overflow); a group of zeros has scale 0, a group holding a NaN or
/// infinity scale NaN (the products come out NaN, as in float32).
struct Int8Rows {
  std::int64_t m = 0, cols = 0, group = 0;
  std::vector<std::int8_t> values;  ///< [m, cols]
  std::vector<float> scales;        ///< [m, cols / group]
  /// For the SIMD kernels, when cols % 32 == 0 (else empty): the sum of each 32 columns' values [m, cols / 32], and
  /// when cols % 64 == 0 the values with each 64 columns as [32 even columns | 32 odd columns] [m, cols] (int4's
  /// two nibbles of a byte are two neighbouring columns).
  std::vector<std::int32_t> block_sums;
  std::vector<std::int8_t> even_odd;
};
/// x [m, cols] (float32) into `out` (its buffers reused). cols % group == 0.
void quantize_activations(const float* x, std::int64_t m, std::int64_t cols, std::int64_t group, Int8Rows& out);

/// Whether matmul_rows_int8 takes weight `w`: Int8/Int4 in groups of at most kMaxIntGroup columns (the int32 sums).
constexpr std::int64_t kMaxIntGroup = 65536;
bool integer_dot_applies(const WeightView& w);
/// Whether decode-sized products with int8/int4 weights quantise x to int8 and take matmul_rows_int8:
/// `LAL_CPU_INT_DOT=int8` (the default) or `float` (x stays float32: matmul_rows, the float32 product with the
/// dequantised weights). Read on every call (tests switch it); another value throws std::invalid_argument naming the
/// variable.
bool int8_activations();
/// Whether the CPU has the integer dot-product instructions (AVX-512 VNNI, or AVX-VNNI) for `isa`'s kernels.
bool vnni_available(Isa isa);

/// matmul_rows with x quantised by quantize_activations (group = w.group): per group the exact integer dot product
/// of the stored weights with x's int8 values, times the weight's scale times x's scale, summed in float32. Against
/// the float32 product of the dequantised weight with x, each group adds at most (x scale / 2) * sum |w| (x's
/// rounding) plus float32 rounding. SIMD (AVX2 and up, groups of a multiple of 32 columns): `vpdpbusd` (AVX512-VNNI
/// on 256 bits, or AVX-VNNI) where the CPU has it and `allow_vnni`, else 16-bit multiply-adds: the same integers.
void matmul_rows_int8(const WeightView& w, const Int8Rows& x, const float* bias, float* y, std::int64_t y_stride,
                      std::int64_t row_begin, std::int64_t row_end, Isa isa, bool allow_vnni = true);

/// Rows [row_begin, row_end) of an Int8/Int4 weight as float32 values (stored integer times its group's scale),
/// row-major into `out` ((row_end - row_begin) x cols): a tile for a compute-bound product over many rows.
void dequantize_rows(const WeightView& w, std::int64_t row_begin, std::int64_t row_end, float* out);

/// Whether matmul_rows at `isa` takes BF16 weights through AVX512_BF16's `vdpbf16ps` (the CPU has it, isa Avx512).
bool bf16_dot_available(Isa isa);

/// IEEE half -> float (exact), for references and scalar tails.
float half_to_float(std::uint16_t h);
/// float -> IEEE half bits, rounded to nearest even (subnormals, overflow to infinity, NaN kept a NaN).
std::uint16_t float_to_half(float f);
/// float32 -> bfloat16 bits, rounded to nearest even (NaN stays NaN), as LibTorch converts.
std::uint16_t float_to_bf16(float f);

}  // namespace lal::lm::cpu
