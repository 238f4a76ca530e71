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
void matmul_rows(const WeightView& w, const float* x, std::int64_t m, const float* bias, float* y,
                 std::int64_t y_stride, std::int64_t row_begin, std::int64_t row_end, Isa isa);

/// out[i*w.cols + c] = sum_r p[i*p_stride + r] * W[r, c] over all w.rows rows, for i in [0, m): the rows of W
/// weighted by p and summed (attention's probabilities times the cached values). F32 and BF16 weights only.
void weighted_row_sum(const WeightView& w, const float* p, std::int64_t m, std::int64_t p_stride, float* out, Isa isa);

/// Rows [row_begin, row_end) of an Int8/Int4 weight as float32 values (stored integer times its group's scale),
/// row-major into `out` ((row_end - row_begin) x cols): a tile for a compute-bound product over many rows.
void dequantize_rows(const WeightView& w, std::int64_t row_begin, std::int64_t row_end, float* out);

/// IEEE half -> float (exact), for references and scalar tails.
float half_to_float(std::uint16_t h);

}  // namespace lal::lm::cpu
