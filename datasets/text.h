// Text clean-up shared by the dataset builders and loaders: UTF-8 validation (a loader must
// name the line of a bad byte), legacy-charset conversion (old mail is Latin-1/cp1252),
// MIME transfer decodings, HTML to plain text, and the whitespace/case normalisation that
// defines when two texts are "the same" for splitting and for pretraining dedup.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace tb::data {

// Byte offset of the first invalid UTF-8 sequence (overlong, surrogate, > U+10FFFF,
// truncated), or nullopt if the bytes are valid UTF-8.
std::optional<std::size_t> find_invalid_utf8(std::string_view s);

// Bytes in the given charset to UTF-8. A Latin-1/cp1252 label is decoded as cp1252 (the
// de-facto superset mailers of that era sent); any other label (UTF-8, ASCII, unknown) keeps
// bytes that validate as UTF-8 and reads the rest as cp1252, so the result is always valid.
std::string to_utf8(std::string_view bytes, std::string_view charset);

// Collapses every run of whitespace (incl. NBSP) to one space and trims both ends.
std::string normalize_space(std::string_view s);

// Like normalize_space, but keeps line breaks (runs of blank lines become one empty line)
// so passages keep their shape; trailing spaces per line are removed.
std::string normalize_lines(std::string_view s);

// The identity of a text for dedup: normalize_space + ASCII lower-case.
std::string text_key(std::string_view s);

// Removes backspace overstriking ("_\bX" or "X\bX", used for underline/bold in fortunes).
std::string strip_overstrike(std::string_view s);

// RFC 2045 quoted-printable (soft line breaks, =XX escapes); malformed escapes are kept
// literally, as mail readers do.
std::string decode_quoted_printable(std::string_view s);

// RFC 4648 base64; characters outside the alphabet (line breaks) are skipped and decoding
// stops at padding.
std::string decode_base64(std::string_view s);

// RFC 2047 encoded words (=?charset?Q|B?...?=) in a header value, decoded to UTF-8.
std::string decode_header_words(std::string_view s);

// HTML to readable text: drops comments, <script>/<style>/<head> content and tags, turns
// block elements and <br> into line breaks, decodes character references.
std::string html_to_text(std::string_view html);

// Truncates to at most max_bytes without splitting a UTF-8 sequence.
std::string truncate_utf8(std::string_view s, std::size_t max_bytes);

}  // namespace tb::data
