// lal::train — vocabulary trimming: a student that only knows the tokens its data uses.
//
// Torch-free. The kept set is the data's ids, closed so that the trimmed tokenizer still works: every added/special
// token, every single-byte token (byte-level alphabet or <0xNN> byte fallback), and recursively both parents of
// every kept BPE merge result. Merges survive when both parts and the result are kept. Because every intermediate
// token of a BPE encoding is a parent of a final one, the trimmed tokenizer encodes the data's texts to exactly the
// mapped ids of the original, and can still encode any other text (down to bytes).
// New ids follow the order of the old ones (contiguous 0..kept-1).
// ERRORS: std::runtime_error naming tokenizer.json and the key (unsupported model type, malformed merges).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace lal::train {

struct VocabMap {
  std::vector<std::int32_t> kept;        ///< new id -> old id, ascending
  std::vector<std::int32_t> old_to_new;  ///< old id -> new id, -1 when dropped
  std::int64_t size() const { return static_cast<std::int64_t>(kept.size()); }
  /// Throws std::out_of_range naming the id when it was dropped.
  std::int32_t to_new(std::int32_t old_id) const;
};

/// `tokenizer_path`: tokenizer.json or its directory. `used_ids` may contain duplicates.
VocabMap build_vocab_map(const std::string& tokenizer_path, const std::vector<std::int32_t>& used_ids);

/// Write tokenizer.json (+ tokenizer_config.json when the source has one) into `dst_dir`, with ids renumbered.
void write_trimmed_tokenizer(const std::string& tokenizer_path, const std::string& dst_dir, const VocabMap& map);

}  // namespace lal::train
