// libFuzzer target: the safetensors header (length prefix, JSON header, offsets, exact coverage) and the
// model.safetensors.index.json weight map. The first byte picks which: even = a safetensors file, odd = an index.
// Contract: any input is refused with SafetensorsError or accepted; a crash, a leak, undefined behaviour or another
// exception type is a finding.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include "lal/lm/safetensors.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const bool index = data[0] & 1;
  std::string bytes(reinterpret_cast<const char*>(data + 1), size - 1);
  try {
    if (index) {
      const auto weight_map = lal::lm::parse_safetensors_index(bytes, "fuzz.index.json");
      for (const auto& [tensor, shard] : weight_map)
        if (shard.empty() || shard.find('/') != std::string::npos) __builtin_trap();  // must have been refused
    } else {
      const auto file = lal::lm::SafetensorsFile::from_bytes(std::move(bytes), "fuzz.safetensors");
      // Accepted: every tensor lies inside the buffer and has the declared size; touch every byte.
      unsigned sum = 0;
      for (const auto& t : file.tensors()) {
        if (static_cast<std::uint64_t>(t.numel()) * lal::lm::dtype_size(t.dtype) != t.nbytes) __builtin_trap();
        for (std::uint64_t i = 0; i < t.nbytes; ++i) sum += static_cast<unsigned>(t.data[i]);
      }
      (void)sum;
    }
  } catch (const lal::lm::SafetensorsError&) {
  }
  return 0;
}
