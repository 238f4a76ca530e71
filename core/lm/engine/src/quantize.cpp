// Group-wise weight-only quantization (the format is described in quantize.hpp).
#include "lal/lm/quantize.hpp"

#include <algorithm>
#include <stdexcept>

namespace lal::lm {

std::int64_t QuantizedTensor::bytes() const {
  return data.numel() * static_cast<std::int64_t>(data.element_size()) +
         scales.numel() * static_cast<std::int64_t>(scales.element_size());
}

int quantize_bits(const std::string& mode, const std::string& what) {
  if (mode == "none" || mode.empty()) return 0;
  if (mode == "int8") return 8;
  if (mode == "int4") return 4;
  throw std::invalid_argument(what + " '" + mode + "': expected none, int8 or int4");
}

QuantizedTensor quantize_weight(const torch::Tensor& w, int bits, std::int64_t group) {
  if (w.dim() != 2) throw std::invalid_argument("quantize_weight: expected a 2-D weight");
  if (bits != 8 && bits != 4) throw std::invalid_argument("quantize_weight: bits must be 8 or 4");
  torch::NoGradGuard no_grad;
  const auto out = w.size(0), in = w.size(1);
  if (bits == 4 && in % 2) throw std::invalid_argument("quantize_weight: int4 needs an even input dimension");
  const auto g = (group > 0 && in % group == 0) ? group : in;
  const double qmax = bits == 8 ? 127.0 : 7.0;
  auto grouped = w.detach().to(torch::kFloat32).contiguous().view({out, in / g, g});
  // The scale is rounded to float16 first, so quantization and dequantization use the same value.
  auto scale = (grouped.abs().amax(-1, /*keepdim=*/true) / qmax).clamp_min(1e-10).to(torch::kFloat16);
  auto q = (grouped / scale.to(torch::kFloat32)).round().clamp(-qmax, qmax).view({out, in});
  QuantizedTensor r;
  r.bits = bits, r.group = g, r.shape = {out, in};
  r.scales = scale.squeeze(-1).contiguous();
  if (bits == 8) {
    r.data = q.to(torch::kInt8).contiguous();
  } else {
    auto u = (q + 8).to(torch::kUInt8);
    auto lo = u.slice(1, 0, in, 2), hi = u.slice(1, 1, in, 2);
    r.data = lo.bitwise_or(hi.mul(16)).contiguous();
  }
  return r;
}

torch::Tensor dequantize_weight(const QuantizedTensor& q, torch::ScalarType dtype, torch::Device device,
                                std::int64_t scratch_bytes) {
  const auto out = q.shape[0], in = q.shape[1];
  auto data = q.data.to(device, /*non_blocking=*/true);
  auto scales = q.scales.to(device, /*non_blocking=*/true);
  // Rows [r, r + n): float32 values (the scratch: two float32 blocks at once) times their float32 scales.
  auto rows = [&](std::int64_t r, std::int64_t n) {
    auto d = data.narrow(0, r, n);
    torch::Tensor values;
    if (q.bits == 8) {
      values = d.to(torch::kFloat32);
    } else {
      // Unpack in uint8 (two small kernels), widen once: [n, in/2, 2] -> [n, in].
      auto nibbles = torch::stack({d.bitwise_and(15), d.bitwise_right_shift(4)}, -1).view({n, in});
      values = nibbles.to(torch::kFloat32) - 8.0;
    }
    auto s = scales.narrow(0, r, n).to(torch::kFloat32).unsqueeze(-1);
    return (values.view({n, in / q.group, q.group}) * s).view({n, in});
  };
  const std::int64_t block = std::max<std::int64_t>(1, scratch_bytes / (2 * 4 * std::max<std::int64_t>(1, in)));
  if (block >= out) return rows(0, out).to(dtype);
  auto result = torch::empty({out, in}, torch::TensorOptions().dtype(dtype).device(device));
  for (std::int64_t r = 0; r < out; r += block) {
    const auto n = std::min(block, out - r);
    result.narrow(0, r, n).copy_(rows(r, n));
  }
  return result;
}

}  // namespace lal::lm
