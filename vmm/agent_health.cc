// AgentService: the health watch of virtual machines (pings over their control channel), crashes,
// and the status the agent reports for a guest.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <fstream>
#include <future>

#include "vmm/agent_internal.h"
#include "vmm/agent_service.h"

namespace uw::vmm {
namespace {

constexpr size_t kCrashConsoleTail = 2048;
constexpr size_t kCrashConsoleReach = 8192;
constexpr const char* kHealthSource = "agent";
constexpr auto kMonitorTick = std::chrono::milliseconds(200);
constexpr auto kReadyPoll = std::chrono::milliseconds(100);

// `text` with every byte that is not part of valid UTF-8 replaced by '?' (JSON needs UTF-8; a
// console tail may start inside a multi-byte character or hold binary noise).
std::string ValidUtf8(std::string text) {
  for (size_t i = 0; i < text.size();) {
    const auto c = static_cast<unsigned char>(text[i]);
    size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xe ? 3 : (c >> 3) == 0x1e ? 4 : 0;
    bool ok = n > 0 && i + n <= text.size();
    for (size_t k = 1; ok && k < n; ++k) ok = (static_cast<unsigned char>(text[i + k]) >> 6) == 0x2;
    if (!ok) {
      text[i++] = '?';
      continue;
    }
    i += n;
  }
  return text;
}

}  // namespace

std::string ReadTail(const std::string& path, size_t bytes) {
  std::ifstream in(path, std::ios::binary);
  std::string text;
  if (!in) return text;
  in.seekg(0, std::ios::end);
  auto size = static_cast<size_t>(in.tellg());
  size_t from = size > bytes ? size - bytes : 0;
  in.seekg(static_cast<std::streamoff>(from));
  text.resize(size - from);
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<size_t>(in.gcount()));
  return text;
}

std::string CrashConsoleTail(std::string_view console) {
  size_t start = console.size() > kCrashConsoleTail ? console.size() - kCrashConsoleTail : 0;
  const size_t reach = console.size() > kCrashConsoleReach ? console.size() - kCrashConsoleReach : 0;
  size_t panic = console.rfind("Kernel panic");
  if (panic != std::string_view::npos && panic >= reach && panic < start) {
    size_t line = console.rfind('\n', panic);
    start = line == std::string_view::npos || line < reach ? panic : line + 1;
  }
  return ValidUtf8(std::string(console.substr(start)));
}

std::string ControlChannelOf(const GuestInfo& info) {
  if (info.kind == GuestKind::kLxc) return "";
  for (const auto& c : info.channels) {
    if (c.name == kGuestChannel) return c.socket_path;
  }
  return "";
}

void AgentService::ObserveGuest(const GuestInfo& info) {
  std::lock_guard l(health_mu_);
  health_.Observe(info.name, info.id, info.state == GuestState::kRunning, ControlChannelOf(info), clock_.Monotonic(),
                  clock_.Now());
}

void AgentService::ObserveSample(const std::vector<GuestCounters>& vms, const std::vector<GuestCounters>& cts) {
  std::vector<std::string> present, stale;
  {
    std::lock_guard l(health_mu_);
    for (const auto& c : vms) {
      present.push_back(c.name);
      auto v = health_.View(c.name);
      if (!v || v->instance != c.id || v->running != (c.state == GuestState::kRunning)) stale.push_back(c.name);
      auto crash = crashes_.find(c.name);
      if (crash != crashes_.end() && c.state == GuestState::kRunning && c.id != crash->second.id) crashes_.erase(crash);
    }
    for (const auto& c : cts) present.push_back(c.name);
    health_.Retain(present);
    for (auto it = crashes_.begin(); it != crashes_.end();) {
      it = std::find(present.begin(), present.end(), it->first) == present.end() ? crashes_.erase(it) : std::next(it);
    }
  }
  for (const auto& c : vms) {
    if (c.state == GuestState::kCrashed) NoteCrash(c.name, c.uuid, c.id, false);
  }
  // Channels are read from the definition only when a guest changed (started, stopped, new id).
  for (const auto& name : stale) {
    auto info = vm_->Get(name);
    if (info.ok()) ObserveGuest(*info);
  }
}

void AgentService::NoteCrash(const std::string& name, const std::string& uuid, int64_t id, bool event_seen) {
  const TimePoint now = clock_.Now();
  {
    std::lock_guard l(health_mu_);
    auto it = crashes_.find(name);
    if (it != crashes_.end() && it->second.id == id) return;
    crashes_[name] = {now, id};
  }
  spdlog::warn("guest {} crashed{}", name, event_seen ? "" : " (found by polling: no lifecycle event seen)");
  if (!event_seen) AppendEvent({now, name, uuid, "crashed", "found crashed by polling", vm_->uri(), id});
}

void AgentService::RecordHealthEvents(const std::vector<HealthEvent>& events) {
  for (const auto& e : events) {
    spdlog::info("guest {} {}: {}", e.guest, e.event, e.detail);
    AppendEvent({clock_.Now(), e.guest, "", e.event, e.detail, kHealthSource});
  }
}

void AgentService::MonitorLoop() {
  // A ping's answer: "pong", or "pong ask" from a guest that asks to be told what it holds.
  struct Answer {
    bool answered = false, asked = false;
  };
  struct Pending {
    DuePing ping;
    std::future<Answer> answered;
  };
  std::vector<Pending> pending;
  std::unique_lock l(stop_mu_);
  while (!stopping_) {
    l.unlock();
    for (auto it = pending.begin(); it != pending.end();) {
      if (it->answered.wait_for(std::chrono::seconds(0)) != std::future_status::ready) {
        ++it;
        continue;
      }
      const Answer a = it->answered.get();
      const bool answered = a.answered;
      std::vector<HealthEvent> events;
      {
        std::lock_guard h(health_mu_);
        events = health_.Report(it->ping.guest, it->ping.instance, answered, clock_.Monotonic(), clock_.Now());
        if (a.asked) asked_[it->ping.guest] = clock_.Now();
      }
      if (answered) health_cv_.notify_all();
      RecordHealthEvents(events);
      it = pending.erase(it);
    }
    std::vector<DuePing> due;
    std::vector<HealthEvent> expired;
    {
      std::lock_guard h(health_mu_);
      due = health_.Due(clock_.Monotonic());
      expired = health_.Expire(clock_.Monotonic(), clock_.Now());
    }
    RecordHealthEvents(expired);
    for (auto& p : due) {
      // Each ping on its own thread: a hung guest delays nobody else's watch, and a busy channel
      // (a command in flight) is skipped rather than waited for.
      auto channel = ChannelFor(p.channel);
      const Duration timeout = p.timeout;
      pending.push_back({std::move(p), std::async(std::launch::async, [channel, timeout] {
                           auto r = channel->CallIfIdle("ping", timeout);
                           return Answer{r.ok(), r.ok() && r->output.find("ask") != std::string::npos};
                         })});
    }
    l.lock();
    stop_cv_.wait_for(l, kMonitorTick, [this] { return stopping_; });
  }
  l.unlock();
  for (auto& p : pending) p.answered.wait();
}

Status AgentService::WaitUntilReady(const std::string& name, Duration deadline) {
  std::unique_lock l(health_mu_);
  while (true) {
    auto v = health_.View(name);
    if (!v || v->health != Health::kStarting) return Status::Ok();
    const Duration now = clock_.Monotonic();
    if (now >= deadline) {
      const auto waited = std::chrono::duration_cast<std::chrono::seconds>(now - v->started_mono).count();
      return FailedPreconditionError("guest " + name +
                                     " is not ready yet (its control channel has not answered since it started " +
                                     std::to_string(waited) + " s ago)");
    }
    if (Stopping()) return UnavailableError("the agent is stopping");
    health_cv_.wait_for(l, kReadyPoll);
  }
}

GuestStatus AgentService::StatusOf(Hypervisor* h, const GuestInfo& info) {
  GuestStatus s;
  s.info = info;
  const bool running = info.state == GuestState::kRunning;
  if (info.kind == GuestKind::kLxc) {
    // No control channel: a container is ready once its configured init runs.
    if (running) {
      auto r = h->ContainerInitRunning(info.name);
      s.ready = r.ok() && *r;
    }
  } else {
    std::optional<HealthView> v;
    {
      std::lock_guard l(health_mu_);
      v = health_.View(info.name);
    }
    if (!v || v->instance != info.id || v->running != running) {
      ObserveGuest(info);
      std::lock_guard l(health_mu_);
      v = health_.View(info.name);
    }
    if (v) {
      s.health = v->health;
      s.ready = v->ready;
      s.health_since = v->since;
      s.unresponsive_since = v->unresponsive_since;
    }
    std::lock_guard l(health_mu_);
    if (auto a = asked_.find(info.name); a != asked_.end()) s.asked_at = a->second;
  }
  if (info.state == GuestState::kCrashed) {
    NoteCrash(info.name, info.uuid, info.id, false);  // no-op when already recorded
    GuestCrash crash;
    {
      std::lock_guard l(health_mu_);
      crash.at = crashes_[info.name].at;
    }
    if (!info.console_log.empty())
      crash.console_tail = CrashConsoleTail(ReadTail(info.console_log, kCrashConsoleReach));
    s.crash = std::move(crash);
  }
  return s;
}

Result<GuestStatus> AgentService::StatusNow(Hypervisor* h, std::string_view name) {
  UW_ASSIGN_OR_RETURN(GuestInfo info, h->Get(name));
  return StatusOf(h, info);
}

}  // namespace uw::vmm
