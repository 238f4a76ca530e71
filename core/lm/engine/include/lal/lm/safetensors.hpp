// lal::lm — reading and writing the safetensors checkpoint format (torch-free).
//
// FORMAT: 8 bytes little-endian header length N, N bytes of JSON {"name": {"dtype", "shape", "data_offsets"}, ...,
// "__metadata__": {string: string}}, then the data section; data_offsets are relative to the data section.
//
// READING maps the file read-only (mmap); tensors are views into the mapping, valid while any SafetensorsFile or
// Checkpoint sharing that mapping is alive (copies share it). Every structural check is done in open(): truncated
// file, absurd header length (> 100 MiB or past the end), bad JSON, unknown dtype, negative or non-integer shape,
// data_offsets reversed, past the end of the file, overlapping another tensor or leaving a gap (the tensors must
// cover the data section exactly, as the reference implementation requires), byte size != dtype size x shape.
// A violation throws SafetensorsError whose message names the file, the tensor and the byte offset in the file.
//
// WRITING is atomic: the bytes go to "<path>.tmp-<pid>", are fsync'ed, and the file is renamed over <path>; a crash
// leaves either the old file or the new one, never a torn one.
//
// THREADING: a SafetensorsFile/Checkpoint is immutable after open(); concurrent reads from any thread are safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace lal::lm {

/// Element types of the format. The engine loads F32/F16/BF16 weights; the others are read and written as bytes.
enum class DType { F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL };

std::size_t dtype_size(DType t);
const char* dtype_name(DType t);                 ///< "F32", "BF16", ... as in the file
bool parse_dtype(const std::string& s, DType& out);  ///< false for an unknown name

class SafetensorsError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// One tensor inside a mapped file.
struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  std::vector<std::int64_t> shape;
  std::uint64_t file_offset = 0;   ///< absolute byte offset of the first element in the file
  std::uint64_t nbytes = 0;
  const std::byte* data = nullptr;  ///< into the read-only mapping; never write through it
  std::string file;                 ///< the file it lives in (for messages)
  std::int64_t numel() const;
};

class SafetensorsFile {
 public:
  /// Map and validate `path`. Throws SafetensorsError (malformed) or std::runtime_error (cannot open/map).
  static SafetensorsFile open(const std::string& path);
  /// The same checks over bytes in memory (tests, fuzzing); `name` stands for the file in messages.
  static SafetensorsFile from_bytes(std::string bytes, const std::string& name);

  const std::string& path() const { return path_; }
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const TensorInfo* find(const std::string& name) const;  ///< null when absent

 private:
  struct Mapping;
  void parse();  // the structural checks of open(), over mapping_
  std::shared_ptr<Mapping> mapping_;
  std::string path_;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
};

/// The weights of a Hugging Face model directory: `model.safetensors`, or the shards listed by
/// `model.safetensors.index.json` ("weight_map": tensor -> shard file). Every shard is opened and validated, every
/// tensor named by the index must be present in its shard.
class Checkpoint {
 public:
  static Checkpoint open_dir(const std::string& dir);
  static Checkpoint open_files(const std::vector<std::string>& files);

  const TensorInfo* find(const std::string& name) const;
  /// Throws SafetensorsError naming the checkpoint when `name` is absent.
  const TensorInfo& at(const std::string& name) const;
  std::vector<std::string> names() const;
  const std::string& description() const { return description_; }

 private:
  std::vector<SafetensorsFile> files_;
  std::map<std::string, const TensorInfo*> by_name_;
  std::string description_;
};

/// The "weight_map" of a model.safetensors.index.json: (tensor, shard file name) pairs in file order. Refuses bad
/// JSON, nesting past the JSON depth limit, a missing weight_map, and shard names that are not plain file names.
std::vector<std::pair<std::string, std::string>> parse_safetensors_index(std::string_view text,
                                                                        const std::string& name);

/// A tensor to write: bytes are copied from `data` (`nbytes` must equal dtype size x shape).
struct TensorToWrite {
  std::string name;
  DType dtype = DType::F32;
  std::vector<std::int64_t> shape;
  const void* data = nullptr;
  std::size_t nbytes = 0;
};

/// Atomically write a safetensors file (temp file + fsync + rename). Throws SafetensorsError on inconsistent input
/// (duplicate name, size mismatch) and std::runtime_error on I/O failure (the temp file is removed).
void write_safetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace lal::lm
