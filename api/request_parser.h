// Private to api/: the bytes -> Request half of the server, without sockets (so it can be unit
// tested and fuzzed on its own).
//
// RequestParser wraps one http-parser in request mode for one connection. Feed() consumes bytes
// until a request is complete and then stops, so that the caller can answer that request before
// the next pipelined one is parsed (answers go out in request order). Limits are enforced while
// parsing, before anything is buffered beyond them:
//   head (request line + headers) > max_header_bytes          -> error 431
//   Content-Length > the body limit, or a chunked body grows past it -> error 413 (as soon as
//   known); the body limit is the matching route's (Router::MaxBodyBytes) when `router` is set
//   anything http-parser rejects (NUL and other control bytes in the head), a bad target or bad
//   %-escape, a path, query or header value that is not valid UTF-8 -> error 400
// After an error the parser is finished: answer it and close the connection.
//
// Thread safety: none (one connection, one thread).
#pragma once

#include <http_parser.h>

#include <cstddef>
#include <map>
#include <string>
#include <string_view>

#include "api/http.h"
#include "common/status.h"

namespace uw::api {

struct ParserLimits {
  size_t max_body_bytes = 1 << 20;
  size_t max_header_bytes = 64 << 10;
  // When set, each request's body limit is router->MaxBodyBytes(head, max_body_bytes), looked up
  // once its head is complete. Must outlive the parser.
  const Router* router = nullptr;
};

// A complete request plus what the connection needs to frame the answer.
struct ParsedRequest {
  Request request;
  bool keep_alive = true;  // false: answer with "Connection: close" and close afterwards
  bool http_1_0 = false;   // the client spoke HTTP/1.0 (no chunked encoding)
};

class RequestParser {
 public:
  enum class Outcome {
    kNeedMore,  // all bytes consumed; no complete request yet
    kRequest,   // a request is complete: TakeRequest(); unconsumed bytes belong to the next one
    kError,     // malformed or over a limit: error(), error_http_status(); stop feeding
  };

  explicit RequestParser(ParserLimits limits);
  RequestParser(const RequestParser&) = delete;
  RequestParser& operator=(const RequestParser&) = delete;

  // Parses from `data`; *consumed is set to the number of bytes used (all of them for kNeedMore).
  Outcome Feed(std::string_view data, size_t* consumed);
  // The request completed by the last Feed() that returned kRequest. Moves it out.
  ParsedRequest TakeRequest();

  // True between the first byte of a request and its completion (EOF now means a cut request).
  bool InRequest() const { return in_message_; }
  // True while a request's head is incomplete (InRequest() and the headers not all in yet).
  bool InHead() const { return in_message_ && in_head_; }
  // True once, after a head with "Expect: 100-continue" whose body has not arrived yet: the caller
  // should send "HTTP/1.1 100 Continue". Reading it clears it.
  bool TakeExpectContinue();

  // Valid after kError: the status to answer (400, 413 or 431) and why.
  int error_http_status() const { return error_http_status_; }
  const Status& error() const { return error_; }

 private:
  static const http_parser_settings& Settings();
  static int OnMessageBegin(http_parser* p);
  static int OnUrl(http_parser* p, const char* at, size_t len);
  static int OnHeaderField(http_parser* p, const char* at, size_t len);
  static int OnHeaderValue(http_parser* p, const char* at, size_t len);
  static int OnHeadersComplete(http_parser* p);
  static int OnBody(http_parser* p, const char* at, size_t len);
  static int OnMessageComplete(http_parser* p);

  // Adds `n` bytes to the head size; false (and the 431 error recorded) past the limit.
  bool CountHead(size_t n);
  void StoreHeader();
  int Fail(int http_status, Status status);

  ParserLimits limits_;
  size_t body_limit_ = 0;  // the current request's, set when its head is complete
  http_parser parser_;
  // Head size so far: request-target, header names and values, plus per-line framing. Whitespace
  // padding is not counted here but bounded by http-parser's own 80 KiB head limit (also 431).
  size_t head_bytes_ = 0;
  bool in_message_ = false;
  bool in_head_ = false;
  bool complete_ = false;
  bool expect_continue_ = false;
  bool last_was_value_ = false;
  std::string field_;
  std::string value_;
  ParsedRequest current_;
  int error_http_status_ = 0;
  Status error_;
};

// True when `s` is well-formed UTF-8 (no overlong forms, surrogates or code points past U+10FFFF).
bool IsValidUtf8(std::string_view s);

// Percent-decoding. `plus_is_space` for query strings (form encoding). kInvalidArgument for a
// truncated or non-hex escape and for an encoded NUL.
Result<std::string> PercentDecode(std::string_view in, bool plus_is_space);
// Percent-encoding for a query value or a path segment: every byte but A-Z a-z 0-9 - . _ ~ is
// escaped, so PercentDecode gives `in` back.
std::string PercentEncode(std::string_view in);
// Splits "a=1&b=x%20y" into decoded pairs; a repeated key keeps its last value, a key without
// '=' gets "".
Status ParseQuery(std::string_view query, std::map<std::string, std::string>* out);

}  // namespace uw::api
