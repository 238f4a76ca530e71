// The CPU decode kernels (core/lm/engine/src/cpu/matvec.hpp) against a float64 reference, for every weight format
// and every ISA this machine has (portable always; CI's runner may have fewer), with odd shapes, several activation
// rows, bias and row ranges. Torch-free: builds in seconds.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <mutex>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include "decode_layer.hpp"
#include "matvec.hpp"
#include "worker_pool.hpp"

using namespace lal::lm::cpu;

namespace {

/// float -> IEEE half bits, round to nearest even (normal range only: the test's scales are in it).
std::uint16_t to_half(float f) {
  std::uint32_t b;
  std::memcpy(&b, &f, sizeof b);
  const std::uint32_t sign = (b >> 16) & 0x8000u;
  const int exponent = static_cast<int>((b >> 23) & 0xff) - 127 + 15;
  std::uint32_t mantissa = b & 0x7fffffu;
  REQUIRE(exponent > 0);
  REQUIRE(exponent < 31);
  std::uint32_t h = sign | (static_cast<std::uint32_t>(exponent) << 10) | (mantissa >> 13);
  const std::uint32_t rest = mantissa & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;
  return static_cast<std::uint16_t>(h);
}

float bf16_value(std::uint16_t v) {
  const std::uint32_t b = static_cast<std::uint32_t>(v) << 16;
  float f;
  std::memcpy(&f, &b, sizeof f);
  return f;
}

/// One random weight in `format`, with its values as doubles (what the kernels must multiply by).
struct TestWeight {
  WeightView view;
  std::vector<float> f32;
  std::vector<std::uint16_t> bf16, scales;
  std::vector<std::int8_t> int8;
  std::vector<std::uint8_t> int4;
  std::vector<double> values;  // [rows, cols]

  TestWeight(WeightFormat format, std::int64_t rows, std::int64_t cols, std::int64_t group, std::mt19937& rng) {
    std::normal_distribution<float> normal;
    std::uniform_int_distribution<int> q8(-127, 127), q4(0, 15);
    std::uniform_real_distribution<float> scale(0.001f, 0.05f);
    view.format = format, view.rows = rows, view.cols = cols;
    values.resize(static_cast<std::size_t>(rows * cols));
    const bool quant = format == WeightFormat::Int8 || format == WeightFormat::Int4;
    if (quant) {
      view.group = group;
      for (std::int64_t i = 0; i < rows * (cols / group); ++i) scales.push_back(to_half(scale(rng)));
      view.scales = scales.data();
    }
    auto scale_of = [&](std::int64_t r, std::int64_t c) {
      return static_cast<double>(half_to_float(scales[static_cast<std::size_t>(r * (cols / group) + c / group)]));
    };
    switch (format) {
      case WeightFormat::F32:
        for (auto& v : values) f32.push_back(normal(rng)), v = f32.back();
        view.data = f32.data();
        break;
      case WeightFormat::BF16:
        for (auto& v : values) {
          const float f = normal(rng);
          std::uint32_t b;
          std::memcpy(&b, &f, sizeof b);
          bf16.push_back(static_cast<std::uint16_t>(b >> 16));  // truncation: any bf16 value will do
          v = bf16_value(bf16.back());
        }
        view.data = bf16.data();
        break;
      case WeightFormat::Int8:
        for (std::int64_t r = 0; r < rows; ++r)
          for (std::int64_t c = 0; c < cols; ++c) {
            int8.push_back(static_cast<std::int8_t>(q8(rng)));
            values[static_cast<std::size_t>(r * cols + c)] = int8.back() * scale_of(r, c);
          }
        view.data = int8.data();
        break;
      case WeightFormat::Int4:
        int4.resize(static_cast<std::size_t>(rows * cols / 2));
        for (std::int64_t r = 0; r < rows; ++r)
          for (std::int64_t c = 0; c < cols; ++c) {
            const int nibble = q4(rng);
            auto& byte = int4[static_cast<std::size_t>((r * cols + c) / 2)];
            byte = static_cast<std::uint8_t>((c & 1) ? (byte | (nibble << 4)) : nibble);  // even column low
            values[static_cast<std::size_t>(r * cols + c)] = (nibble - 8) * scale_of(r, c);
          }
        view.data = int4.data();
        break;
    }
  }
};

float top_abs(const float* v, std::int64_t n) {
  float top = 0.0f;
  for (std::int64_t i = 0; i < n; ++i) top = std::max(top, std::fabs(v[i]));
  return top;
}

const char* format_name(WeightFormat f) {
  switch (f) {
    case WeightFormat::F32: return "f32";
    case WeightFormat::BF16: return "bf16";
    case WeightFormat::Int8: return "int8";
    case WeightFormat::Int4: return "int4";
  }
  return "?";
}

/// A test weight's format and shape (group: columns per quantization group; 0 for dense formats).
struct Shape {
  WeightFormat format;
  std::int64_t rows, cols, group;
};

}  // namespace

TEST_CASE("half_to_float is exact on normal, subnormal and special values") {
  CHECK(half_to_float(0x3c00) == 1.0f);
  CHECK(half_to_float(0xc000) == -2.0f);
  CHECK(half_to_float(0x7bff) == 65504.0f);
  CHECK(half_to_float(0x0001) == std::ldexp(1.0f, -24));
  CHECK(half_to_float(0x03ff) == std::ldexp(1023.0f, -24));
  CHECK(half_to_float(0x8000) == 0.0f);
  CHECK(std::signbit(half_to_float(0x8000)));
  CHECK(std::isinf(half_to_float(0x7c00)));
  CHECK(std::isnan(half_to_float(0x7e00)));
  CHECK(half_to_float(to_half(0.0123f)) == doctest::Approx(0.0123f).epsilon(1e-3));
}

TEST_CASE("every ISA's kernels equal a float64 reference for every weight format") {
  std::mt19937 rng(7);
  std::normal_distribution<float> normal;
  MESSAGE("this CPU: " << std::string(isa_name(detected_isa()))
                       << "; active (LAL_CPU_ISA): " << std::string(isa_name(active_isa()))
                       << "; AVX512_BF16 dot products: " << bf16_dot_available(Isa::Avx512));
  CHECK(static_cast<int>(active_isa()) <= static_cast<int>(detected_isa()));
  // Rows not a multiple of the 4-row block; dense widths with a tail after the last whole SIMD step; groups of 16
  // (AVX-512 then falls back to AVX2: its step is 32), 32, 64 and one group over the whole row.
  const Shape shapes[] = {
      {WeightFormat::F32, 37, 203, 0},   {WeightFormat::F32, 8, 64, 0},    {WeightFormat::BF16, 37, 203, 0},
      {WeightFormat::BF16, 5, 7, 0},     {WeightFormat::BF16, 9, 128, 0},  {WeightFormat::Int8, 37, 192, 32},
      {WeightFormat::Int8, 9, 192, 64},  {WeightFormat::Int8, 6, 96, 16},  {WeightFormat::Int8, 3, 160, 160},
      {WeightFormat::Int4, 37, 192, 32}, {WeightFormat::Int4, 9, 256, 64}, {WeightFormat::Int4, 6, 96, 16},
      {WeightFormat::Int4, 3, 98, 98}};
  for (const auto& s : shapes)
    for (const std::int64_t m : {1, 2, 5}) {
      TestWeight w(s.format, s.rows, s.cols, s.group, rng);
      std::vector<float> x(static_cast<std::size_t>(m * s.cols)), bias(static_cast<std::size_t>(s.rows));
      for (auto& v : x) v = normal(rng);
      for (auto& v : bias) v = normal(rng);
      for (int isa = 0; isa < isa_count(); ++isa)
        for (const bool with_bias : {false, true}) {
          CAPTURE(format_name(s.format));
          CAPTURE(s.rows);
          CAPTURE(s.cols);
          CAPTURE(s.group);
          CAPTURE(m);
          CAPTURE(isa_name(static_cast<Isa>(isa)));
          CAPTURE(with_bias);
          const std::int64_t y_stride = s.rows + 3;  // a padded output row: only [0, rows) may be written
          std::vector<float> y(static_cast<std::size_t>(m * y_stride), -777.0f);
          // Two calls over a split of the rows, as the threads make them.
          const std::int64_t split = s.rows / 2 + 1;
          for (auto [begin, end] : {std::pair<std::int64_t, std::int64_t>{0, split}, {split, s.rows}})
            matmul_rows(w.view, x.data(), m, with_bias ? bias.data() : nullptr, y.data(), y_stride, begin, end,
                        static_cast<Isa>(isa));
          for (std::int64_t i = 0; i < m; ++i) {
            for (std::int64_t r = 0; r < s.rows; ++r) {
              double ref = with_bias ? bias[static_cast<std::size_t>(r)] : 0.0, magnitude = std::fabs(ref);
              for (std::int64_t c = 0; c < s.cols; ++c) {
                // bfloat16 weights multiply x rounded to bfloat16 (llama.cpp's BF16 arithmetic, vdpbf16ps).
                const float xv = x[static_cast<std::size_t>(i * s.cols + c)];
                const double p = w.values[static_cast<std::size_t>(r * s.cols + c)] *
                                 (s.format == WeightFormat::BF16 ? bf16_value(float_to_bf16(xv)) : xv);
                ref += p, magnitude += std::fabs(p);
              }
              const double got = y[static_cast<std::size_t>(i * y_stride + r)];
              // float32 accumulation: a few ulps of the sum of magnitudes.
              CHECK(std::fabs(got - ref) <= 4e-7 * magnitude * std::sqrt(static_cast<double>(s.cols)) + 1e-12);
            }
            for (std::int64_t r = s.rows; r < y_stride; ++r)
              CHECK(y[static_cast<std::size_t>(i * y_stride + r)] == -777.0f);
          }
        }
    }
}

TEST_CASE("a quantised weight whose width is not a whole number of groups is refused") {
  std::int8_t data[4 * 48] = {};
  std::uint16_t scales[8] = {};
  WeightView w;
  w.format = WeightFormat::Int8, w.rows = 4, w.cols = 48, w.group = 32, w.data = data, w.scales = scales;
  float x[48] = {}, y[4] = {};
  CHECK_THROWS_AS(matmul_rows(w, x, 1, nullptr, y, 4, 0, 4, detected_isa()), std::invalid_argument);
}

TEST_CASE("float_to_half rounds to nearest even over the whole half range: normal, subnormal, overflow, NaN") {
  // Every half value converts back to itself, and every midpoint between neighbours goes to the even one.
  for (std::uint32_t h = 0; h < 0x7c00u; ++h) {
    CAPTURE(h);
    const float v = half_to_float(static_cast<std::uint16_t>(h));
    REQUIRE(float_to_half(v) == h);
    REQUIRE(float_to_half(-v) == (h | 0x8000u));
    if (h + 1 < 0x7c00u) {
      const float mid =
          static_cast<float>((static_cast<double>(v) + half_to_float(static_cast<std::uint16_t>(h + 1))) / 2);
      REQUIRE(float_to_half(mid) == ((h & 1u) ? h + 1 : h));
      REQUIRE(float_to_half(std::nextafter(mid, 1e9f)) == h + 1);
      REQUIRE(float_to_half(std::nextafter(mid, -1e9f)) == h);
    }
  }
  CHECK(float_to_half(65519.0f) == 0x7bff);
  CHECK(float_to_half(65520.0f) == 0x7c00);
  CHECK(float_to_half(1e30f) == 0x7c00);
  CHECK(float_to_half(-std::numeric_limits<float>::infinity()) == 0xfc00);
  CHECK(float_to_half(std::ldexp(1.0f, -26)) == 0);  // below half the smallest subnormal
  CHECK(std::isnan(half_to_float(float_to_half(std::nanf("")))));
}

TEST_CASE("quantize_activations: int8 per group, scale max|x| / 127, within half a step; zeros and NaN groups") {
  std::mt19937 rng(5);
  std::normal_distribution<float> normal;
  const std::int64_t m = 3, cols = 192, group = 64;
  std::vector<float> x(static_cast<std::size_t>(m * cols));
  for (auto& v : x) v = normal(rng) * 3.0f;
  for (std::int64_t c = 0; c < group; ++c) x[static_cast<std::size_t>(group + c)] = 0.0f;  // row 0, group 1: zeros
  x[static_cast<std::size_t>(cols + 5)] = std::nanf("");                                   // row 1, group 0: a NaN
  Int8Rows q;
  quantize_activations(x.data(), m, cols, group, q);
  REQUIRE(q.values.size() == static_cast<std::size_t>(m * cols));
  REQUIRE(q.scales.size() == static_cast<std::size_t>(m * cols / group));
  for (std::int64_t k = 0; k < m * cols / group; ++k) {
    CAPTURE(k);
    const float s = q.scales[static_cast<std::size_t>(k)];
    if (k == 1) {
      CHECK(s == 0.0f);
    } else if (k == cols / group) {
      CHECK(std::isnan(s));
    } else {
      int top = 0;
      for (std::int64_t c = 0; c < group; ++c) {
        const auto i = static_cast<std::size_t>(k * group + c);
        top = std::max(top, std::abs(static_cast<int>(q.values[i])));
        // half a step, plus the scale's rounding to half (relative 2^-11) times at most 127 steps
        CHECK(std::fabs(q.values[i] * static_cast<double>(s) - x[i]) <= s * (0.5 + 127.0 / 2048 + 1e-5));
      }
      CHECK(top == 127);
      CHECK(s ==
            half_to_float(float_to_half(top_abs(x.data() + k * group, group) / 127.0f)));  // a half, as llama.cpp's
    }
  }
  // The SIMD layouts: 32-column sums, and each 64 columns as [even | odd].
  REQUIRE(q.block_sums.size() == static_cast<std::size_t>(m * cols / 32));
  REQUIRE(q.even_odd.size() == q.values.size());
  for (std::size_t b = 0; b < q.block_sums.size(); ++b) {
    int sum = 0;
    for (std::size_t c = 0; c < 32; ++c) sum += q.values[b * 32 + c];
    CHECK(q.block_sums[b] == sum);
  }
  CHECK(q.even_odd[64 + 1] == q.values[64 + 2]);
  CHECK(q.even_odd[64 + 32 + 3] == q.values[64 + 7]);
  CHECK_THROWS_AS(quantize_activations(x.data(), 1, 100, 64, q), std::invalid_argument);
}

TEST_CASE(
    "integer dot products (matmul_rows_int8) on every ISA, with and without VNNI: the exact integer sums, and "
    "within x's rounding of float64") {
  std::mt19937 rng(9);
  std::normal_distribution<float> normal;
  MESSAGE("VNNI on this CPU: avx2 " << vnni_available(Isa::Avx2) << ", avx512 " << vnni_available(Isa::Avx512));
  // Groups of 32 (two per 64-column int4 step), 64, 96 (int4 steps across groups), 16 (portable only), a whole-row
  // group; int4 widths that are not whole 64-column steps (portable); rows not a multiple of the 4-row block.
  const Shape shapes[] = {
      {WeightFormat::Int8, 37, 192, 32}, {WeightFormat::Int8, 9, 192, 64}, {WeightFormat::Int8, 6, 96, 16},
      {WeightFormat::Int8, 3, 160, 160}, {WeightFormat::Int8, 5, 288, 96}, {WeightFormat::Int4, 37, 192, 32},
      {WeightFormat::Int4, 9, 256, 64},  {WeightFormat::Int4, 6, 96, 16},  {WeightFormat::Int4, 5, 288, 96},
      {WeightFormat::Int4, 7, 96, 32},   {WeightFormat::Int4, 3, 98, 98}};
  for (const auto& s : shapes)
    for (const std::int64_t m : {1, 3}) {
      TestWeight w(s.format, s.rows, s.cols, s.group, rng);
      std::vector<float> x(static_cast<std::size_t>(m * s.cols)), bias(static_cast<std::size_t>(s.rows));
      for (auto& v : x) v = normal(rng);
      for (auto& v : bias) v = normal(rng);
      Int8Rows q;
      quantize_activations(x.data(), m, s.cols, s.group, q);
      const std::int64_t groups = s.cols / s.group;
      for (int isa = 0; isa < isa_count(); ++isa)
        for (const bool vnni : {false, true}) {
          CAPTURE(format_name(s.format));
          CAPTURE(s.rows);
          CAPTURE(s.cols);
          CAPTURE(s.group);
          CAPTURE(m);
          CAPTURE(isa_name(static_cast<Isa>(isa)));
          CAPTURE(vnni);
          const std::int64_t y_stride = s.rows + 3;
          std::vector<float> y(static_cast<std::size_t>(m * y_stride), -777.0f);
          const std::int64_t split = s.rows / 2 + 1;
          for (auto [begin, end] : {std::pair<std::int64_t, std::int64_t>{0, split}, {split, s.rows}})
            matmul_rows_int8(w.view, q, bias.data(), y.data(), y_stride, begin, end, static_cast<Isa>(isa), vnni);
          for (std::int64_t i = 0; i < m; ++i) {
            for (std::int64_t r = 0; r < s.rows; ++r) {
              // exact: the float64 product with x; integer: the same with x's int8 values times their scales (what
              // the kernels compute, up to float32 rounding); rounding: x's rounding error's bound, sum |w| * step/2.
              double exact = bias[static_cast<std::size_t>(r)], integer = exact, rounding = 0, magnitude = 0;
              for (std::int64_t c = 0; c < s.cols; ++c) {
                const double wv = w.values[static_cast<std::size_t>(r * s.cols + c)];
                const auto xi = static_cast<std::size_t>(i * s.cols + c);
                const double step = q.scales[static_cast<std::size_t>(i * groups + c / s.group)];
                exact += wv * x[xi];
                integer += wv * q.values[xi] * step;
                rounding += std::fabs(wv) * step * (0.5 + 127.0 / 2048);  // x's rounding and its half scale's
                magnitude += std::fabs(wv * q.values[xi] * step);
              }
              const double got = y[static_cast<std::size_t>(i * y_stride + r)];
              CHECK(std::fabs(got - integer) <= 4e-7 * magnitude * std::sqrt(static_cast<double>(s.cols)) + 1e-9);
              CHECK(std::fabs(got - exact) <= rounding * (1 + 1e-6) + 4e-7 * magnitude * std::sqrt(double(s.cols)));
            }
            for (std::int64_t r = s.rows; r < y_stride; ++r)
              CHECK(y[static_cast<std::size_t>(i * y_stride + r)] == -777.0f);
          }
        }
    }
  TestWeight dense(WeightFormat::F32, 4, 64, 0, rng);
  Int8Rows q;
  std::vector<float> x(64, 1.0f), y(4);
  quantize_activations(x.data(), 1, 64, 32, q);
  CHECK_THROWS_AS(matmul_rows_int8(dense.view, q, nullptr, y.data(), 4, 0, 4, detected_isa()), std::invalid_argument);
  TestWeight int8(WeightFormat::Int8, 4, 64, 16, rng);  // activations quantised in other groups than the weight's
  CHECK_THROWS_AS(matmul_rows_int8(int8.view, q, nullptr, y.data(), 4, 0, 4, detected_isa()), std::invalid_argument);
}

TEST_CASE("weighted_row_sum (attention's probabilities times values) equals float64 on every ISA") {
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> unit(0.0f, 1.0f);
  // head_dim 64 (whole SIMD steps), 24 (a tail only, on AVX-512) and 7; one row and many.
  for (const auto format : {WeightFormat::F32, WeightFormat::BF16})
    for (const std::int64_t cols : {64, 24, 7})
      for (const std::int64_t rows : {1, 5, 130}) {
        TestWeight w(format, rows, cols, 0, rng);
        const std::int64_t m = 3, p_stride = rows + 2;
        std::vector<float> p(static_cast<std::size_t>(m * p_stride));
        for (auto& v : p) v = unit(rng);
        for (int isa = 0; isa < isa_count(); ++isa) {
          CAPTURE(format_name(format));
          CAPTURE(cols);
          CAPTURE(rows);
          CAPTURE(isa_name(static_cast<Isa>(isa)));
          std::vector<float> out(static_cast<std::size_t>(m * cols), -777.0f);
          weighted_row_sum(w.view, p.data(), m, p_stride, out.data(), static_cast<Isa>(isa));
          for (std::int64_t i = 0; i < m; ++i)
            for (std::int64_t c = 0; c < cols; ++c) {
              double ref = 0.0, magnitude = 0.0;
              for (std::int64_t r = 0; r < rows; ++r) {
                const double t =
                    p[static_cast<std::size_t>(i * p_stride + r)] * w.values[static_cast<std::size_t>(r * cols + c)];
                ref += t, magnitude += std::fabs(t);
              }
              CHECK(std::fabs(out[static_cast<std::size_t>(i * cols + c)] - ref) <=
                    4e-7 * magnitude * std::sqrt(static_cast<double>(rows)) + 1e-12);
            }
        }
      }
  TestWeight int8(WeightFormat::Int8, 4, 64, 32, rng);
  float p[4] = {}, out[64] = {};
  CHECK_THROWS_AS(weighted_row_sum(int8.view, p, 1, 4, out, detected_isa()), std::invalid_argument);
}

TEST_CASE("float_to_bf16 rounds to nearest even, keeps NaN a NaN") {
  CHECK(float_to_bf16(1.0f) == 0x3f80);
  CHECK(bf16_value(float_to_bf16(1.0f + std::ldexp(1.0f, -8))) == 1.0f);  // halfway: to even (down)
  CHECK(bf16_value(float_to_bf16(1.0f + 3 * std::ldexp(1.0f, -8))) == 1.0f + std::ldexp(1.0f, -6));  // up to even
  CHECK(bf16_value(float_to_bf16(1.0f + std::ldexp(1.0f, -8) + std::ldexp(1.0f, -20))) ==
        1.0f + std::ldexp(1.0f, -7));  // past halfway: up
  CHECK(bf16_value(float_to_bf16(-2.5f)) == -2.5f);
  CHECK(std::isnan(bf16_value(float_to_bf16(std::nanf("")))));
  CHECK(std::isinf(bf16_value(float_to_bf16(std::numeric_limits<float>::infinity()))));
}

TEST_CASE("rms_norm_rows: w * (x / sqrt(mean(x^2) + eps)), float32 or bfloat16 weights") {
  const float x[6] = {1, 2, 3, -4, 0.5f, 0};
  const float w32[3] = {1, 0.5f, 2};
  const std::uint16_t w16[3] = {float_to_bf16(1), float_to_bf16(0.5f), float_to_bf16(2)};
  float out32[6], out16[6];
  rms_norm_rows(x, 2, 3, Floats{w32, false}, 1e-6f, out32);
  rms_norm_rows(x, 2, 3, Floats{w16, true}, 1e-6f, out16);
  for (int r = 0; r < 2; ++r) {
    double ms = 0;
    for (int c = 0; c < 3; ++c) ms += double(x[r * 3 + c]) * x[r * 3 + c] / 3;
    for (int c = 0; c < 3; ++c) {
      const double want = w32[c] * x[r * 3 + c] / std::sqrt(ms + 1e-6);
      CHECK(out32[r * 3 + c] == doctest::Approx(want).epsilon(1e-6));
      CHECK(out16[r * 3 + c] == out32[r * 3 + c]);
    }
  }
}

TEST_CASE("WorkerPool: every chunk once, on several threads; exceptions reach the caller; nested runs are serial") {
  WorkerPool pool(3);
  CHECK(pool.threads() == 3);
  for (int round = 0; round < 200; ++round) {  // back to back, as a decode step's regions come
    const std::int64_t n = 1000 + round, chunk = 7;
    std::vector<std::atomic<int>> hits(static_cast<std::size_t>(n));
    pool.run(n, chunk, [&](std::int64_t begin, std::int64_t end) {
      CHECK(end - begin <= chunk);
      for (std::int64_t i = begin; i < end; ++i) hits[static_cast<std::size_t>(i)].fetch_add(1);
    });
    int wrong = 0;
    for (auto& h : hits) wrong += h.load() != 1;
    CHECK(wrong == 0);
  }
  // Workers take part: slow chunks on 3 threads see more than one thread id.
  std::mutex ids_mutex;
  std::vector<std::thread::id> ids;
  pool.run(24, 1, [&](std::int64_t, std::int64_t) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    std::lock_guard<std::mutex> lock(ids_mutex);
    if (std::find(ids.begin(), ids.end(), std::this_thread::get_id()) == ids.end())
      ids.push_back(std::this_thread::get_id());
  });
  CHECK(ids.size() > 1);
  CHECK_THROWS_WITH_AS(pool.run(100, 3,
                                [](std::int64_t begin, std::int64_t) {
                                  if (begin == 51) throw std::runtime_error("chunk 51");
                                }),
                       "chunk 51", std::runtime_error);
  std::atomic<int> inner{0};
  pool.run(8, 1, [&](std::int64_t, std::int64_t) {
    const auto self = std::this_thread::get_id();
    pool.run(10, 1, [&](std::int64_t begin, std::int64_t end) {
      CHECK(std::this_thread::get_id() == self);  // nested: on the same thread
      inner.fetch_add(static_cast<int>(end - begin));
    });
  });
  CHECK(inner.load() == 80);
}
