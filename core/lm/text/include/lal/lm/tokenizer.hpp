// lal::lm::Tokenizer — Hugging Face `tokenizer.json` tokenizers without LibTorch.
//
// What it reads
//   A `tokenizer.json` as written by the Hugging Face `tokenizers` library (or a model directory holding one), and
//   the `tokenizer_config.json` next to it when present (for bos/eos/pad). Supported pieces:
//     model          BPE (byte-level or SentencePiece-style with byte fallback, `ignore_merges`, `fuse_unk`,
//                    `continuing_subword_prefix`, `end_of_word_suffix`; `dropout` is ignored: inference only)
//     normalizer     NFC, NFD, NFKC, NFKD, Lowercase, Strip, Prepend, Replace, Sequence
//     pre_tokenizer  Split (PCRE2 with UTF+UCP, all five behaviours, invert), ByteLevel, Metaspace, Digits,
//                    Whitespace, WhitespaceSplit, Sequence
//     post_processor TemplateProcessing, ByteLevel, BertProcessing, RobertaProcessing, Sequence
//     decoder        ByteLevel, Metaspace, Replace, ByteFallback, Fuse, Strip, BPEDecoder, Sequence
//     added_tokens   matched before normalization (or after it, for `normalized: true`), with the `lstrip`,
//                    `rstrip`, `single_word` and `special` flags as the Rust library applies them.
//   Anything else is refused at load time with a TokenizerError that names the file and the JSON key.
//
// What "matching Hugging Face" means here
//   encode() returns the ids of the Rust `tokenizers` library's `Tokenizer::encode(text, add_special_tokens)`;
//   decode() returns its `Tokenizer::decode(ids, skip_special_tokens)`. Deliberate differences, both documented at
//   the entry points below: (1) encode(..., true) never adds a BOS in front of text that already starts with it
//   (chat templates render the BOS text themselves); (2) transformers' Python-side
//   `clean_up_tokenization_spaces` is not applied by decode() — it is lossy and breaks streaming.
//
// Threading and ownership
//   A Tokenizer is an immutable value: a shared pointer to loaded tables. Copying is cheap (one atomic increment),
//   every const member may be called from any number of threads at once. A StreamDecoder is a small mutable object
//   owned by one generation loop; use one per stream, never share one between threads without a lock. It keeps the
//   tables alive by itself (it holds a copy of the Tokenizer).
//
// Errors
//   Loading and bad input throw TokenizerError; its what() names the file (for loading) and what is wrong, e.g.
//   "/m/tokenizer.json: model.merges[17]: token 'Ġx' is not in the vocabulary".
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace lal::lm {

/// Any failure to load a tokenizer, or input it cannot handle (invalid UTF-8 text, an id outside the vocabulary).
class TokenizerError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class Tokenizer {
 public:
  struct Impl;  // defined in src/; named here only so that the implementation files can share it

  /// Load `path`: a tokenizer.json, or a directory that contains one. A `tokenizer_config.json` in the same
  /// directory is read for bos/eos/pad when present. Throws TokenizerError naming the file on a missing file, bad
  /// JSON, a missing or unsupported component. Takes about 0.2–1 s for 150k-token vocabularies.
  static Tokenizer from_file(const std::string& path);
  /// The same from tokenizer.json text already in memory (no tokenizer_config.json: special tokens are guessed as
  /// from_file does without one). `name` stands for the file in error messages.
  static Tokenizer from_json(std::string_view json_text, const std::string& name);

  /// Text → ids. `text` must be valid UTF-8 (TokenizerError with the byte offset otherwise). With
  /// `add_special_tokens`, the post-processor's tokens are added (e.g. Llama-2's BOS), except that a leading special
  /// token the text already starts with is not added twice.
  std::vector<std::int32_t> encode(std::string_view text, bool add_special_tokens = false) const;

  /// Ids → text, through the file's decoder. Invalid byte sequences (possible when ids were sampled, not encoded)
  /// become U+FFFD exactly as Rust's String::from_utf8_lossy does; the result is always valid UTF-8. An id outside
  /// [0, vocab_size()) or a hole in the vocabulary throws TokenizerError.
  std::string decode(const std::vector<std::int32_t>& ids, bool skip_special_tokens = false) const;

  /// The id of a vocabulary entry or added token spelled exactly `token` (byte-level spelling, e.g. "Ġthe"), -1 when
  /// absent.
  std::int32_t token_to_id(std::string_view token) const;
  /// The spelling of `id` (added-token content for added tokens); TokenizerError when out of range.
  std::string id_to_token(std::int32_t id) const;
  /// Largest id + 1 over the base vocabulary and the added tokens.
  std::size_t vocab_size() const;
  /// True for added tokens flagged `special` (those skip_special_tokens drops).
  bool is_special(std::int32_t id) const;

  /// From tokenizer_config.json when it sits next to tokenizer.json (`bos_token` etc., a string or an
  /// {"content": ...} object; null means none); without that file, a best guess from the post-processor template
  /// and well-known token spellings (<s>, </s>, <|begin_of_text|>, <|endoftext|>, ...).
  std::optional<std::int32_t> bos_id() const;
  std::optional<std::int32_t> eos_id() const;
  std::optional<std::int32_t> pad_id() const;

  /// The file this tokenizer was loaded from.
  const std::string& source_path() const;

  /// Incremental detokenization for generation. push() takes the next id and returns the text that has become
  /// final (possibly empty); flush() returns whatever is still held back (end of stream) and resets the decoder.
  /// The concatenation of all returned pieces equals decode(all ids, skip_special_tokens). No returned piece is ever
  /// an incomplete UTF-8 sequence: bytes of a character split across tokens are held until the character is
  /// complete. Not thread-safe (one per stream); cost per push is a decode of a few recent tokens.
  class StreamDecoder {
   public:
    std::string push(std::int32_t id);
    std::string flush();

   private:
    friend class Tokenizer;
    StreamDecoder(std::shared_ptr<const Impl> impl, bool skip_special_tokens)
        : impl_(std::move(impl)), skip_special_tokens_(skip_special_tokens) {}
    std::shared_ptr<const Impl> impl_;  // keeps the tables alive
    bool skip_special_tokens_;
    std::vector<std::int32_t> window_;  // ids since the start of the previously emitted piece
    std::string prefix_;                // decode(window_[0, prefix_index_))
    std::size_t prefix_index_ = 0;
  };
  StreamDecoder stream_decoder(bool skip_special_tokens = true) const;

 private:
  explicit Tokenizer(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<const Impl> impl_;
};

}  // namespace lal::lm
