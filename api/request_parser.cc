#include "api/request_parser.h"

#include <cctype>
#include <climits>
#include <cstdint>
#include <string>
#include <utility>

namespace uw::api {
namespace {

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

void LowerInPlace(std::string& s) {
  for (char& c : s) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
}

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    char x = a[i], y = b[i];
    if (x >= 'A' && x <= 'Z') x = static_cast<char>(x - 'A' + 'a');
    if (y >= 'A' && y <= 'Z') y = static_cast<char>(y - 'A' + 'a');
    if (x != y) return false;
  }
  return true;
}

// Request line framing not seen by callbacks: method, spaces, " HTTP/1.1\r\n".
constexpr size_t kRequestLineOverhead = 12;
// ": " and "\r\n" around each header line.
constexpr size_t kHeaderLineOverhead = 4;

}  // namespace

bool IsValidUtf8(std::string_view s) {
  size_t i = 0;
  const size_t n = s.size();
  while (i < n) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    uint32_t cp;
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
      cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      cp = c & 0x07;
    } else {
      return false;  // a continuation byte first, 0xC0/0xC1 (overlong) or past 0xF4
    }
    if (n - i < len) return false;
    for (size_t k = 1; k < len; ++k) {
      auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    if ((len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF))) {
      return false;
    }
    i += len;
  }
  return true;
}

std::string PercentEncode(std::string_view in) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(in.size());
  for (unsigned char c : in) {
    if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 0xF]);
    }
  }
  return out;
}

Result<std::string> PercentDecode(std::string_view in, bool plus_is_space) {
  std::string out;
  out.reserve(in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    char c = in[i];
    if (c == '%') {
      if (i + 2 >= in.size()) {
        return InvalidArgumentError("truncated %-escape in '" + std::string(in) + "'");
      }
      int hi = HexValue(in[i + 1]);
      int lo = HexValue(in[i + 2]);
      if (hi < 0 || lo < 0) {
        return InvalidArgumentError("bad %-escape in '" + std::string(in) + "'");
      }
      char decoded = static_cast<char>(hi * 16 + lo);
      if (decoded == '\0') return InvalidArgumentError("encoded NUL in '" + std::string(in) + "'");
      out.push_back(decoded);
      i += 2;
    } else if (c == '+' && plus_is_space) {
      out.push_back(' ');
    } else {
      out.push_back(c);
    }
  }
  return out;
}

Status ParseQuery(std::string_view query, std::map<std::string, std::string>* out) {
  while (!query.empty()) {
    size_t amp = query.find('&');
    std::string_view pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    if (pair.empty()) continue;
    size_t eq = pair.find('=');
    auto key = PercentDecode(pair.substr(0, eq), true);
    if (!key.ok()) return key.status().WithContext("query");
    std::string value;
    if (eq != std::string_view::npos) {
      auto v = PercentDecode(pair.substr(eq + 1), true);
      if (!v.ok()) return v.status().WithContext("query");
      value = std::move(v).value();
    }
    (*out)[std::move(key).value()] = std::move(value);
  }
  return Status::Ok();
}

RequestParser::RequestParser(ParserLimits limits) : limits_(limits) {
  http_parser_init(&parser_, HTTP_REQUEST);
  parser_.data = this;
}

RequestParser::Outcome RequestParser::Feed(std::string_view data, size_t* consumed) {
  *consumed = 0;
  if (error_http_status_ != 0) return Outcome::kError;
  if (data.empty()) return Outcome::kNeedMore;
  if (HTTP_PARSER_ERRNO(&parser_) == HPE_PAUSED) http_parser_pause(&parser_, 0);
  complete_ = false;
  size_t n = http_parser_execute(&parser_, &Settings(), data.data(), data.size());
  *consumed = n;
  if (error_http_status_ != 0) return Outcome::kError;  // one of our callbacks refused
  if (complete_) return Outcome::kRequest;              // paused right after the message
  auto err = static_cast<http_errno>(HTTP_PARSER_ERRNO(&parser_));
  if (err == HPE_HEADER_OVERFLOW) {
    Fail(431, ResourceExhaustedError("request head larger than the server accepts"));
    return Outcome::kError;
  }
  if (err != HPE_OK) {
    Fail(400, InvalidArgumentError(std::string("malformed request: ") + http_errno_description(err)));
    return Outcome::kError;
  }
  if (n != data.size()) {
    // http-parser stops early only on errors, pauses and upgrades; treat anything else as junk.
    Fail(400, InvalidArgumentError("malformed request: unexpected data"));
    return Outcome::kError;
  }
  return Outcome::kNeedMore;
}

ParsedRequest RequestParser::TakeRequest() {
  ParsedRequest out = std::move(current_);
  current_ = ParsedRequest();
  return out;
}

bool RequestParser::TakeExpectContinue() {
  bool v = expect_continue_;
  expect_continue_ = false;
  return v;
}

int RequestParser::Fail(int http_status, Status status) {
  if (error_http_status_ == 0) {
    error_http_status_ = http_status;
    error_ = std::move(status);
  }
  return -1;
}

bool RequestParser::CountHead(size_t n) {
  head_bytes_ += n;
  if (head_bytes_ > limits_.max_header_bytes) {
    Fail(431,
         ResourceExhaustedError("request head larger than " + std::to_string(limits_.max_header_bytes) + " bytes"));
    return false;
  }
  return true;
}

void RequestParser::StoreHeader() {
  if (field_.empty()) return;
  LowerInPlace(field_);
  auto [it, inserted] = current_.request.headers.try_emplace(field_, value_);
  if (!inserted) {
    // Repeated header lines combine into one comma-separated value (RFC 9110 5.3).
    it->second += ", ";
    it->second += value_;
  }
  field_.clear();
  value_.clear();
}

int RequestParser::OnMessageBegin(http_parser* p) {
  auto* self = static_cast<RequestParser*>(p->data);
  self->current_ = ParsedRequest();
  self->field_.clear();
  self->value_.clear();
  self->last_was_value_ = false;
  self->head_bytes_ = 0;
  self->in_message_ = true;
  self->in_head_ = true;
  self->expect_continue_ = false;
  return self->CountHead(kRequestLineOverhead) ? 0 : -1;
}

int RequestParser::OnUrl(http_parser* p, const char* at, size_t len) {
  auto* self = static_cast<RequestParser*>(p->data);
  if (!self->CountHead(len)) return -1;
  self->current_.request.target.append(at, len);
  return 0;
}

int RequestParser::OnHeaderField(http_parser* p, const char* at, size_t len) {
  auto* self = static_cast<RequestParser*>(p->data);
  if (self->last_was_value_) {
    self->StoreHeader();
    self->last_was_value_ = false;
  }
  if (self->field_.empty() && !self->CountHead(kHeaderLineOverhead)) return -1;
  if (!self->CountHead(len)) return -1;
  // A field name is a token (RFC 9110 5.1): http-parser lets "Host : x" through, which a proxy in
  // front may read differently (RFC 9112 5.1: whitespace before the colon must be refused).
  for (size_t i = 0; i < len; ++i) {
    const unsigned char c = static_cast<unsigned char>(at[i]);
    if (!std::isalnum(c) && std::string_view("!#$%&'*+-.^_`|~").find(static_cast<char>(c)) == std::string_view::npos) {
      return self->Fail(400, InvalidArgumentError("malformed request: a header name may only hold token characters "
                                                  "(no spaces before the colon)"));
    }
  }
  self->field_.append(at, len);
  return 0;
}

int RequestParser::OnHeaderValue(http_parser* p, const char* at, size_t len) {
  auto* self = static_cast<RequestParser*>(p->data);
  self->last_was_value_ = true;
  if (!self->CountHead(len)) return -1;
  self->value_.append(at, len);
  return 0;
}

int RequestParser::OnHeadersComplete(http_parser* p) {
  auto* self = static_cast<RequestParser*>(p->data);
  self->StoreHeader();
  self->in_head_ = false;
  Request& req = self->current_.request;
  req.method = http_method_str(static_cast<http_method>(p->method));
  self->current_.http_1_0 = p->http_major < 1 || (p->http_major == 1 && p->http_minor == 0);

  // Request-target: origin-form "/p?q", or absolute-form "http://host/p?q" (RFC 9112 3.2.2).
  std::string_view target = req.target;
  for (std::string_view scheme : {"http://", "https://"}) {
    if (target.size() >= scheme.size() && EqualsIgnoreCase(target.substr(0, scheme.size()), scheme)) {
      size_t slash = target.find('/', scheme.size());
      target = slash == std::string_view::npos ? std::string_view("/") : target.substr(slash);
      break;
    }
  }
  if (target.empty() || target[0] != '/') {
    return self->Fail(400, InvalidArgumentError("malformed request: target must start with '/'"));
  }
  target = target.substr(0, target.find('#'));
  size_t qmark = target.find('?');
  auto path = PercentDecode(target.substr(0, qmark), false);
  if (!path.ok()) return self->Fail(400, path.status().WithContext("malformed request: path"));
  req.path = std::move(path).value();
  if (!IsValidUtf8(req.path)) {
    return self->Fail(400, InvalidArgumentError("malformed request: path is not valid UTF-8"));
  }
  if (qmark != std::string_view::npos) {
    Status st = ParseQuery(target.substr(qmark + 1), &req.query);
    if (!st.ok()) return self->Fail(400, st.WithContext("malformed request"));
    for (const auto& [key, value] : req.query) {
      if (!IsValidUtf8(key) || !IsValidUtf8(value)) {
        return self->Fail(400, InvalidArgumentError("malformed request: query is not valid UTF-8"));
      }
    }
  }
  // Header values reach handlers (idempotency keys, tokens) and from there stored state and JSON
  // answers, where bytes that are not UTF-8 would fail to serialize.
  for (const auto& [name, value] : req.headers) {
    if (!IsValidUtf8(value)) {
      return self->Fail(400, InvalidArgumentError("malformed request: header " + name + " is not valid UTF-8"));
    }
  }
  if (target.size() != req.target.size()) req.target = std::string(target);
  // The only transfer coding this server decodes is chunked: "gzip, chunked" would hand a
  // handler compressed bytes as the body, and a front end may frame it differently (RFC 9112 6.1:
  // a coding the server does not understand is answered 501).
  if (auto te = req.headers.find("transfer-encoding"); te != req.headers.end()) {
    std::string coding = te->second;
    coding.erase(0, coding.find_first_not_of(" \t"));
    coding.erase(coding.find_last_not_of(" \t") + 1);
    if (!EqualsIgnoreCase(coding, "chunked")) {
      return self->Fail(501, UnimplementedError("malformed request: transfer coding '" + coding +
                                                "' is not supported (only chunked)"));
    }
  }

  self->body_limit_ = self->limits_.router != nullptr
                          ? self->limits_.router->MaxBodyBytes(req, self->limits_.max_body_bytes)
                          : self->limits_.max_body_bytes;
  const bool has_length = p->content_length != ULLONG_MAX && (p->flags & F_CHUNKED) == 0;
  if (has_length && p->content_length > self->body_limit_) {
    return self->Fail(
        413, ResourceExhaustedError("request body of " + std::to_string(p->content_length) +
                                    " bytes exceeds the limit of " + std::to_string(self->body_limit_) + " bytes"));
  }
  auto expect = req.headers.find("expect");
  if (expect != req.headers.end() && EqualsIgnoreCase(expect->second, "100-continue") && !self->current_.http_1_0 &&
      ((p->flags & F_CHUNKED) != 0 || (has_length && p->content_length > 0))) {
    self->expect_continue_ = true;
  }
  if (has_length) req.body.reserve(static_cast<size_t>(p->content_length));
  return 0;
}

int RequestParser::OnBody(http_parser* p, const char* at, size_t len) {
  auto* self = static_cast<RequestParser*>(p->data);
  std::string& body = self->current_.request.body;
  if (body.size() + len > self->body_limit_) {
    return self->Fail(413, ResourceExhaustedError("request body exceeds the limit of " +
                                                  std::to_string(self->body_limit_) + " bytes"));
  }
  body.append(at, len);
  return 0;
}

int RequestParser::OnMessageComplete(http_parser* p) {
  auto* self = static_cast<RequestParser*>(p->data);
  // An upgrade (or CONNECT) would switch protocols after this message: answer it and close.
  self->current_.keep_alive = http_should_keep_alive(p) != 0 && p->upgrade == 0;
  self->complete_ = true;
  self->in_message_ = false;
  self->expect_continue_ = false;
  // Stop here: the caller answers this request before the next pipelined one is parsed.
  http_parser_pause(p, 1);
  return 0;
}

const http_parser_settings& RequestParser::Settings() {
  static const http_parser_settings settings = [] {
    http_parser_settings s;
    http_parser_settings_init(&s);
    s.on_message_begin = &RequestParser::OnMessageBegin;
    s.on_url = &RequestParser::OnUrl;
    s.on_header_field = &RequestParser::OnHeaderField;
    s.on_header_value = &RequestParser::OnHeaderValue;
    s.on_headers_complete = &RequestParser::OnHeadersComplete;
    s.on_body = &RequestParser::OnBody;
    s.on_message_complete = &RequestParser::OnMessageComplete;
    return s;
  }();
  return settings;
}

}  // namespace uw::api
