// RFC 822/2045 mail to plain text for the spam task: the header block is dropped (only the
// Subject survives, as the first line, because it is the part a person wrote), multipart
// bodies are walked (text/plain preferred over text/html inside multipart/alternative,
// other text parts concatenated, attachments skipped), quoted-printable and base64 decoded,
// charsets converted to UTF-8 and HTML turned into text.
#pragma once

#include <string>
#include <string_view>

namespace tb::data {

struct MailText {
  std::string subject;  // decoded Subject header, whitespace-normalised
  std::string body;     // decoded, de-HTMLed body, line structure kept
};

MailText mail_to_text(std::string_view raw);

}  // namespace tb::data
