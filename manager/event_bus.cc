#include "manager/event_bus.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <optional>

namespace uw::manager::internal {
namespace {

constexpr std::string_view kKeepAlive = ": keep-alive\n\n";
// Backlog pages served per dispatcher round before new events are fanned out again (so that many
// streams resuming from far back do not hold up live delivery for long).
constexpr int kCatchUpPagesPerRound = 32;

std::string Frame(Json e, const EventBus::Presenter& present, const Principal& who) {
  present(who, e);
  return api::SseEvent(e["type"].get<std::string>(), e.dump(), std::to_string(e["seq"].get<int64_t>()));
}

}  // namespace

Json EventRowJson(const SqlRow& r) {
  return {{"seq", r.Int("seq")},       {"at", FormatRfc3339(TimePoint(std::chrono::milliseconds(r.Int("at_ms"))))},
          {"type", r.Str("type")},     {"subject", r.Str("subject")},
          {"tenant", r.Str("tenant")}, {"data", r.JsonOf("data")}};
}

EventBus::EventBus(Store& store, Clock& clock, Presenter present, Duration keep_alive)
    : store_(store), clock_(clock), present_(std::move(present)), keep_alive_(keep_alive) {}

EventBus::~EventBus() { Stop(); }

void EventBus::Start(int64_t last_seq) {
  std::lock_guard l(mu_);
  if (started_) return;
  started_ = true;
  stopping_ = false;
  live_ = last_seq;
  notified_seq_ = last_seq;
  thread_ = std::thread([this] { Run(); });
}

void EventBus::Stop() {
  std::unordered_map<uint64_t, std::shared_ptr<Subscriber>> subs;
  {
    std::lock_guard l(mu_);
    stopping_ = true;
    subs.swap(subs_);
    joining_.clear();
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  // Outside mu_: Close() runs the OnClose callback, which unsubscribes (a no-op now).
  for (auto& [id, s] : subs) s->writer->Close();
  catching_up_.clear();
  std::lock_guard l(mu_);
  started_ = false;
}

void EventBus::Notify(int64_t seq) {
  {
    std::lock_guard l(mu_);
    if (seq <= notified_seq_) return;
    notified_seq_ = seq;
  }
  cv_.notify_one();
}

void EventBus::Subscribe(const Principal& who, int64_t since, bool follow, std::shared_ptr<api::StreamWriter> writer) {
  auto s = std::make_shared<Subscriber>();
  s->who = who;
  s->tenant_only = who.role == Role::kTenant;
  s->follow = follow;
  s->writer = writer;
  s->position = since;
  s->last_write = clock_.Monotonic();
  {
    std::lock_guard l(mu_);
    if (!started_ || stopping_) {
      s = nullptr;
    } else {
      s->id = next_id_++;
      subs_[s->id] = s;
      joining_.push_back(s);
    }
  }
  if (s == nullptr) {
    writer->Close();
    return;
  }
  cv_.notify_one();
  // At once if the client has already gone (then the dispatcher drops it on its first write).
  writer->OnClose([this, id = s->id] { Unsubscribe(id); });
}

void EventBus::Unsubscribe(uint64_t id) {
  std::shared_ptr<Subscriber> gone;  // released outside mu_
  std::lock_guard l(mu_);
  auto it = subs_.find(id);
  if (it == subs_.end()) return;
  gone = std::move(it->second);
  subs_.erase(it);
}

size_t EventBus::subscribers() const {
  std::lock_guard l(mu_);
  return subs_.size();
}

void EventBus::Fail(Subscriber& s, const Status& error) {
  s.writer->Write(api::SseEvent("error", error.ToString()));
  s.writer->Close();
}

bool EventBus::CatchUp(Subscriber& s) {
  if (!s.writer->IsOpen()) return true;
  // Everything up to `upto` is read as backlog (in pages); later events come from FanOut.
  auto newest = store_.Query("SELECT COALESCE(MAX(seq), 0) AS seq FROM events");
  if (!newest.ok()) {
    Fail(s, newest.status());
    return true;
  }
  const int64_t upto = (*newest)[0].Int("seq");
  auto rows = s.tenant_only
                  ? store_.Query("SELECT * FROM events WHERE seq > ? AND seq <= ? AND tenant = ? ORDER BY seq LIMIT ?",
                                 {s.position, upto, s.who.tenant, kPage})
                  : store_.Query("SELECT * FROM events WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
                                 {s.position, upto, kPage});
  if (!rows.ok()) {
    Fail(s, rows.status());
    return true;
  }
  for (const auto& r : *rows) {
    s.position = r.Int("seq");
    if (!s.writer->Write(Frame(EventRowJson(r), present_, s.who))) return true;
    s.last_write = clock_.Monotonic();
  }
  if (static_cast<int64_t>(rows->size()) == kPage) return false;
  s.position = std::max(s.position, upto);
  if (!s.follow) {
    s.writer->Close();
    return true;
  }
  return true;
}

void EventBus::FanOut(const std::vector<std::shared_ptr<Subscriber>>& subs) {
  if (subs.empty()) {
    // Nobody to send to: only move past what is committed (a later stream reads it as backlog).
    auto newest = store_.Query("SELECT COALESCE(MAX(seq), 0) AS seq FROM events");
    if (newest.ok()) live_ = std::max(live_, (*newest)[0].Int("seq"));
    return;
  }
  while (true) {
    auto rows = store_.Query("SELECT * FROM events WHERE seq > ? ORDER BY seq LIMIT ?", {live_, kPage});
    if (!rows.ok()) {
      // Transient (the store is busy or failing): the next notification or round retries.
      spdlog::warn("event bus: reading events after {}: {}", live_, rows.status().ToString());
      return;
    }
    const int64_t batch_start = live_;
    for (const auto& r : *rows) {
      const int64_t seq = r.Int("seq");
      const std::string tenant = r.Str("tenant");
      // Formatted once for everyone who sees all events and once for the event's tenant (every
      // tenant subscriber it goes to is of that tenant), when first needed.
      std::optional<Json> event;
      std::string frame_all, frame_tenant;
      for (const auto& s : subs) {
        if (s->position < batch_start || s->position >= seq) continue;  // catching up, or had it
        s->position = seq;
        if (s->tenant_only && s->who.tenant != tenant) continue;
        if (!event) event = EventRowJson(r);
        std::string& frame = s->tenant_only ? frame_tenant : frame_all;
        if (frame.empty()) frame = Frame(*event, present_, s->who);
        if (s->writer->Write(frame)) s->last_write = clock_.Monotonic();
      }
      live_ = seq;
    }
    // Subscribers that saw no event of this batch are at its end too.
    for (const auto& s : subs) {
      if (s->position >= batch_start) s->position = std::max(s->position, live_);
    }
    if (static_cast<int64_t>(rows->size()) < kPage) return;
  }
}

void EventBus::Run() {
  // Keep-alives are checked a few times per period, so a quiet stream gets one within 1.25 periods.
  const auto check_every = std::max<Duration>(keep_alive_ / 4, std::chrono::milliseconds(10));
  int64_t handled_seq = live_;
  std::unique_lock l(mu_);
  while (true) {
    cv_.wait_for(l, check_every, [&] {
      return stopping_ || notified_seq_ > handled_seq || !joining_.empty() || !catching_up_.empty();
    });
    if (stopping_) return;
    const int64_t notified = notified_seq_;
    for (auto& s : joining_) catching_up_.push_back(std::move(s));
    joining_.clear();
    std::vector<std::shared_ptr<Subscriber>> subs;
    subs.reserve(subs_.size());
    for (const auto& [id, s] : subs_) subs.push_back(s);
    l.unlock();

    // Live first (subscribers still catching up are skipped by their position), then backlogs.
    if (notified > handled_seq) {
      FanOut(subs);
      // A notified event that is not there was rolled back: its seq comes again with the next one.
      handled_seq = notified;
    }
    int pages = 0;
    for (auto it = catching_up_.begin(); it != catching_up_.end() && pages < kCatchUpPagesPerRound; ++pages) {
      if (CatchUp(**it)) {
        it = catching_up_.erase(it);
      } else {
        ++it;
      }
    }
    const Duration now = clock_.Monotonic();
    for (const auto& s : subs) {
      if (s->position < live_ || now - s->last_write < keep_alive_) continue;
      if (s->writer->Write(kKeepAlive)) s->last_write = now;
    }
    l.lock();
  }
}

}  // namespace uw::manager::internal
