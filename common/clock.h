// Time as an injected dependency (after leveldb's Env and Mesos' Clock::pause).
// Production code takes a Clock&; tests pass a FakeClock and advance it by hand.
#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>

namespace uw {

using Duration = std::chrono::nanoseconds;
using TimePoint = std::chrono::time_point<std::chrono::system_clock, Duration>;

// Thread-safe.
class Clock {
 public:
  virtual ~Clock() = default;
  // Wall-clock time (for records shown to people and stored).
  virtual TimePoint Now() const = 0;
  // Monotonic time (for rates and timeouts), as an offset from an arbitrary epoch.
  virtual Duration Monotonic() const = 0;
  // The process-wide real clock.
  static Clock& Real();
};

class FakeClock : public Clock {
 public:
  explicit FakeClock(TimePoint start = TimePoint(std::chrono::seconds(1'700'000'000))) : now_(start) {}
  TimePoint Now() const override {
    std::lock_guard l(mu_);
    return now_;
  }
  Duration Monotonic() const override {
    std::lock_guard l(mu_);
    return mono_;
  }
  void Advance(Duration d) {
    std::lock_guard l(mu_);
    now_ += d;
    mono_ += d;
  }

 private:
  mutable std::mutex mu_;
  TimePoint now_;     // guarded by mu_
  Duration mono_{0};  // guarded by mu_
};

// Seconds since the Unix epoch, as a double (for JSON).
double ToUnixSeconds(TimePoint t);
// Milliseconds since the Unix epoch (the store's *_ms columns).
int64_t ToUnixMillis(TimePoint t);
// RFC 3339 UTC with milliseconds: "2026-11-22T10:00:00.123Z".
std::string FormatRfc3339(TimePoint t);

}  // namespace uw
