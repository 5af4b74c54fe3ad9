// Implementation of the text clean-up in text.h.
#include "datasets/text.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdint>
#include <string>

namespace tb::data {
namespace {

void append_utf8(std::string& out, std::uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

// cp1252 bytes 0x80..0x9F; the undefined ones map to U+FFFD.
constexpr std::array<std::uint16_t, 32> kCp1252 = {
    0x20AC, 0xFFFD, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160,
    0x2039, 0x0152, 0xFFFD, 0x017D, 0xFFFD, 0xFFFD, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022,
    0x2013, 0x2014, 0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0xFFFD, 0x017E, 0x0178};

std::string cp1252_to_utf8(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (unsigned char c : s) {
    if (c < 0x80) out += static_cast<char>(c);
    else if (c < 0xA0) append_utf8(out, kCp1252[c - 0x80]);
    else append_utf8(out, c);
  }
  return out;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string lower_ascii(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool is_space_at(std::string_view s, std::size_t i, std::size_t* len) {
  unsigned char c = s[i];
  if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v') {
    *len = 1;
    return true;
  }
  if (c == 0xC2 && i + 1 < s.size() && static_cast<unsigned char>(s[i + 1]) == 0xA0) {
    *len = 2;  // NBSP, common in HTML mail
    return true;
  }
  return false;
}

// Named HTML entities that occur in the corpora; anything else stays literal.
struct Entity {
  const char* name;
  std::uint32_t cp;
};
constexpr Entity kEntities[] = {
    {"amp", '&'},      {"lt", '<'},        {"gt", '>'},        {"quot", '"'},
    {"apos", '\''},    {"nbsp", 0xA0},     {"copy", 0xA9},     {"reg", 0xAE},
    {"trade", 0x2122}, {"mdash", 0x2014},  {"ndash", 0x2013},  {"hellip", 0x2026},
    {"lsquo", 0x2018}, {"rsquo", 0x2019},  {"ldquo", 0x201C},  {"rdquo", 0x201D},
    {"bull", 0x2022},  {"middot", 0xB7},   {"pound", 0xA3},    {"euro", 0x20AC},
    {"cent", 0xA2},    {"yen", 0xA5},      {"deg", 0xB0},      {"times", 0xD7},
    {"eacute", 0xE9},  {"egrave", 0xE8},   {"aacute", 0xE1},   {"agrave", 0xE0},
    {"ouml", 0xF6},    {"uuml", 0xFC},     {"auml", 0xE4},     {"szlig", 0xDF},
    {"ccedil", 0xE7},  {"iexcl", 0xA1},    {"iquest", 0xBF},   {"laquo", 0xAB},
    {"raquo", 0xBB},   {"sect", 0xA7},     {"para", 0xB6},     {"frac12", 0xBD}};

std::string decode_entities(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '&') {
      out += s[i];
      continue;
    }
    std::size_t semi = s.find(';', i + 1);
    if (semi == std::string_view::npos || semi - i > 10) {
      out += '&';
      continue;
    }
    std::string_view name = s.substr(i + 1, semi - i - 1);
    std::uint32_t cp = 0;
    bool ok = false;
    if (name.size() > 1 && name[0] == '#') {
      bool hex = name[1] == 'x' || name[1] == 'X';
      std::string_view digits = name.substr(hex ? 2 : 1);
      ok = !digits.empty();
      for (char c : digits) {
        int v = hex ? hex_value(c) : (std::isdigit(static_cast<unsigned char>(c)) ? c - '0' : -1);
        if (v < 0 || cp > 0x10FFFF) {
          ok = false;
          break;
        }
        cp = cp * (hex ? 16 : 10) + static_cast<std::uint32_t>(v);
      }
      if (ok && (cp == 0 || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))) cp = 0xFFFD;
      // cp1252 numeric references (&#146;) are what those mailers meant.
      if (ok && cp >= 0x80 && cp < 0xA0) cp = kCp1252[cp - 0x80];
    } else {
      for (const auto& e : kEntities)
        if (name == e.name) {
          cp = e.cp;
          ok = true;
          break;
        }
    }
    if (!ok) {
      out += '&';
      continue;
    }
    append_utf8(out, cp);
    i = semi;
  }
  return out;
}

bool is_block_tag(std::string_view tag) {
  static const char* kBlock[] = {"br", "p", "div", "tr", "li", "h1", "h2", "h3", "h4", "h5",
                                 "h6", "table", "ul", "ol", "blockquote", "hr", "title", "pre",
                                 "center", "dd", "dt", "form"};
  for (const char* b : kBlock)
    if (tag == b) return true;
  return false;
}

}  // namespace

std::optional<std::size_t> find_invalid_utf8(std::string_view s) {
  std::size_t i = 0;
  const std::size_t n = s.size();
  while (i < n) {
    unsigned char c = s[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    int len;
    std::uint32_t cp;
    if ((c & 0xE0) == 0xC0) len = 2, cp = c & 0x1F;
    else if ((c & 0xF0) == 0xE0) len = 3, cp = c & 0x0F;
    else if ((c & 0xF8) == 0xF0) len = 4, cp = c & 0x07;
    else return i;
    if (i + len > n) return i;
    for (int k = 1; k < len; ++k) {
      unsigned char d = s[i + k];
      if ((d & 0xC0) != 0x80) return i;
      cp = (cp << 6) | (d & 0x3F);
    }
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
        cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
      return i;
    i += len;
  }
  return std::nullopt;
}

std::string to_utf8(std::string_view bytes, std::string_view charset) {
  const std::string cs = lower_ascii(charset);
  const bool latin = cs == "iso-8859-1" || cs == "iso-8859-15" || cs == "latin1" ||
                     cs == "windows-1252" || cs == "cp1252";
  if (!latin && !find_invalid_utf8(bytes)) return std::string(bytes);
  return cp1252_to_utf8(bytes);
}

std::string normalize_space(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  bool pending = false;
  for (std::size_t i = 0; i < s.size();) {
    std::size_t len;
    if (is_space_at(s, i, &len)) {
      pending = !out.empty();
      i += len;
      continue;
    }
    if (pending) out += ' ';
    pending = false;
    out += s[i++];
  }
  return out;
}

std::string normalize_lines(std::string_view s) {
  std::string out;
  std::size_t blank_run = 0;
  std::size_t start = 0;
  while (start <= s.size()) {
    std::size_t end = s.find('\n', start);
    if (end == std::string_view::npos) end = s.size();
    std::string line = normalize_space(s.substr(start, end - start));
    if (line.empty()) {
      ++blank_run;
    } else {
      if (!out.empty()) out += blank_run > 0 ? "\n\n" : "\n";
      out += line;
      blank_run = 0;
    }
    start = end + 1;
  }
  return out;
}

std::string text_key(std::string_view s) { return lower_ascii(normalize_space(s)); }

std::string strip_overstrike(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    if (c == '\b') {
      if (!out.empty()) {
        // Drop the whole previous UTF-8 character, not just its last byte.
        while (!out.empty() && (static_cast<unsigned char>(out.back()) & 0xC0) == 0x80)
          out.pop_back();
        if (!out.empty()) out.pop_back();
      }
      continue;
    }
    out += c;
  }
  return out;
}

std::string decode_quoted_printable(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '=') {
      out += s[i];
      continue;
    }
    if (i + 1 < s.size() && (s[i + 1] == '\n' || s[i + 1] == '\r')) {
      i += (s[i + 1] == '\r' && i + 2 < s.size() && s[i + 2] == '\n') ? 2 : 1;
      continue;
    }
    // "=" followed by trailing spaces then a line break is also a soft break.
    std::size_t j = i + 1;
    while (j < s.size() && (s[j] == ' ' || s[j] == '\t')) ++j;
    if (j > i + 1 && (j == s.size() || s[j] == '\n' || s[j] == '\r')) {
      i = (j < s.size() && s[j] == '\r' && j + 1 < s.size() && s[j + 1] == '\n') ? j + 1 : j;
      continue;
    }
    int hi = i + 1 < s.size() ? hex_value(s[i + 1]) : -1;
    int lo = i + 2 < s.size() ? hex_value(s[i + 2]) : -1;
    if (hi >= 0 && lo >= 0) {
      out += static_cast<char>(hi * 16 + lo);
      i += 2;
    } else {
      out += '=';
    }
  }
  return out;
}

std::string decode_base64(std::string_view s) {
  std::string out;
  std::uint32_t acc = 0;
  int bits = 0;
  for (char c : s) {
    int v;
    if (c >= 'A' && c <= 'Z') v = c - 'A';
    else if (c >= 'a' && c <= 'z') v = c - 'a' + 26;
    else if (c >= '0' && c <= '9') v = c - '0' + 52;
    else if (c == '+') v = 62;
    else if (c == '/') v = 63;
    else if (c == '=') break;
    else continue;
    acc = (acc << 6) | static_cast<std::uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> bits) & 0xFF);
    }
  }
  return out;
}

std::string decode_header_words(std::string_view s) {
  std::string out;
  std::size_t i = 0;
  bool last_was_word = false;
  while (i < s.size()) {
    std::size_t start = s.find("=?", i);
    if (start == std::string_view::npos) {
      out += to_utf8(s.substr(i), "");
      break;
    }
    std::size_t q1 = s.find('?', start + 2);
    std::size_t q2 = q1 == std::string_view::npos ? q1 : s.find('?', q1 + 1);
    std::size_t end = q2 == std::string_view::npos ? q2 : s.find("?=", q2 + 1);
    if (end == std::string_view::npos || q2 != q1 + 2) {
      out += to_utf8(s.substr(i), "");
      break;
    }
    std::string_view between = s.substr(i, start - i);
    // Whitespace between two adjacent encoded words is not part of the text (RFC 2047 §6.2).
    if (!(last_was_word && normalize_space(between).empty())) out += to_utf8(between, "");
    std::string charset(s.substr(start + 2, q1 - start - 2));
    char enc = static_cast<char>(std::toupper(static_cast<unsigned char>(s[q1 + 1])));
    std::string_view payload = s.substr(q2 + 1, end - q2 - 1);
    std::string raw;
    if (enc == 'B') {
      raw = decode_base64(payload);
    } else {
      std::string p(payload);
      std::replace(p.begin(), p.end(), '_', ' ');
      raw = decode_quoted_printable(p);
    }
    out += to_utf8(raw, charset);
    last_was_word = true;
    i = end + 2;
  }
  return out;
}

std::string html_to_text(std::string_view html) {
  std::string text;
  text.reserve(html.size());
  std::size_t i = 0;
  const std::size_t n = html.size();
  auto lower_at = [&](std::size_t p, std::string_view word) {
    if (p + word.size() > n) return false;
    for (std::size_t k = 0; k < word.size(); ++k)
      if (std::tolower(static_cast<unsigned char>(html[p + k])) != word[k]) return false;
    return true;
  };
  while (i < n) {
    if (html[i] != '<') {
      text += html[i++];
      continue;
    }
    if (lower_at(i, "<!--")) {
      std::size_t e = html.find("-->", i + 4);
      i = e == std::string_view::npos ? n : e + 3;
      continue;
    }
    std::size_t j = i + 1;
    bool closing = j < n && html[j] == '/';
    if (closing) ++j;
    std::size_t name_start = j;
    while (j < n && (std::isalnum(static_cast<unsigned char>(html[j])))) ++j;
    if (j == name_start && !(j < n && html[j] == '!')) {  // a bare '<' in text
      text += html[i++];
      continue;
    }
    std::string name = lower_ascii(html.substr(name_start, j - name_start));
    // Skip to the end of the tag, honouring quoted attribute values.
    char quote = 0;
    while (j < n) {
      char c = html[j];
      if (quote) {
        if (c == quote) quote = 0;
      } else if (c == '"' || c == '\'') {
        quote = c;
      } else if (c == '>') {
        break;
      }
      ++j;
    }
    i = j < n ? j + 1 : n;
    if (!closing && (name == "script" || name == "style" || name == "head")) {
      // Content is not text; skip to the matching close tag.
      std::string close = "</" + name;
      std::size_t k = i;
      while (k < n && !lower_at(k, close)) ++k;
      std::size_t e = html.find('>', k);
      i = (k >= n || e == std::string_view::npos) ? n : e + 1;
      continue;
    }
    if (is_block_tag(name)) text += '\n';
    else if (name == "td" || name == "th") text += ' ';
  }
  return normalize_lines(decode_entities(text));
}

std::string truncate_utf8(std::string_view s, std::size_t max_bytes) {
  if (s.size() <= max_bytes) return std::string(s);
  std::size_t cut = max_bytes;
  while (cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xC0) == 0x80) --cut;
  return std::string(s.substr(0, cut));
}

}  // namespace tb::data
