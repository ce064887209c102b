#include "api/request_parser.h"

#include <gtest/gtest.h>

#include <string>

namespace uw::api {
namespace {

using Outcome = RequestParser::Outcome;

ParserLimits SmallLimits() {
  ParserLimits l;
  l.max_body_bytes = 16;
  l.max_header_bytes = 256;
  return l;
}

TEST(RequestParserTest, ParsesMethodTargetHeadersAndBody) {
  RequestParser p(SmallLimits());
  std::string in =
      "POST /api/v1/guests/web%201?force=true&name=a+b&empty HTTP/1.1\r\n"
      "Host: x\r\nContent-Type: application/json\r\nX-Twice: a\r\nx-twice: b\r\n"
      "Content-Length: 7\r\n\r\n{\"a\":1}";
  size_t used = 0;
  ASSERT_EQ(p.Feed(in, &used), Outcome::kRequest);
  EXPECT_EQ(used, in.size());
  ParsedRequest r = p.TakeRequest();
  EXPECT_EQ(r.request.method, "POST");
  EXPECT_EQ(r.request.path, "/api/v1/guests/web 1");
  EXPECT_EQ(r.request.target, "/api/v1/guests/web%201?force=true&name=a+b&empty");
  EXPECT_EQ(r.request.query.at("force"), "true");
  EXPECT_EQ(r.request.query.at("name"), "a b");
  EXPECT_EQ(r.request.query.at("empty"), "");
  EXPECT_EQ(r.request.headers.at("content-type"), "application/json");
  EXPECT_EQ(r.request.headers.at("x-twice"), "a, b");
  EXPECT_EQ(r.request.body, "{\"a\":1}");
  EXPECT_TRUE(r.keep_alive);
  EXPECT_FALSE(r.http_1_0);
}

TEST(RequestParserTest, ByteAtATimeAndPipelined) {
  RequestParser p(SmallLimits());
  std::string in = "GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\nConnection: close\r\n\r\n";
  std::vector<ParsedRequest> got;
  size_t pos = 0;
  size_t fed_until = 1;
  while (pos < in.size()) {
    size_t used = 0;
    Outcome o = p.Feed(std::string_view(in).substr(pos, fed_until - pos), &used);
    pos += used;
    if (o == Outcome::kRequest) {
      got.push_back(p.TakeRequest());
    } else {
      ASSERT_EQ(o, Outcome::kNeedMore);
      ++fed_until;
    }
  }
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].request.path, "/a");
  EXPECT_TRUE(got[0].keep_alive);
  EXPECT_EQ(got[1].request.path, "/b");
  EXPECT_FALSE(got[1].keep_alive);
}

TEST(RequestParserTest, StopsAfterEachRequest) {
  RequestParser p(SmallLimits());
  std::string in = "GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n";
  size_t used = 0;
  ASSERT_EQ(p.Feed(in, &used), Outcome::kRequest);
  EXPECT_EQ(used, in.size() / 2);
  EXPECT_EQ(p.TakeRequest().request.path, "/a");
  size_t used2 = 0;
  ASSERT_EQ(p.Feed(std::string_view(in).substr(used), &used2), Outcome::kRequest);
  EXPECT_EQ(p.TakeRequest().request.path, "/b");
}

TEST(RequestParserTest, Http10ClosesUnlessKeepAlive) {
  RequestParser p(SmallLimits());
  size_t used = 0;
  ASSERT_EQ(p.Feed("GET / HTTP/1.0\r\n\r\n", &used), Outcome::kRequest);
  ParsedRequest r = p.TakeRequest();
  EXPECT_TRUE(r.http_1_0);
  EXPECT_FALSE(r.keep_alive);
}

TEST(RequestParserTest, ChunkedBody) {
  RequestParser p(SmallLimits());
  size_t used = 0;
  ASSERT_EQ(p.Feed("PUT /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n", &used),
            Outcome::kRequest);
  EXPECT_EQ(p.TakeRequest().request.body, "abcde");
}

// Issue 12 (hostile-input suite): "Transfer-Encoding: gzip, chunked" was framed as chunked and its
// (compressed) bytes handed to the handler as the body.
TEST(RequestParserTest, TransferCodingsOtherThanChunkedAre501) {
  for (std::string bad :
       {"POST /x HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        "POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n0\r\n\r\n"}) {
    RequestParser p(SmallLimits());
    size_t used = 0;
    EXPECT_EQ(p.Feed(bad, &used), Outcome::kError) << bad;
    EXPECT_EQ(p.error_http_status(), 501) << bad;
  }
  RequestParser ok(SmallLimits());
  size_t used = 0;
  EXPECT_EQ(ok.Feed("POST /x HTTP/1.1\r\nTransfer-Encoding: Chunked \r\n\r\n1\r\na\r\n0\r\n\r\n", &used),
            Outcome::kRequest);
}

TEST(RequestParserTest, MalformedIs400) {
  for (std::string bad :
       {"GARBAGE\r\n\r\n", "GET nopath HTTP/1.1\r\n\r\n", "GET /a%zz HTTP/1.1\r\n\r\n", "GET /a%2 HTTP/1.1\r\n\r\n",
        "GET /a%00 HTTP/1.1\r\n\r\n", "GET /?q=%G1 HTTP/1.1\r\n\r\n", "GET / HTTP/1.1\r\nBad Header\r\n\r\n",
        // Issue 12: whitespace before the colon (a smuggling vector behind a lenient proxy).
        "GET / HTTP/1.1\r\nHost : x\r\n\r\n", "GET / HTTP/1.1\r\nContent-Length\t: 0\r\n\r\n",
        "GET / HTTP/1.1\r\nX(y): 1\r\n\r\n"}) {
    RequestParser p(SmallLimits());
    size_t used = 0;
    EXPECT_EQ(p.Feed(bad, &used), Outcome::kError) << bad;
    EXPECT_EQ(p.error_http_status(), 400) << bad;
    EXPECT_EQ(p.error().code(), StatusCode::kInvalidArgument) << bad;
    // A failed parser stays failed.
    EXPECT_EQ(p.Feed("GET / HTTP/1.1\r\n\r\n", &used), Outcome::kError);
  }
}

TEST(RequestParserTest, BodyOverLimitFromContentLengthBeforeAnyBodyByte) {
  RequestParser p(SmallLimits());
  size_t used = 0;
  EXPECT_EQ(p.Feed("POST /x HTTP/1.1\r\nContent-Length: 17\r\n\r\n", &used), Outcome::kError);
  EXPECT_EQ(p.error_http_status(), 413);
  EXPECT_EQ(p.error().code(), StatusCode::kResourceExhausted);
}

TEST(RequestParserTest, ChunkedBodyOverLimit) {
  RequestParser p(SmallLimits());
  size_t used = 0;
  EXPECT_EQ(p.Feed("POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n0123456789abcdef\r\n"
                   "1\r\nX\r\n0\r\n\r\n",
                   &used),
            Outcome::kError);
  EXPECT_EQ(p.error_http_status(), 413);
}

TEST(RequestParserTest, BodyAtLimitIsFine) {
  RequestParser p(SmallLimits());
  size_t used = 0;
  EXPECT_EQ(p.Feed("POST /x HTTP/1.1\r\nContent-Length: 16\r\n\r\n0123456789abcdef", &used), Outcome::kRequest);
}

TEST(RequestParserTest, HeadOverLimitIs431) {
  RequestParser p(SmallLimits());
  std::string in = "GET / HTTP/1.1\r\nX-Big: " + std::string(300, 'a') + "\r\n\r\n";
  size_t used = 0;
  // Fed in pieces, as from a socket: the limit holds across Feed() calls.
  Outcome o = Outcome::kNeedMore;
  for (size_t pos = 0; pos < in.size() && o == Outcome::kNeedMore; pos += used) {
    o = p.Feed(std::string_view(in).substr(pos, 50), &used);
  }
  EXPECT_EQ(o, Outcome::kError);
  EXPECT_EQ(p.error_http_status(), 431);
}

TEST(RequestParserTest, LongTargetIs431) {
  RequestParser p(SmallLimits());
  size_t used = 0;
  EXPECT_EQ(p.Feed("GET /" + std::string(400, 'a') + " HTTP/1.1\r\n\r\n", &used), Outcome::kError);
  EXPECT_EQ(p.error_http_status(), 431);
}

TEST(RequestParserTest, ExpectContinueOnlyWhileBodyPending) {
  RequestParser p(SmallLimits());
  size_t used = 0;
  ASSERT_EQ(p.Feed("POST /x HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n", &used), Outcome::kNeedMore);
  EXPECT_TRUE(p.TakeExpectContinue());
  EXPECT_FALSE(p.TakeExpectContinue());
  EXPECT_TRUE(p.InRequest());
  ASSERT_EQ(p.Feed("abc", &used), Outcome::kRequest);
  EXPECT_FALSE(p.InRequest());
}

TEST(RequestParserTest, AbsoluteFormTarget) {
  RequestParser p(SmallLimits());
  size_t used = 0;
  ASSERT_EQ(p.Feed("GET http://h:1/a/b?x=1 HTTP/1.1\r\n\r\n", &used), Outcome::kRequest);
  ParsedRequest r = p.TakeRequest();
  EXPECT_EQ(r.request.path, "/a/b");
  EXPECT_EQ(r.request.target, "/a/b?x=1");
  EXPECT_EQ(r.request.query.at("x"), "1");
}

TEST(PercentDecodeTest, Cases) {
  EXPECT_EQ(PercentDecode("a%2Fb%20c+d", false).value(), "a/b c+d");
  EXPECT_EQ(PercentDecode("a+b", true).value(), "a b");
  EXPECT_EQ(PercentDecode("%e2%82%ac", false).value(), "\xe2\x82\xac");
  EXPECT_FALSE(PercentDecode("%", false).ok());
  EXPECT_FALSE(PercentDecode("%a", false).ok());
  EXPECT_FALSE(PercentDecode("%xy", false).ok());
}

TEST(PercentEncodeTest, RoundTripsEveryByteButNul) {
  EXPECT_EQ(PercentEncode("acme:web 1/x+y&z=~"), "acme%3Aweb%201%2Fx%2By%26z%3D~");
  std::string all;
  for (int c = 1; c < 256; ++c) all.push_back(static_cast<char>(c));
  EXPECT_EQ(PercentDecode(PercentEncode(all), true).value(), all);
}

}  // namespace
}  // namespace uw::api
