// A small MIME walker: enough of RFC 2045/2046 to turn real 2002-era mail into text. It is
// lenient on purpose (spam is often malformed): a missing boundary or unknown encoding
// degrades to treating the part as plain text, never to an error.
#include "datasets/mime.h"

#include <algorithm>
#include <cctype>
#include <map>
#include <vector>

#include "datasets/text.h"

namespace tb::data {
namespace {

struct Part {
  std::map<std::string, std::string> headers;  // lower-case name -> unfolded value
  std::string_view body;
};

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// Splits header block and body at the first empty line; unfolds continuation lines.
Part split_part(std::string_view raw) {
  Part p;
  std::size_t pos = 0;
  std::string name, value;
  auto flush = [&] {
    if (!name.empty() && !p.headers.count(name)) p.headers[name] = normalize_space(value);
    name.clear();
    value.clear();
  };
  while (pos < raw.size()) {
    std::size_t eol = raw.find('\n', pos);
    if (eol == std::string_view::npos) eol = raw.size();
    std::string_view line = raw.substr(pos, eol - pos);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    pos = std::min(eol + 1, raw.size());
    if (line.empty()) {
      flush();
      p.body = raw.substr(pos);
      return p;
    }
    if (line[0] == ' ' || line[0] == '\t') {
      value += ' ';
      value.append(line);
      continue;
    }
    std::size_t colon = line.find(':');
    if (colon == std::string_view::npos) continue;  // mbox "From " line or junk
    flush();
    name = lower(normalize_space(line.substr(0, colon)));
    value = std::string(line.substr(colon + 1));
  }
  flush();
  p.body = std::string_view();
  return p;
}

// Value of a parameter (boundary, charset) in a Content-Type header.
std::string header_param(const std::string& header, std::string_view param) {
  std::string h = lower(header);
  std::size_t pos = 0;
  const std::string key = std::string(param) + "=";
  while ((pos = h.find(key, pos)) != std::string::npos) {
    if (pos > 0 && !(h[pos - 1] == ';' || h[pos - 1] == ' ' || h[pos - 1] == '\t')) {
      pos += key.size();
      continue;
    }
    std::size_t v = pos + key.size();
    if (v < header.size() && header[v] == '"') {
      std::size_t e = header.find('"', v + 1);
      return header.substr(v + 1, e == std::string::npos ? std::string::npos : e - v - 1);
    }
    std::size_t e = header.find_first_of("; \t", v);
    return header.substr(v, e == std::string::npos ? std::string::npos : e - v);
  }
  return "";
}

std::string media_type(const Part& p) {
  auto it = p.headers.find("content-type");
  if (it == p.headers.end()) return "text/plain";
  std::string t = lower(it->second.substr(0, it->second.find(';')));
  t = normalize_space(t);
  return t.empty() ? "text/plain" : t;
}

std::string decode_body(const Part& p) {
  auto it = p.headers.find("content-transfer-encoding");
  std::string enc = it == p.headers.end() ? "" : lower(normalize_space(it->second));
  if (enc == "quoted-printable") return decode_quoted_printable(p.body);
  if (enc == "base64") return decode_base64(p.body);
  return std::string(p.body);
}

std::vector<std::string_view> split_multipart(std::string_view body, const std::string& boundary) {
  std::vector<std::string_view> parts;
  const std::string delim = "--" + boundary;
  std::size_t pos = 0;
  std::size_t start = std::string_view::npos;
  while (pos <= body.size()) {
    std::size_t eol = body.find('\n', pos);
    if (eol == std::string_view::npos) eol = body.size();
    std::string_view line = body.substr(pos, eol - pos);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.substr(0, delim.size()) == delim) {
      if (start != std::string_view::npos) parts.push_back(body.substr(start, pos - start));
      if (line.substr(delim.size(), 2) == "--") return parts;
      start = std::min(eol + 1, body.size());
    }
    if (eol == body.size()) break;
    pos = eol + 1;
  }
  if (start != std::string_view::npos) parts.push_back(body.substr(start));
  return parts;
}

std::string part_text(const Part& p, int depth) {
  const std::string type = media_type(p);
  if (type.rfind("multipart/", 0) == 0 && depth < 8) {
    std::string boundary = header_param(p.headers.at("content-type"), "boundary");
    if (!boundary.empty()) {
      std::vector<Part> children;
      for (std::string_view raw : split_multipart(p.body, boundary))
        children.push_back(split_part(raw));
      if (type == "multipart/alternative") {
        // One rendering is enough: the plain one if present, else the first that has text.
        for (const Part& c : children)
          if (media_type(c) == "text/plain") return part_text(c, depth + 1);
        for (const Part& c : children) {
          std::string t = part_text(c, depth + 1);
          if (!t.empty()) return t;
        }
        return "";
      }
      std::string out;
      for (const Part& c : children) {
        std::string t = part_text(c, depth + 1);
        if (t.empty()) continue;
        if (!out.empty()) out += "\n\n";
        out += t;
      }
      return out;
    }
  }
  if (type == "message/rfc822" && depth < 8) return part_text(split_part(p.body), depth + 1);
  auto disp = p.headers.find("content-disposition");
  if (disp != p.headers.end() && lower(disp->second).rfind("attachment", 0) == 0 &&
      type != "text/plain")
    return "";
  if (type.rfind("text/", 0) != 0 && type.rfind("multipart/", 0) != 0) return "";
  auto ct = p.headers.find("content-type");
  std::string charset = ct == p.headers.end() ? "" : header_param(ct->second, "charset");
  std::string text = to_utf8(decode_body(p), charset);
  if (type == "text/html") return html_to_text(text);
  // Some spam is HTML sent as text/plain; treat a body that opens like HTML as HTML.
  std::string head = lower(normalize_space(text.substr(0, 200)));
  if (head.rfind("<html", 0) == 0 || head.rfind("<!doctype html", 0) == 0)
    return html_to_text(text);
  return normalize_lines(text);
}

}  // namespace

MailText mail_to_text(std::string_view raw) {
  Part top = split_part(raw);
  MailText m;
  auto it = top.headers.find("subject");
  if (it != top.headers.end()) m.subject = normalize_space(decode_header_words(it->second));
  m.body = part_text(top, 0);
  return m;
}

}  // namespace tb::data
