// UTF-8 helpers, Unicode normalization (ICU) and the GPT-2 byte-level alphabet. Internal to lal_tokenizer.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace lal::lm::text {

/// Offset of the first byte that does not start a well-formed UTF-8 sequence, or s.size() when s is valid.
std::size_t first_invalid_utf8(std::string_view s);

/// Rust's String::from_utf8_lossy: every maximal invalid subpart becomes one U+FFFD.
std::string utf8_lossy(std::string_view bytes);

/// Decodes the code point at s[i] (s must be valid UTF-8) and advances i.
inline char32_t next_code_point(std::string_view s, std::size_t& i) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  if (b0 < 0x80) {
    ++i;
    return b0;
  }
  if (b0 < 0xE0) {
    const char32_t cp = ((b0 & 0x1Fu) << 6) | (static_cast<unsigned char>(s[i + 1]) & 0x3Fu);
    i += 2;
    return cp;
  }
  if (b0 < 0xF0) {
    const char32_t cp = ((b0 & 0x0Fu) << 12) | ((static_cast<unsigned char>(s[i + 1]) & 0x3Fu) << 6) |
                        (static_cast<unsigned char>(s[i + 2]) & 0x3Fu);
    i += 3;
    return cp;
  }
  const char32_t cp = ((b0 & 0x07u) << 18) | ((static_cast<unsigned char>(s[i + 1]) & 0x3Fu) << 12) |
                      ((static_cast<unsigned char>(s[i + 2]) & 0x3Fu) << 6) |
                      (static_cast<unsigned char>(s[i + 3]) & 0x3Fu);
  i += 4;
  return cp;
}

/// Length in bytes of the UTF-8 sequence whose lead byte is `lead` (valid input assumed).
inline std::size_t utf8_length(unsigned char lead) { return lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4; }

void append_utf8(std::string& out, char32_t cp);

/// Rust's char::is_whitespace (Unicode White_Space).
bool is_whitespace(char32_t cp);
/// Rust's char::is_alphanumeric (Alphabetic or Numeric), plus '_' : the "word character" of added-token matching.
bool is_word_char(char32_t cp);
/// Unicode general category P* (punctuation), as the Punctuation/Whitespace pre-tokenizers use.
bool is_punctuation(char32_t cp);

enum class NormalForm { NFC, NFD, NFKC, NFKD };
/// Normalizes valid UTF-8 with ICU.
std::string normalize_unicode(std::string_view s, NormalForm form);
/// Full Unicode lowercase (ICU, root locale), as Rust's str::to_lowercase.
std::string to_lowercase(std::string_view s);

/// GPT-2's reversible byte → printable-character table used by the ByteLevel pre-tokenizer and decoder.
struct ByteLevelAlphabet {
  std::array<std::string, 256> byte_to_utf8;  // each a 1- or 2-byte UTF-8 string
  std::array<int, 324> char_to_byte;          // code point (< 324) → byte, -1 when not in the alphabet
  static const ByteLevelAlphabet& get();
};

}  // namespace lal::lm::text
