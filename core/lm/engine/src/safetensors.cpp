// safetensors reader (mmap + validation) and atomic writer. Torch-free so that it compiles in a second and the
// malformed-file tests need no LibTorch.
#include "lal/lm/safetensors.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <tuple>

#include "lal/checks/input_limits.hpp"

namespace lal::lm {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {
constexpr std::uint64_t kMaxHeaderBytes = 100ull << 20;  // the reference implementation's limit

struct DTypeRow {
  DType type;
  const char* name;
  std::size_t size;
};
constexpr DTypeRow kDTypes[] = {{DType::F64, "F64", 8}, {DType::F32, "F32", 4},  {DType::F16, "F16", 2},
                                {DType::BF16, "BF16", 2}, {DType::I64, "I64", 8}, {DType::I32, "I32", 4},
                                {DType::I16, "I16", 2},  {DType::I8, "I8", 1},    {DType::U8, "U8", 1},
                                {DType::BOOL, "BOOL", 1}};

[[noreturn]] void fail(const std::string& file, const std::string& what) {
  throw SafetensorsError(file + ": " + what);
}
}  // namespace

std::size_t dtype_size(DType t) {
  for (const auto& r : kDTypes)
    if (r.type == t) return r.size;
  return 0;
}
const char* dtype_name(DType t) {
  for (const auto& r : kDTypes)
    if (r.type == t) return r.name;
  return "?";
}
bool parse_dtype(const std::string& s, DType& out) {
  for (const auto& r : kDTypes)
    if (s == r.name) {
      out = r.type;
      return true;
    }
  return false;
}

std::int64_t TensorInfo::numel() const {
  std::int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

struct SafetensorsFile::Mapping {
  void* addr = nullptr;
  std::size_t size = 0;
  std::string owned;  // from_bytes(): the bytes themselves, no mapping
  ~Mapping() {
    if (addr && size && owned.empty()) ::munmap(addr, size);
  }
};

SafetensorsFile SafetensorsFile::from_bytes(std::string bytes, const std::string& name) {
  SafetensorsFile f;
  f.path_ = name;
  auto mapping = std::make_shared<Mapping>();
  mapping->owned = std::move(bytes);
  mapping->addr = mapping->owned.data();
  mapping->size = mapping->owned.size();
  f.mapping_ = mapping;
  f.parse();
  return f;
}

SafetensorsFile SafetensorsFile::open(const std::string& path) {
  SafetensorsFile f;
  f.path_ = path;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw std::runtime_error(path + ": cannot open: " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int e = errno;
    ::close(fd);
    throw std::runtime_error(path + ": cannot stat: " + std::strerror(e));
  }
  auto mapping = std::make_shared<Mapping>();
  mapping->size = static_cast<std::size_t>(st.st_size);
  if (mapping->size > 0) {
    mapping->addr = ::mmap(nullptr, mapping->size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (mapping->addr == MAP_FAILED) {
      const int e = errno;
      mapping->addr = nullptr;
      ::close(fd);
      throw std::runtime_error(path + ": cannot mmap: " + std::strerror(e));
    }
  }
  ::close(fd);
  f.mapping_ = mapping;
  f.parse();
  return f;
}

void SafetensorsFile::parse() {
  SafetensorsFile& f = *this;
  const std::string& path = path_;
  const auto* base = static_cast<const std::byte*>(mapping_->addr);
  const std::uint64_t file_size = mapping_->size;
  if (file_size < 8)
    fail(path, "truncated: " + std::to_string(file_size) + " bytes, the 8-byte header length at byte 0 is incomplete");
  std::uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | static_cast<std::uint8_t>(base[i]);
  if (header_len > kMaxHeaderBytes)
    fail(path, "absurd header length " + std::to_string(header_len) + " at byte 0 (limit " +
                   std::to_string(kMaxHeaderBytes) + ")");
  if (header_len > file_size - 8)
    fail(path, "truncated: header length " + std::to_string(header_len) + " at byte 0 runs past the end of the " +
                   std::to_string(file_size) + "-byte file");
  const std::uint64_t data_start = 8 + header_len;
  const std::uint64_t data_size = file_size - data_start;

  json header;
  try {
    header = checks::parse_json_limited(
        std::string_view(reinterpret_cast<const char*>(base + 8), static_cast<std::size_t>(header_len)),
        path + ": header");
  } catch (const checks::InputLimitError& e) {
    throw SafetensorsError(e.what());
  } catch (const json::parse_error& e) {
    fail(path, "header is not valid JSON (at byte " + std::to_string(8 + e.byte - (e.byte > 0 ? 1 : 0)) +
                   "): " + e.what());
  }
  if (!header.is_object()) fail(path, "header at byte 8 is not a JSON object");

  struct Span {
    std::uint64_t begin, end;
    std::size_t index;
  };
  std::vector<Span> spans;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    if (name == "__metadata__") {
      if (!it->is_object()) fail(path, "__metadata__ is not an object");
      for (auto m = it->begin(); m != it->end(); ++m) {
        if (!m->is_string()) fail(path, "__metadata__ value '" + m.key() + "' is not a string");
        f.metadata_[m.key()] = m->get<std::string>();
      }
      continue;
    }
    const std::string where = "tensor '" + name + "'";
    const json& e = *it;
    if (!e.is_object()) fail(path, where + ": entry is not an object");
    if (!e.contains("dtype") || !e["dtype"].is_string()) fail(path, where + ": missing or non-string \"dtype\"");
    TensorInfo t;
    t.name = name;
    t.file = path;
    if (!parse_dtype(e["dtype"].get<std::string>(), t.dtype))
      fail(path, where + ": unknown dtype \"" + e["dtype"].get<std::string>() + "\"");
    if (!e.contains("shape") || !e["shape"].is_array()) fail(path, where + ": missing or non-array \"shape\"");
    std::uint64_t numel = 1;
    for (const auto& d : e["shape"]) {
      if (!d.is_number_integer() || d.get<std::int64_t>() < 0)
        fail(path, where + ": shape " + e["shape"].dump() + " has a non-integer or negative dimension");
      const auto dim = d.get<std::uint64_t>();
      if (dim != 0 && numel > std::numeric_limits<std::uint64_t>::max() / 16 / dim)
        fail(path, where + ": shape " + e["shape"].dump() + " overflows");
      numel *= dim;
      t.shape.push_back(static_cast<std::int64_t>(dim));
    }
    if (!e.contains("data_offsets") || !e["data_offsets"].is_array() || e["data_offsets"].size() != 2 ||
        !e["data_offsets"][0].is_number_unsigned() || !e["data_offsets"][1].is_number_unsigned())
      fail(path, where + ": \"data_offsets\" must be two non-negative integers");
    const auto begin = e["data_offsets"][0].get<std::uint64_t>();
    const auto end = e["data_offsets"][1].get<std::uint64_t>();
    if (end < begin)
      fail(path, where + ": data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) + "] are reversed");
    if (end > data_size)
      fail(path, where + ": data_offsets end " + std::to_string(end) + " (byte " + std::to_string(data_start + end) +
                     ") is past the end of the " + std::to_string(file_size) + "-byte file");
    t.nbytes = end - begin;
    const std::uint64_t expected = numel * dtype_size(t.dtype);
    if (t.nbytes != expected)
      fail(path, where + " at byte " + std::to_string(data_start + begin) + ": " + std::to_string(t.nbytes) +
                     " bytes but " + dtype_name(t.dtype) + " " + e["shape"].dump() + " needs " +
                     std::to_string(expected));
    t.file_offset = data_start + begin;
    t.data = base + t.file_offset;
    spans.push_back({begin, end, f.tensors_.size()});
    f.tensors_.push_back(std::move(t));
  }
  // As the reference implementation requires: sorted by offset, the tensors cover the data section exactly, each
  // starting where the previous one ends and the last ending at the end of the file. A header length that is off
  // by a byte (every tensor read shifted) or bytes nobody owns are refused, not read as garbage.
  std::sort(spans.begin(), spans.end(),
            [](const Span& a, const Span& b) { return std::tie(a.begin, a.end) < std::tie(b.begin, b.end); });
  std::uint64_t covered = 0;
  for (std::size_t i = 0; i < spans.size(); ++i) {
    const Span& s = spans[i];
    if (s.begin == covered) {
      covered = s.end;
      continue;
    }
    const std::string name = "tensor '" + f.tensors_[s.index].name + "' at byte " + std::to_string(data_start + s.begin);
    if (i == 0)
      fail(path, name + " leaves the first " + std::to_string(s.begin) +
                     " bytes of the data section (from byte " + std::to_string(data_start) +
                     ") to no tensor; the tensors must cover the data section exactly");
    const std::string prev = "tensor '" + f.tensors_[spans[i - 1].index].name + "' (bytes " +
                             std::to_string(data_start + spans[i - 1].begin) + ".." +
                             std::to_string(data_start + spans[i - 1].end) + ")";
    if (s.begin < covered) fail(path, name + " overlaps " + prev);
    fail(path, name + " leaves bytes " + std::to_string(data_start + covered) + ".." +
                   std::to_string(data_start + s.begin) + " after " + prev +
                   " to no tensor; the tensors must cover the data section exactly");
  }
  if (covered != data_size)
    fail(path, "the tensors cover " + std::to_string(covered) + " bytes but the data section (from byte " +
                   std::to_string(data_start) + " to the end of the " + std::to_string(file_size) +
                   "-byte file) has " + std::to_string(data_size) +
                   ": the header length at byte 0 is wrong, or the file is truncated or padded (the safetensors "
                   "format requires exact coverage)");
}

const TensorInfo* SafetensorsFile::find(const std::string& name) const {
  for (const auto& t : tensors_)
    if (t.name == name) return &t;
  return nullptr;
}

Checkpoint Checkpoint::open_files(const std::vector<std::string>& files) {
  Checkpoint c;
  c.files_.reserve(files.size());
  for (const auto& p : files) c.files_.push_back(SafetensorsFile::open(p));
  for (const auto& f : c.files_)
    for (const auto& t : f.tensors()) {
      if (!c.by_name_.emplace(t.name, &t).second)
        throw SafetensorsError(f.path() + ": tensor '" + t.name + "' also appears in " + c.by_name_[t.name]->file);
    }
  c.description_ = files.size() == 1 ? files[0] : std::to_string(files.size()) + " shards";
  return c;
}

std::vector<std::pair<std::string, std::string>> parse_safetensors_index(std::string_view text,
                                                                        const std::string& name) {
  json j;
  try {
    j = checks::parse_json_limited(text, name);
  } catch (const checks::InputLimitError& e) {
    throw SafetensorsError(e.what());
  } catch (const json::parse_error& e) {
    throw SafetensorsError(name + ": not valid JSON (at byte " + std::to_string(e.byte) + "): " + e.what());
  }
  if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
    throw SafetensorsError(name + ": missing object \"weight_map\"");
  std::vector<std::pair<std::string, std::string>> out;
  for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
    if (!it->is_string()) throw SafetensorsError(name + ": weight_map[\"" + it.key() + "\"] is not a file name");
    const auto shard = it->get<std::string>();
    if (shard.empty() || shard.find('/') != std::string::npos || shard == "." || shard == "..")
      throw SafetensorsError(name + ": weight_map[\"" + it.key() + "\"] = \"" + shard +
                             "\" is not a plain file name");
    out.emplace_back(it.key(), shard);
  }
  return out;
}

Checkpoint Checkpoint::open_dir(const std::string& dir) {
  const fs::path d(dir);
  const fs::path index = d / "model.safetensors.index.json";
  if (fs::exists(index)) {
    std::string text;
    try {
      text = checks::read_file_limited(index, checks::limits::safetensors_index);
    } catch (const checks::InputLimitError& e) {
      throw SafetensorsError(e.what());
    }
    const auto weight_map = parse_safetensors_index(text, index.string());
    std::vector<std::string> shards;
    std::set<std::string> seen;
    for (const auto& [tensor, shard] : weight_map)
      if (seen.insert(shard).second) shards.push_back((d / shard).string());
    Checkpoint c = open_files(shards);
    for (const auto& [tensor, shard_name] : weight_map) {
      const TensorInfo* t = c.find(tensor);
      const std::string shard = (d / shard_name).string();
      if (!t || t->file != shard)
        throw SafetensorsError(index.string() + ": tensor '" + tensor + "' is mapped to " + shard +
                               " but is not in that file");
    }
    c.description_ = index.string();
    return c;
  }
  const fs::path single = d / "model.safetensors";
  if (fs::exists(single)) return open_files({single.string()});
  throw SafetensorsError(dir + ": no model.safetensors or model.safetensors.index.json (only safetensors weights "
                               "are supported; convert .bin/.pth checkpoints first)");
}

const TensorInfo* Checkpoint::find(const std::string& name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : it->second;
}

const TensorInfo& Checkpoint::at(const std::string& name) const {
  const TensorInfo* t = find(name);
  if (!t) throw SafetensorsError(description_ + ": no tensor named '" + name + "'");
  return *t;
}

std::vector<std::string> Checkpoint::names() const {
  std::vector<std::string> out;
  for (const auto& [n, t] : by_name_) out.push_back(n);
  return out;
}

void write_safetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::uint64_t offset = 0;
  for (const auto& t : tensors) {
    if (t.name == "__metadata__" || header.contains(t.name))
      throw SafetensorsError(path + ": duplicate or reserved tensor name '" + t.name + "'");
    std::uint64_t numel = 1;
    for (auto d : t.shape) {
      if (d < 0) throw SafetensorsError(path + ": tensor '" + t.name + "' has a negative dimension");
      numel *= static_cast<std::uint64_t>(d);
    }
    if (numel * dtype_size(t.dtype) != t.nbytes)
      throw SafetensorsError(path + ": tensor '" + t.name + "' has " + std::to_string(t.nbytes) + " bytes but " +
                             dtype_name(t.dtype) + " shape needs " + std::to_string(numel * dtype_size(t.dtype)));
    header[t.name] = {{"dtype", dtype_name(t.dtype)}, {"shape", t.shape}, {"data_offsets", {offset, offset + t.nbytes}}};
    offset += t.nbytes;
  }
  std::string text = header.dump();
  while ((8 + text.size()) % 8 != 0) text.push_back(' ');  // align the data section to 8 bytes

  const std::string tmp = path + ".tmp-" + std::to_string(::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw std::runtime_error(tmp + ": cannot create: " + std::strerror(errno));
  auto write_all = [&](const void* p, std::size_t n) {
    const auto* c = static_cast<const char*>(p);
    while (n > 0) {
      const ssize_t w = ::write(fd, c, n);
      if (w < 0) {
        if (errno == EINTR) continue;
        const int e = errno;
        ::close(fd);
        ::unlink(tmp.c_str());
        throw std::runtime_error(tmp + ": write failed: " + std::strerror(e));
      }
      c += w;
      n -= static_cast<std::size_t>(w);
    }
  };
  unsigned char len[8];
  std::uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>((n >> (8 * i)) & 0xff);
  write_all(len, 8);
  write_all(text.data(), text.size());
  for (const auto& t : tensors)
    if (t.nbytes) write_all(t.data, t.nbytes);
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    const int e = errno;
    ::unlink(tmp.c_str());
    throw std::runtime_error(tmp + ": fsync/close failed: " + std::strerror(e));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int e = errno;
    ::unlink(tmp.c_str());
    throw std::runtime_error(path + ": rename from " + tmp + " failed: " + std::strerror(e));
  }
  // Make the rename itself durable.
  const std::string parent = fs::path(path).parent_path().empty() ? "." : fs::path(path).parent_path().string();
  const int dfd = ::open(parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

}  // namespace lal::lm
