// lal::lm — weight-only quantization: symmetric, group-wise int8 / int4 along a weight's input dimension.
//
// THIS HEADER INCLUDES LIBTORCH. One implementation serves the engine (Transformer, ModelOptions::quantize) and the
// trainer's teacher (lal::train::CausalLM); lal::train re-exports these names.
//
// FORMAT: a weight [out, in] is cut into groups of `group` consecutive input columns; each group has one float16
// scale = max|w| / qmax (qmax 127 for int8, 7 for int4), rounded to float16 before use, and stores
// round(w / scale) clamped to [-qmax, qmax]. int8 keeps one int8 per weight; int4 packs two (value + 8, low nibble
// first) into one uint8. Dequantized, every element is off by at most half a step (scale / 2) of its group. Because
// groups run along rows, quantizing a row-wise concatenation ([q | k | v]) equals concatenating the quantized parts.
//
// THREADING: pure functions. ERRORS: std::invalid_argument for a non-2-D weight, bits other than 8/4, or an odd
// input dimension with int4.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "lal/lm/detail/torch_compat.hpp"

namespace lal::lm {

struct QuantizedTensor {
  torch::Tensor data;    ///< int8 [out, in] for 8 bits; uint8 [out, in/2] (two nibbles, low first) for 4 bits
  torch::Tensor scales;  ///< float16 [out, in/group]
  int bits = 8;
  std::int64_t group = 64;
  std::vector<std::int64_t> shape;  ///< [out, in]
  std::int64_t bytes() const;       ///< data + scales, as stored
};

/// "none" -> 0, "int8" -> 8, "int4" -> 4; anything else throws std::invalid_argument naming `what` (the option).
int quantize_bits(const std::string& mode, const std::string& what = "quantize");

/// Quantize a 2-D weight (computed in float32 on the weight's device). `in` must be divisible by `group`, else the
/// whole row is one group.
QuantizedTensor quantize_weight(const torch::Tensor& w, int bits, std::int64_t group);
/// Back to `dtype` on `device` (the packed data travels, non-blocking from pinned memory; dequantization runs on
/// `device`, in float32, then casts). The float32 scratch is at most kDequantizeChunkBytes: larger weights are
/// dequantized a block of rows at a time into the result, so a 32B layer's fused gate/up needs no 2 GiB of scratch
/// (the result is the same either way; `scratch_bytes` is there for tests).
inline constexpr std::int64_t kDequantizeChunkBytes = std::int64_t{128} << 20;
torch::Tensor dequantize_weight(const QuantizedTensor& q, torch::ScalarType dtype, torch::Device device,
                                std::int64_t scratch_bytes = kDequantizeChunkBytes);

}  // namespace lal::lm
