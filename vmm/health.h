// Guest health: the agent's watch over each running guest's control channel (after vSphere HA's
// VM monitoring). A pure state machine on values; the agent feeds it what it observes and runs the
// pings it asks for, so every transition is unit tested with plain durations.
//
//   guest starts (new libvirt domain id: boot, restart, arrival by live migration)
//        │
//        ▼            ping answered                         no answer for `timeout`
//   starting ───────────────────────────▶ ready ◀──────────────────────────────▶ unresponsive
//   (ping every starting_interval)        (ping every interval)   answered again
//
//   none: the guest has no control channel (containers, guests defined without one) or does not
//   run (shut off, paused, crashed); it is not pinged.
//
// Thread-compatible: the agent serializes calls with its own mutex; nothing here blocks.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/clock.h"

namespace uw::vmm {

enum class Health { kNone, kStarting, kReady, kUnresponsive };
std::string_view HealthName(Health h);  // "none", "starting", "ready", "unresponsive"

struct HealthOptions {
  Duration interval = std::chrono::seconds(5);           // between pings of a ready guest
  Duration starting_interval = std::chrono::seconds(1);  // between pings while starting
  Duration timeout = std::chrono::seconds(30);           // no answer this long after ready: unresponsive
  Duration ping_timeout = std::chrono::seconds(5);       // one ping's wait (at most `timeout`)
  Duration starting_ping_timeout = std::chrono::seconds(2);
};

// A guest's health as reported in its JSON.
struct HealthView {
  int64_t instance = -1;  // the domain id last observed
  bool running = false;   // last observed running
  Health health = Health::kNone;
  bool ready = false;
  TimePoint since{};    // when the current health began (wall clock)
  TimePoint started{};  // when this instance was first seen running
  Duration started_mono{0};
  std::optional<TimePoint> unresponsive_since;
  std::optional<TimePoint> last_answer;  // the channel's last answer (wall clock)
};

// A transition worth an event: "ready" (first answer, or answering again), "unresponsive".
struct HealthEvent {
  std::string guest;
  std::string event;
  std::string detail;
};

// A ping the agent should send now; report its outcome with the same instance.
struct DuePing {
  std::string guest;
  int64_t instance = 0;
  std::string channel;  // socket path
  Duration timeout{0};
};

class HealthTracker {
 public:
  explicit HealthTracker(HealthOptions options) : options_(options) {}

  // The guest as observed now. `instance` is libvirt's domain id (a new one is a new QEMU: the
  // watch restarts at starting). Not running, or no channel: health none, no pings.
  void Observe(const std::string& guest, int64_t instance, bool running, const std::string& channel, Duration mono,
               TimePoint wall);
  // Forgets guests that are not in `present` (deleted, migrated away).
  void Retain(const std::vector<std::string>& present);
  void Forget(const std::string& guest);

  // Pings due at `mono` (marked in flight: not returned again until reported), and the
  // ready -> unresponsive transitions due by then.
  std::vector<DuePing> Due(Duration mono);
  std::vector<HealthEvent> Expire(Duration mono, TimePoint wall);
  // The outcome of a ping (or of any command) on the guest's channel. Not answered: the next
  // ping is scheduled; silence itself is judged by time (Expire), so a ping that could not be sent
  // (the channel was busy with a long command) is no news rather than a failure.
  std::vector<HealthEvent> Report(const std::string& guest, int64_t instance, bool answered, Duration mono,
                                  TimePoint wall);
  // Another command on the channel was answered: the guest is alive (as Report), but the pings
  // keep their schedule, since a ping's answer carries what only a ping asks (an ask for the
  // guest's holdings) and a guest that is sent commands often would otherwise never be pinged.
  std::vector<HealthEvent> Heard(const std::string& guest, int64_t instance, Duration mono, TimePoint wall);

  std::optional<HealthView> View(const std::string& guest) const;

 private:
  struct Watch {
    int64_t instance = -1;
    std::string channel;
    bool watched = false;  // running with a channel
    HealthView view;
    Duration last_answer_mono{0};
    bool answered_ever = false;
    Duration next_ping{0};
    bool in_flight = false;
  };
  // An answer heard: ready (from starting or unresponsive) with its event.
  std::vector<HealthEvent> Answered(const std::string& guest, Watch& w, Duration mono, TimePoint wall);
  const HealthOptions options_;
  std::map<std::string, Watch> watches_;
};

}  // namespace uw::vmm
