#include "vmm/health.h"

#include <algorithm>
#include <cstdio>

namespace uw::vmm {
namespace {

std::string Seconds(Duration d) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", std::chrono::duration<double>(d).count());
  return buf;
}

}  // namespace

std::string_view HealthName(Health h) {
  switch (h) {
    case Health::kNone:
      return "none";
    case Health::kStarting:
      return "starting";
    case Health::kReady:
      return "ready";
    case Health::kUnresponsive:
      return "unresponsive";
  }
  return "none";
}

void HealthTracker::Observe(const std::string& guest, int64_t instance, bool running, const std::string& channel,
                            Duration mono, TimePoint wall) {
  Watch& w = watches_[guest];
  const bool watched = running && !channel.empty();
  if (!watched) {
    if (w.watched || w.instance != instance || w.view.running != running || w.view.since == TimePoint{}) {
      const bool in_flight = w.in_flight;
      w = Watch{};
      w.in_flight = in_flight;
      w.instance = instance;
      w.view.instance = instance;
      w.view.running = running;
      w.view.since = wall;
    }
    return;
  }
  if (w.watched && w.instance == instance && w.channel == channel) return;
  // A new QEMU (or a guest that runs again after a pause, a crash or a stop): starting until it
  // answers.
  const bool in_flight = w.in_flight;
  w = Watch{};
  w.in_flight = in_flight;  // a ping of the old instance may still be running; its report is dropped
  w.instance = instance;
  w.view.instance = instance;
  w.view.running = true;
  w.channel = channel;
  w.watched = true;
  w.view.health = Health::kStarting;
  w.view.since = w.view.started = wall;
  w.view.started_mono = mono;
  w.next_ping = mono;
}

void HealthTracker::Retain(const std::vector<std::string>& present) {
  for (auto it = watches_.begin(); it != watches_.end();) {
    if (std::find(present.begin(), present.end(), it->first) == present.end()) {
      it = watches_.erase(it);
    } else {
      ++it;
    }
  }
}

void HealthTracker::Forget(const std::string& guest) { watches_.erase(guest); }

std::vector<DuePing> HealthTracker::Due(Duration mono) {
  std::vector<DuePing> out;
  for (auto& [name, w] : watches_) {
    if (!w.watched || w.in_flight || mono < w.next_ping) continue;
    w.in_flight = true;
    const bool starting = w.view.health == Health::kStarting;
    Duration t = starting ? options_.starting_ping_timeout : options_.ping_timeout;
    out.push_back({name, w.instance, w.channel, std::min(t, options_.timeout)});
  }
  return out;
}

std::vector<HealthEvent> HealthTracker::Expire(Duration mono, TimePoint wall) {
  std::vector<HealthEvent> out;
  for (auto& [name, w] : watches_) {
    if (!w.watched || w.view.health != Health::kReady) continue;
    const Duration silent = mono - w.last_answer_mono;
    if (silent < options_.timeout) continue;
    w.view.health = Health::kUnresponsive;
    w.view.ready = false;
    w.view.since = wall;
    w.view.unresponsive_since = wall - std::chrono::duration_cast<Duration>(silent - options_.timeout);
    out.push_back({name, "unresponsive",
                   "the control channel has not answered for " + Seconds(silent) + " s (timeout " +
                       Seconds(options_.timeout) + " s)"});
  }
  return out;
}

std::vector<HealthEvent> HealthTracker::Report(const std::string& guest, int64_t instance, bool answered, Duration mono,
                                               TimePoint wall) {
  std::vector<HealthEvent> out;
  auto it = watches_.find(guest);
  if (it == watches_.end()) return out;
  Watch& w = it->second;
  if (w.instance != instance || !w.watched) {
    w.in_flight = false;
    return out;  // a ping of an earlier instance
  }
  w.in_flight = false;
  const bool starting = w.view.health == Health::kStarting;
  w.next_ping = mono + (starting && !answered ? options_.starting_interval : options_.interval);
  if (!answered) return out;
  return Answered(guest, w, mono, wall);
}

std::vector<HealthEvent> HealthTracker::Heard(const std::string& guest, int64_t instance, Duration mono,
                                              TimePoint wall) {
  auto it = watches_.find(guest);
  if (it == watches_.end() || it->second.instance != instance || !it->second.watched) return {};
  return Answered(guest, it->second, mono, wall);
}

std::vector<HealthEvent> HealthTracker::Answered(const std::string& guest, Watch& w, Duration mono, TimePoint wall) {
  std::vector<HealthEvent> out;
  w.last_answer_mono = mono;
  w.view.last_answer = wall;
  if (w.view.health == Health::kStarting) {
    out.push_back(
        {guest, "ready",
         "the control channel answered " + Seconds(mono - w.view.started_mono) + " s after the guest started"});
  } else if (w.view.health == Health::kUnresponsive) {
    out.push_back({guest, "ready",
                   "the control channel answers again after " +
                       Seconds(std::chrono::duration_cast<Duration>(wall - *w.view.unresponsive_since)) +
                       " s unresponsive"});
  }
  if (w.view.health != Health::kReady) {
    w.view.health = Health::kReady;
    w.view.since = wall;
    w.view.unresponsive_since.reset();
  }
  w.view.ready = true;
  w.answered_ever = true;
  return out;
}

std::optional<HealthView> HealthTracker::View(const std::string& guest) const {
  auto it = watches_.find(guest);
  if (it == watches_.end()) return std::nullopt;
  return it->second.view;
}

}  // namespace uw::vmm
