// The bytes of an answer: status line, headers (the server owns framing) and a Content-Length body.
#include <http_parser.h>

#include <string>
#include <string_view>

#include "api/http.h"
#include "api/server_core.h"

namespace uw::api::internal {
namespace {

std::string_view ReasonPhrase(int status) {
  const char* s = http_status_str(static_cast<http_status>(status));
  if (s == nullptr || s[0] == '<') return "Unknown";
  return s;
}

bool IsFramingHeader(std::string_view name) {
  std::string lower(name);
  for (char& c : lower) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return lower == "content-length" || lower == "transfer-encoding" || lower == "connection" || lower == "content-type";
}

bool HasControl(std::string_view s) {
  for (char c : s) {
    if (c == '\r' || c == '\n' || c == '\0') return true;
  }
  return false;
}

bool BodyAllowed(int status) { return status >= 200 && status != 204 && status != 304; }

}  // namespace

std::string SerializeHead(const Response& resp, long long content_length, bool chunked, bool keep_alive) {
  std::string out;
  out.reserve(160);
  out += "HTTP/1.1 ";
  out += std::to_string(resp.status);
  out += ' ';
  out += ReasonPhrase(resp.status);
  out += "\r\n";
  if (!resp.content_type.empty() && !HasControl(resp.content_type)) {
    out += "Content-Type: ";
    out += resp.content_type;
    out += "\r\n";
  }
  for (const auto& [name, value] : resp.headers) {
    if (name.empty() || IsFramingHeader(name) || HasControl(name) || HasControl(value) ||
        name.find(':') != std::string::npos) {
      continue;
    }
    out += name;
    out += ": ";
    out += value;
    out += "\r\n";
  }
  if (content_length >= 0) {
    out += "Content-Length: ";
    out += std::to_string(content_length);
    out += "\r\n";
  }
  if (chunked) out += "Transfer-Encoding: chunked\r\n";
  out += keep_alive ? "Connection: keep-alive\r\n" : "Connection: close\r\n";
  out += "\r\n";
  return out;
}

std::string SerializeResponse(const Response& resp, bool keep_alive, bool head_only) {
  bool with_body = BodyAllowed(resp.status);
  std::string out = SerializeHead(resp, with_body ? static_cast<long long>(resp.body.size()) : -1, false, keep_alive);
  if (with_body && !head_only) out += resp.body;
  return out;
}

}  // namespace uw::api::internal
