// uw-agent: the per-host daemon. Mechanism only: it runs what it is told through libvirt, reports
// usage and lifecycle events, and keeps no state of its own beyond what libvirt holds (crash-only:
// a restarted agent adopts the guests that kept running).
//
//   HTTP (api::HttpServer) -> Agent handlers -> Hypervisor (qemu:// for vm kinds, lxc:// for containers)
//   sampler thread: SampleAll every interval -> UsageTracker -> latest usage (served by /stats)
//   libvirt event thread -> event log (served by /events, long-poll with a cursor)
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "api/http.h"
#include "common/clock.h"
#include "vmm/cgroups.h"
#include "vmm/guest_channel.h"
#include "vmm/health.h"
#include "vmm/hypervisor.h"
#include "vmm/usage.h"

namespace uw::vmm {

struct AgentConfig {
  std::string host_name;
  std::string listen_address = "127.0.0.1";
  int listen_port = 7700;
  std::string token;                  // bearer token the manager must present
  std::string libvirt_uri = "qemu:///system";
  std::string lxc_uri;                // empty: no containers on this host
  std::string state_dir = "/var/lib/underware/agent";
  std::map<std::string, std::string> images;  // image name -> directory (vmlinux|vmlinuz, initrd.img, lxc-rootfs)
  bool allow_emulated_kvm = false;    // run kind=kvm guests under TCG when KVM is unusable
  std::string log_level = "info";
  std::string log_file;
  int sample_interval_ms = 1000;
  int stop_timeout_s = 30;            // graceful stop, then force
  size_t max_body_bytes = 256 << 10;
  std::string sys_root = "/";         // where DetectKvm looks (tests point it elsewhere)
  // Cluster membership (vmm/manager_link.h); empty manager_url: standalone agent.
  std::string manager_url;
  std::string join_token;
  int heartbeat_interval_ms = 2000;
  std::string advertise_url;          // how the manager reaches this agent; default http://listen address:port
  // How another host's libvirtd reaches this one for live migration (peer-to-peer).
  // Default qemu+tcp://<listen address>/system.
  std::string migration_uri;
  // Guest health watch (vmm/health.h): ping every `monitor.interval_s` once ready; no answer for
  // `monitor.timeout_s` makes a ready guest unresponsive.
  int monitor_interval_s = 5;
  int monitor_timeout_s = 30;
};

// Reads the agent's JSON config. Errors name the file and field ("agent.json: listen.port: ...").
Result<AgentConfig> AgentConfigFromJson(const Json& j, std::string_view where);
Result<AgentConfig> LoadAgentConfig(const std::string& path);

// What a crashed guest's JSON shows of its serial console: the last 2 KiB, reaching further back
// (up to 8 KiB) to start at the last "Kernel panic" line when there is one, since the kernel prints
// that line before the stack dump that follows it. Invalid UTF-8 bytes become '?'.
std::string CrashConsoleTail(std::string_view console);

struct AgentEvent {
  uint64_t seq = 0;
  LifecycleEvent event;
};

class Agent {
 public:
  // `vm` serves kvm/qemu guests; `ct` containers (may be null). Both must outlive nothing: the
  // agent owns them.
  Agent(AgentConfig config, std::unique_ptr<Hypervisor> vm, std::unique_ptr<Hypervisor> ct, KvmSupport kvm,
        Clock& clock = Clock::Real());
  ~Agent();
  Agent(const Agent&) = delete;
  Agent& operator=(const Agent&) = delete;

  // Adopts existing guests, starts sampling and (when `serve_http`) the HTTP server.
  Status Start(bool serve_http = true);
  // Stops serving and sampling. Guests keep running.
  void Stop();
  int port() const;
  const api::Router& router() const { return router_; }

  // Records a lifecycle event (called from libvirt's event thread, and by the agent itself).
  // A "crashed" event also records the crash (see GuestJson's `crash`).
  void RecordEvent(LifecycleEvent e);
  // Takes one sample of every guest now (the sampler thread calls this).
  Status SampleNow();

 private:
  void BuildRoutes();
  Hypervisor* HypervisorFor(GuestKind kind);
  // The hypervisor holding guest `name`, kNotFound otherwise.
  Result<Hypervisor*> Find(std::string_view name);
  Status ResolveImageAndChecks(GuestSpec& spec, const Json& body);
  std::shared_ptr<GuestChannel> ChannelFor(const std::string& socket_path);

  // Health watch and crashes. ObserveGuest tells the tracker what a guest is now (a new domain
  // id starts a new watch); GuestJson is GuestInfoToJson plus health, ready and crash.
  void ObserveGuest(const GuestInfo& info);
  void ObserveSample(const std::vector<GuestCounters>& vms, const std::vector<GuestCounters>& cts);
  // Records that `name` crashed (once per crash); `event_seen` says libvirt's event was recorded.
  void NoteCrash(const std::string& name, const std::string& uuid, int64_t id, bool event_seen);
  void AppendEvent(LifecycleEvent e);
  Json GuestJson(Hypervisor* h, const GuestInfo& info);
  void RecordHealthEvents(const std::vector<HealthEvent>& events);
  void MonitorLoop();
  // Waits (up to `deadline`, monotonic) until a starting guest answers; kFailedPrecondition
  // "not ready yet" when it does not.
  Status WaitUntilReady(const std::string& name, Duration deadline);
  api::Response HostInfoResponse();
  api::Response ListGuests();
  api::Response CreateGuest(const api::Request& req);
  api::Response GetGuest(const api::Request& req);
  api::Response StartGuest(const api::Request& req);
  api::Response StopGuest(const api::Request& req);
  api::Response PauseGuest(const api::Request& req, bool pause);
  api::Response ResizeGuest(const api::Request& req);
  api::Response DeleteGuest(const api::Request& req);
  api::Response ExecInGuest(const api::Request& req);
  api::Response GuestConsole(const api::Request& req);
  api::Response Stats(const api::Request& req);
  api::Response Events(const api::Request& req);
  // Live migration (see vmm/README.md): the destination prepares, the source migrates.
  api::Response PrepareIncoming(const api::Request& req);
  api::Response AbandonIncoming(const api::Request& req);
  api::Response MigrateGuest(const api::Request& req);
  api::Response MigrationStatus(const api::Request& req);
  api::Response ControlMigration(const api::Request& req);
  // Local disks live under state_dir/disks (a disk elsewhere is shared storage, at the same path
  // on every host). LocalDisks lists a guest's with their virtual sizes.
  std::filesystem::path LocalDiskDir() const { return std::filesystem::path(config_.state_dir) / "disks"; }
  bool IsLocalDisk(const std::string& path) const { return path.rfind(LocalDiskDir().string() + "/", 0) == 0; }
  Result<Json> LocalDisks(const GuestSpec& spec);
  Status CreateLocalDisks(GuestSpec& spec);

  const AgentConfig config_;
  std::unique_ptr<Hypervisor> vm_;
  std::unique_ptr<Hypervisor> ct_;
  const KvmSupport kvm_;
  Clock& clock_;
  api::Router router_;
  std::unique_ptr<api::HttpServer> server_;
  std::vector<std::string> adopted_;  // set once in Start

  std::mutex usage_mu_;
  UsageTracker tracker_;                          // guarded by usage_mu_
  std::map<std::string, GuestUsage> usage_;       // guarded by usage_mu_ (by guest name)
  HostInfo host_usage_;                           // guarded by usage_mu_
  TimePoint sampled_at_{};                        // guarded by usage_mu_

  std::mutex events_mu_;
  std::condition_variable events_cv_;
  std::deque<AgentEvent> events_;                 // guarded by events_mu_; the last kEventLogSize
  uint64_t next_seq_ = 1;                         // guarded by events_mu_

  std::mutex channels_mu_;
  std::map<std::string, std::shared_ptr<GuestChannel>> channels_;  // guarded by channels_mu_

  CgroupLayout cgroups_;  // set once in Start

  // Never held while talking to libvirt or a guest.
  std::mutex health_mu_;
  std::condition_variable health_cv_;             // a guest became ready (or the agent stops)
  HealthTracker health_;                          // guarded by health_mu_
  struct Crash {
    TimePoint at;
    int64_t id = -1;  // the domain id that crashed: one record per crash
  };
  std::map<std::string, Crash> crashes_;          // guarded by health_mu_ (by guest, while crashed)
  std::thread monitor_;

  // A migration this agent started as the source; the thread runs Hypervisor::Migrate.
  struct Outgoing {
    std::string state = "running";  // running | completed | failed | cancelled
    std::string destination;
    std::string error;
    MigrationJob final_job;         // completed job statistics
    bool cancel_requested = false;
    std::thread thread;
  };
  std::mutex migrations_mu_;
  std::map<std::string, std::unique_ptr<Outgoing>> migrations_;  // guarded by migrations_mu_ (by guest)

  std::mutex stop_mu_;
  std::condition_variable stop_cv_;
  bool stopping_ = false;                         // guarded by stop_mu_
  std::thread sampler_;
};

}  // namespace uw::vmm
