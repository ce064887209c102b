// End-to-end tests of streamed answers (Server-Sent Events): framing, keep-alive after a stream,
// clients that go away or fall behind, Stop with open streams, and thousands of open streams.
#include <gtest/gtest.h>
#include <malloc.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <future>
#include <string>
#include <vector>

#include "api/http.h"
#include "api/http_test_util.h"

namespace uw::api::http_test {
namespace {

std::string Events(int from, int to) {
  std::string out;
  for (int i = from; i <= to; ++i) {
    out += SseEvent("guest", "{\"n\":" + std::to_string(i) + "}", std::to_string(i));
  }
  return out;
}

TEST_F(HttpServerTest, StreamsServerSentEventsToTheClient) {
  StartServer();
  std::string got;
  Status st = Client().Stream("GET", "/events/burst", [&](std::string_view d) {
    got.append(d);
    return true;
  });
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(got, Events(1, 3));
  // Errors come back as Status, with the body parsed.
  Status unauth = Client("").Stream("GET", "/events/burst", [](std::string_view) { return true; });
  EXPECT_EQ(unauth.code(), StatusCode::kUnauthenticated);
}

TEST_F(HttpServerTest, StreamIsChunkedAndConnectionIsReusedAfterIt) {
  StartServer();
  RawConnection c(server_->port());
  ASSERT_TRUE(c.Send("GET /events/burst HTTP/1.1\r\n" + Auth() + "\r\n"));
  RawResponse r = c.Read();
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.headers["transfer-encoding"], "chunked");
  EXPECT_EQ(r.headers["content-type"], "text/event-stream");
  EXPECT_EQ(r.headers.count("content-length"), 0u);
  EXPECT_EQ(r.body, Events(1, 3));
  ASSERT_TRUE(c.Send("GET /healthz HTTP/1.1\r\n\r\n"));
  EXPECT_EQ(c.Read().status, 200);
}

TEST_F(HttpServerTest, LiveStreamEndsWhenTheClientGoesAway) {
  StartServer();
  std::promise<std::string> first_two;
  auto reader = std::async(std::launch::async, [&] {
    std::string got;
    Status st = Client().Stream("GET", "/events/live", [&](std::string_view d) {
      got.append(d);
      if (got.size() < Events(1, 2).size()) return true;
      first_two.set_value(got);
      return false;  // hang up
    });
    return st;
  });
  std::shared_ptr<StreamWriter> w = WaitForWriter();
  ASSERT_NE(w, nullptr);
  EXPECT_TRUE(w->IsOpen());
  EXPECT_TRUE(w->Write(Events(1, 1)));
  EXPECT_TRUE(w->Write(Events(2, 2)));
  auto got = first_two.get_future();
  ASSERT_EQ(got.wait_for(kDeadline), std::future_status::ready);
  EXPECT_EQ(got.get(), Events(1, 2));
  EXPECT_TRUE(reader.get().ok());
  // The server notices the hang-up and closes the stream; the producer learns it.
  ASSERT_TRUE(stream_closed_.Wait());
  EXPECT_FALSE(w->IsOpen());
  EXPECT_FALSE(w->Write(Events(3, 3)));
  bool called = false;
  w->OnClose([&] { called = true; });  // already closed: runs at once
  EXPECT_TRUE(called);
  EXPECT_TRUE(Client().Call("GET", "/echo").ok());
}

TEST_F(HttpServerTest, StopEndsOpenStreamsAndWritersOutliveTheServer) {
  StartServer();
  std::promise<void> got_first;
  auto reader = std::async(std::launch::async, [&] {
    std::string got;
    bool signalled = false;
    Status st = Client().Stream("GET", "/events/live", [&](std::string_view d) {
      got.append(d);
      if (!signalled) {
        signalled = true;
        got_first.set_value();
      }
      return true;
    });
    return std::make_pair(st, got);
  });
  std::shared_ptr<StreamWriter> w = WaitForWriter();
  ASSERT_NE(w, nullptr);
  EXPECT_TRUE(w->Write(Events(1, 1)));
  ASSERT_EQ(got_first.get_future().wait_for(kDeadline), std::future_status::ready);
  server_->Stop();
  EXPECT_TRUE(stream_closed_.Wait());
  auto [st, got] = reader.get();
  EXPECT_TRUE(st.ok()) << st.ToString();  // a clean end of the body
  EXPECT_EQ(got, Events(1, 1));
  server_.reset();
  EXPECT_FALSE(w->IsOpen());
  EXPECT_FALSE(w->Write("late"));
  w->Close();
}

TEST_F(HttpServerTest, SlowStreamConsumerIsCutOff) {
  StartServer();
  RawConnection c(server_->port());  // sends the request, then never reads
  ASSERT_TRUE(c.Send("GET /events/live HTTP/1.1\r\n" + Auth() + "\r\n"));
  std::shared_ptr<StreamWriter> w = WaitForWriter();
  ASSERT_NE(w, nullptr);
  const std::string chunk(256 << 10, 'e');
  int writes = 0;
  while (writes < 400 && w->Write(chunk)) ++writes;
  EXPECT_LT(writes, 400);
  EXPECT_GE(static_cast<size_t>(writes) * chunk.size(), StreamWriter::kMaxBufferedBytes - chunk.size());
  EXPECT_FALSE(w->IsOpen());
  EXPECT_TRUE(stream_closed_.Wait());
}

// Thousands of event streams: a stream's backlog is bounded by the server's option, not only by
// the 4 MiB default (256 slow streams from one tenant would otherwise pin 1 GiB).
TEST_F(HttpServerTest, StreamBacklogLimitIsAServerOption) {
  options_.max_stream_buffered_bytes = 64 << 10;
  StartServer();
  RawConnection c(server_->port());  // sends the request, then never reads
  ASSERT_TRUE(c.Send("GET /events/live HTTP/1.1\r\n" + Auth() + "\r\n"));
  std::shared_ptr<StreamWriter> w = WaitForWriter();
  ASSERT_NE(w, nullptr);
  const std::string chunk(16 << 10, 'e');
  size_t written = 0;
  while (written < (64 << 20) && w->Write(chunk)) written += chunk.size();
  // What the kernel took (socket buffers) plus at most the option.
  EXPECT_LT(written, size_t{16} << 20);
  EXPECT_FALSE(w->IsOpen());
  EXPECT_TRUE(stream_closed_.Wait());
}

TEST_F(HttpServerTest, ClientTimeoutsAreDeadlineExceeded) {
  StartServer();
  ClientOptions o;
  o.base_url = "http://127.0.0.1:" + std::to_string(server_->port());
  o.bearer_token = "s3cret";
  o.timeout_ms = 200;
  auto slow = HttpClient(o).Call("GET", "/slow");
  EXPECT_EQ(slow.status().code(), StatusCode::kDeadlineExceeded) << slow.status().ToString();
  // A stream that goes quiet.
  Status quiet = HttpClient(o).Stream(
      "GET", "/events/live", [](std::string_view) { return true; }, {}, /*idle_timeout_ms=*/1000);
  EXPECT_EQ(quiet.code(), StatusCode::kDeadlineExceeded) << quiet.ToString();
}

size_t HeapInUse() { return mallinfo2().uordblks; }

// Each event stream held a worker thread, so 16 open streams froze every route. A stream whose
// function hands its writer to a producer holds none: 2,000 of them on 2 workers leave other
// routes answering at once.
TEST_F(HttpServerTest, TwoThousandOpenStreamsLeaveTwoWorkersFree) {
  constexpr int kStreams = 2000;
  options_.worker_threads = 2;
  options_.max_connections_per_client = 4096;
  StartServer();  // raises the soft descriptor limit to max_connections + 256 where allowed
  rlimit rl{};
  getrlimit(RLIMIT_NOFILE, &rl);
  if (rl.rlim_cur < 2 * kStreams + 64) GTEST_SKIP() << "descriptor limit " << rl.rlim_cur;
  const size_t heap_before = HeapInUse();
  std::vector<std::unique_ptr<RawConnection>> streams;
  streams.reserve(kStreams);
  for (int i = 0; i < kStreams; ++i) {
    streams.push_back(std::make_unique<RawConnection>(server_->port()));
    ASSERT_TRUE(streams.back()->Send("GET /events/hold HTTP/1.1\r\n" + Auth() + "\r\n"));
  }
  for (auto& s : streams) ASSERT_EQ(s->ReadHeadStatus(), 200);
  {
    std::unique_lock<std::mutex> lock(writer_mu_);
    writer_cv_.wait_for(lock, kDeadline, [this] { return held_.size() == kStreams; });
    ASSERT_EQ(held_.size(), static_cast<size_t>(kStreams));
  }
  const size_t heap_after = HeapInUse();
  std::vector<double> ms;
  HttpClient client = Client();
  for (int i = 0; i < 50; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    ASSERT_TRUE(client.Call("GET", "/healthz").ok());
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  std::printf(
      "%d open streams on 2 workers: /healthz median %.2f ms, max %.2f ms; heap %zu "
      "bytes per open stream (server and test client)\n",
      kStreams, ms[ms.size() / 2], ms.back(), (heap_after - heap_before) / kStreams);
  EXPECT_LT(ms[ms.size() / 2], 10.0);
  // Every stream is live: the producer can still write to the first and last.
  std::lock_guard<std::mutex> lock(writer_mu_);
  EXPECT_TRUE(held_.front()->Write("data: first\n\n"));
  EXPECT_TRUE(held_.back()->Write("data: last\n\n"));
}

}  // namespace
}  // namespace uw::api::http_test
