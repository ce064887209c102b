// HttpServer: start and stop, the loop thread's post queue and the worker pool that runs handlers
// (server_core.h lists the other files of the server).
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <uv.h>

#include <future>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "api/http.h"
#include "api/server_core.h"

namespace uw::api {
namespace internal {
namespace {

// Lets the process hold `want` descriptors when the hard limit allows (the soft limit is often
// 1024, below the connection caps).
void RaiseDescriptorLimit(rlim_t want) {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= want) return;
  rlim_t before = rl.rlim_cur;
  rl.rlim_cur = rl.rlim_max == RLIM_INFINITY ? want : std::min(want, rl.rlim_max);
  if (rl.rlim_cur > before && setrlimit(RLIMIT_NOFILE, &rl) == 0) {
    spdlog::debug("api: raised the descriptor limit from {} to {}", before, rl.rlim_cur);
  }
}

void IgnoreSigpipe() {
  struct sigaction sa {};
  if (sigaction(SIGPIPE, nullptr, &sa) == 0 && (sa.sa_flags & SA_SIGINFO) == 0 && sa.sa_handler == SIG_DFL) {
    signal(SIGPIPE, SIG_IGN);
  }
}

}  // namespace

// ---- WorkerPool ---------------------------------------------------------------------------------

void WorkerPool::Start(int threads) {
  for (int i = 0; i < std::max(1, threads); ++i) threads_.emplace_back([this] { Run(); });
}

void WorkerPool::Submit(std::function<void()> fn) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    tasks_.push_back(std::move(fn));
  }
  cv_.notify_one();
}

void WorkerPool::Drain() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    draining_ = true;
  }
  cv_.notify_all();
  for (std::thread& t : threads_) t.join();
  threads_.clear();
}

void WorkerPool::Run() {
  while (true) {
    std::function<void()> task;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return draining_ || !tasks_.empty(); });
      if (tasks_.empty()) return;
      task = std::move(tasks_.front());
      tasks_.pop_front();
    }
    task();
  }
}

std::string FormatAddress(const std::string& host, int port) {
  if (host.find(':') != std::string::npos) return "[" + host + "]:" + std::to_string(port);
  return host + ":" + std::to_string(port);
}

// ---- ServerCore: start and stop ----------------------------------------------------------------

Status ServerCore::Start() {
  std::lock_guard<std::mutex> lock(state_mu_);
  if (started_) return FailedPreconditionError("HTTP server already started");
  const std::string where = FormatAddress(options_.address, options_.port);

  int rc = uv_loop_init(&loop_);
  if (rc != 0) return InternalError(std::string("uv_loop_init: ") + uv_strerror(rc));
  uv_tcp_init(&loop_, &listener_);
  listener_.data = this;
  sockaddr_storage addr{};
  if (options_.address.find(':') != std::string::npos) {
    rc = uv_ip6_addr(options_.address.c_str(), options_.port, reinterpret_cast<sockaddr_in6*>(&addr));
  } else {
    rc = uv_ip4_addr(options_.address.c_str(), options_.port, reinterpret_cast<sockaddr_in*>(&addr));
  }
  if (rc == 0) rc = uv_tcp_bind(&listener_, reinterpret_cast<const sockaddr*>(&addr), 0);
  if (rc == 0) rc = uv_listen(reinterpret_cast<uv_stream_t*>(&listener_), 511, &OnNewConnection);
  if (rc != 0) {
    uv_close(reinterpret_cast<uv_handle_t*>(&listener_), nullptr);
    uv_run(&loop_, UV_RUN_DEFAULT);
    uv_loop_close(&loop_);
    return UnavailableError("cannot listen on " + where + ": " + uv_strerror(rc));
  }
  sockaddr_storage bound{};
  int len = sizeof(bound);
  uv_tcp_getsockname(&listener_, reinterpret_cast<sockaddr*>(&bound), &len);
  port_ = ntohs(bound.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port
                                            : reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  uv_async_init(&loop_, &wakeup_, &OnWakeup);
  wakeup_.data = this;

  IgnoreSigpipe();
  RaiseDescriptorLimit(static_cast<rlim_t>(std::max(0, options_.max_connections)) + 256);
  pool_.Start(options_.worker_threads);
  loop_thread_ = std::thread([this] {
    uv_run(&loop_, UV_RUN_DEFAULT);
    if (int rc = uv_loop_close(&loop_); rc != 0) {
      spdlog::error("api: loop closed with handles open: {}", uv_strerror(rc));
    }
  });
  started_ = true;
  spdlog::debug("api: listening on {}", FormatAddress(options_.address, port_));
  return Status::Ok();
}

void ServerCore::Stop() {
  {
    std::lock_guard<std::mutex> lock(state_mu_);
    if (!started_ || stopped_) return;
    stopped_ = true;
  }
  // 1. On the loop: stop accepting, close idle connections and open streams.
  std::promise<void> begun;
  Post([this, &begun] {
    BeginStop();
    begun.set_value();
  });
  begun.get_future().wait();
  // 2. Let every handler already accepted finish; their answers are posted to the loop.
  pool_.Drain();
  // 3. On the loop: answers are written, then the remaining connections and handles close.
  Post([this] { FinishStop(); });
  loop_thread_.join();
}

void ServerCore::BeginStop() {
  stopping_ = true;
  uv_close(reinterpret_cast<uv_handle_t*>(&listener_), nullptr);
  std::vector<Connection*> conns;
  for (auto& [id, c] : conns_) conns.push_back(c);
  for (Connection* c : conns) {
    if (c->stream) {
      std::shared_ptr<ServerStream> s = std::move(c->stream);
      s->MarkClosedByServer();
      if (s->chunked()) Write(c, "0\r\n\r\n");
      c->in_flight = false;
      c->close_after_write = true;
      MaybeFinishWrites(c);
    } else if (c->in_flight) {
      // Answered with "Connection: close" when the handler returns (OnResponse sees stopping_).
    } else if (c->writes_pending > 0) {
      c->close_after_write = true;
      ArmTimer(c, TimerMode::kForce, kForceCloseMs);
    } else {
      CloseNow(c);
    }
  }
  // Streams whose head has not reached the loop yet.
  std::set<std::shared_ptr<ServerStream>> rest;
  {
    std::lock_guard<std::mutex> lock(streams_mu_);
    streams_closed_ = true;
    rest.swap(streams_);
  }
  for (const auto& s : rest) s->MarkClosedByServer();
}

void ServerCore::FinishStop() {
  finishing_ = true;
  std::vector<Connection*> conns;
  for (auto& [id, c] : conns_) conns.push_back(c);
  for (Connection* c : conns) {
    if (c->writes_pending == 0 || c->draining) {
      CloseNow(c);
    } else {
      c->close_after_write = true;
      ArmTimer(c, TimerMode::kForce, kForceCloseMs);
    }
  }
  MaybeExitLoop();
}

void ServerCore::MaybeExitLoop() {
  if (!finishing_ || exited_ || !conns_.empty()) return;
  exited_ = true;
  std::vector<std::function<void()>> dropped;
  {
    std::lock_guard<std::mutex> lock(post_mu_);
    loop_done_ = true;
    dropped.swap(posted_);
  }
  dropped.clear();
  uv_close(reinterpret_cast<uv_handle_t*>(&wakeup_), nullptr);
}

void ServerCore::Post(std::function<void()> fn) {
  std::lock_guard<std::mutex> lock(post_mu_);
  if (loop_done_) return;
  posted_.push_back(std::move(fn));
  uv_async_send(&wakeup_);  // under post_mu_: the handle is not closed while loop_done_ is false
}

void ServerCore::OnWakeup(uv_async_t* handle) {
  auto* self = static_cast<ServerCore*>(handle->data);
  std::vector<std::function<void()>> batch;
  {
    std::lock_guard<std::mutex> lock(self->post_mu_);
    batch.swap(self->posted_);
  }
  for (auto& fn : batch) fn();
}

}  // namespace internal

// ---- HttpServer ----------------------------------------------------------------------------------

struct HttpServer::Impl {
  Impl(ServerOptions options, const Router* router) : core(std::move(options), router) {}
  internal::ServerCore core;
};

HttpServer::HttpServer(ServerOptions options, const Router* router)
    : impl_(std::make_unique<Impl>(std::move(options), router)) {}

HttpServer::~HttpServer() { Stop(); }

Status HttpServer::Start() { return impl_->core.Start(); }

void HttpServer::Stop() { impl_->core.Stop(); }

int HttpServer::port() const { return impl_->core.port(); }

}  // namespace uw::api
