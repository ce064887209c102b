// libFuzzer target for RequestParser (issue 4). Build with -DUW_FUZZ=ON and clang; see README.md.
//
// Input layout: byte 0 seeds the split points, the rest is what a client sends on one connection.
// The bytes are parsed twice, once whole and once fed in pieces the way a socket delivers them,
// and the two runs must agree. Invariants checked (a failure aborts, which libFuzzer reports):
//   - Feed() never claims more bytes than it was given, and always makes progress on kRequest;
//   - every request respects the limits and has a path starting with '/';
//   - an error is one of 400, 413, 431, 501 (a transfer coding other than chunked) and the parser stays failed
//   afterwards;
//   - split and whole parsing yield the same requests and both fail or neither does. (Which
//     error can differ: with a long, also malformed head, http-parser reports the bad byte when
//     it sees the whole head at once, while split input reaches the 431 size limit first.)
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "api/request_parser.h"

namespace {

using uw::api::ParsedRequest;
using uw::api::ParserLimits;
using uw::api::RequestParser;

constexpr ParserLimits kLimits{/*max_body_bytes=*/1024, /*max_header_bytes=*/2048};

#define FUZZ_CHECK(cond)                                                          \
  do {                                                                            \
    if (!(cond)) {                                                                \
      __builtin_fprintf(stderr, "check failed: %s (line %d)\n", #cond, __LINE__); \
      std::abort();                                                               \
    }                                                                             \
  } while (0)

struct Run {
  std::vector<ParsedRequest> requests;
  int error = 0;
};

void CheckRequest(const ParsedRequest& r) {
  FUZZ_CHECK(r.request.body.size() <= kLimits.max_body_bytes);
  FUZZ_CHECK(!r.request.path.empty() && r.request.path[0] == '/');
  FUZZ_CHECK(!r.request.target.empty() && r.request.target[0] == '/');
  FUZZ_CHECK(r.request.target.size() <= kLimits.max_header_bytes);
  FUZZ_CHECK(!r.request.method.empty());
  for (const auto& [name, value] : r.request.headers) {
    for (char c : name) FUZZ_CHECK(!(c >= 'A' && c <= 'Z'));
  }
}

// Feeds `data` in pieces whose sizes come from `seed` (0 = all at once).
Run Parse(std::string_view data, uint8_t seed) {
  Run run;
  RequestParser parser(kLimits);
  uint32_t state = seed;
  size_t pos = 0;    // parsed up to here
  size_t avail = 0;  // bytes "received" so far
  while (pos < data.size()) {
    if (avail <= pos) {
      size_t piece = data.size();
      if (seed != 0) {
        state = state * 1103515245u + 12345u;
        piece = 1 + (state >> 16) % 97;
      }
      avail = std::min(data.size(), pos + piece);
    }
    size_t consumed = 0;
    std::string_view window = data.substr(pos, avail - pos);
    RequestParser::Outcome o = parser.Feed(window, &consumed);
    FUZZ_CHECK(consumed <= window.size());
    pos += consumed;
    if (o == RequestParser::Outcome::kError) {
      run.error = parser.error_http_status();
      FUZZ_CHECK(run.error == 400 || run.error == 413 || run.error == 431 || run.error == 501);
      FUZZ_CHECK(!parser.error().ok());
      size_t again = 1;
      FUZZ_CHECK(parser.Feed("GET / HTTP/1.1\r\n\r\n", &again) == RequestParser::Outcome::kError);
      FUZZ_CHECK(again == 0);
      return run;
    }
    if (o == RequestParser::Outcome::kRequest) {
      FUZZ_CHECK(consumed > 0);
      ParsedRequest r = parser.TakeRequest();
      CheckRequest(r);
      run.requests.push_back(std::move(r));
      continue;
    }
    FUZZ_CHECK(consumed == window.size());
    (void)parser.TakeExpectContinue();
  }
  return run;
}

bool Same(const ParsedRequest& a, const ParsedRequest& b) {
  return a.request.method == b.request.method && a.request.target == b.request.target &&
         a.request.path == b.request.path && a.request.query == b.request.query &&
         a.request.headers == b.request.headers && a.request.body == b.request.body && a.keep_alive == b.keep_alive &&
         a.http_1_0 == b.http_1_0;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  std::string_view bytes(reinterpret_cast<const char*>(data) + 1, size - 1);
  uint8_t seed = data[0] == 0 ? 1 : data[0];
  Run whole = Parse(bytes, 0);
  Run split = Parse(bytes, seed);
  FUZZ_CHECK((whole.error == 0) == (split.error == 0));
  FUZZ_CHECK(whole.requests.size() == split.requests.size());
  for (size_t i = 0; i < whole.requests.size(); ++i) {
    FUZZ_CHECK(Same(whole.requests[i], split.requests[i]));
  }
  return 0;
}
