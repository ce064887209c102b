// AgentService: start and stop, usage samples, the event log, host facts and guest lookup. The
// guest operations are in agent_guests.cc, health and crashes in agent_health.cc, local disks and
// live migration in agent_migration.cc.
#include "vmm/agent_service.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <fstream>
#include <sstream>

#include "common/id.h"

namespace uw::vmm {
namespace {

namespace fs = std::filesystem;
constexpr size_t kEventLogSize = 4096;
constexpr size_t kEventPageSize = 1000;

HealthOptions HealthOptionsFor(const AgentConfig& c) {
  HealthOptions o;
  o.interval = std::chrono::seconds(c.monitor_interval_s);
  o.timeout = std::chrono::seconds(c.monitor_timeout_s);
  return o;
}

}  // namespace

AgentService::AgentService(AgentConfig config, std::unique_ptr<Hypervisor> vm, std::unique_ptr<Hypervisor> ct,
                           KvmSupport kvm, Clock& clock)
    : config_(std::move(config)),
      vm_(std::move(vm)),
      ct_(std::move(ct)),
      kvm_(std::move(kvm)),
      clock_(clock),
      health_(HealthOptionsFor(config_)) {}

AgentService::~AgentService() { Stop(); }

Status AgentService::Start() {
  for (const char* sub : {"channels", "console", "disks", "images", "incoming"}) {
    std::error_code ec;
    fs::create_directories(fs::path(config_.state_dir) / sub, ec);
    if (ec)
      return UnavailableError("cannot create " + (fs::path(config_.state_dir) / sub).string() + ": " + ec.message());
  }
  PruneImages(std::chrono::seconds(config_.image_keep_s));
  {
    std::stringstream mountinfo;
    mountinfo << std::ifstream("/proc/self/mountinfo").rdbuf();
    cgroups_ = DetectCgroupLayout(mountinfo.str());
    spdlog::info("cgroups: {} (cpu at {}, cpuacct at {}): {}", cgroups_.version, cgroups_.cpu, cgroups_.cpuacct,
                 cgroups_.notes);
  }
  // Crash-only: whatever libvirt runs is ours; adopt it.
  for (Hypervisor* h : {vm_.get(), ct_.get()}) {
    if (!h) continue;
    UW_ASSIGN_OR_RETURN(auto guests, h->List());
    for (const auto& g : guests) {
      adopted_.push_back(g.name);
      spdlog::info("adopted guest {} ({}, {}) from {}", g.name, GuestKindName(g.kind), GuestStateName(g.state),
                   h->uri());
      RecordEvent({clock_.Now(), g.name, g.uuid, "adopted", std::string(GuestStateName(g.state)), h->uri()});
    }
  }
  UW_RETURN_IF_ERROR(SampleNow());
  {
    std::lock_guard l(stop_mu_);
    stopping_ = false;
  }
  sampler_ = std::thread([this] {
    std::unique_lock l(stop_mu_);
    while (!stopping_) {
      l.unlock();
      if (Status s = SampleNow(); !s.ok()) spdlog::warn("sampling failed: {}", s.ToString());
      KeepNetwork();
      l.lock();
      stop_cv_.wait_for(l, std::chrono::milliseconds(config_.sample_interval_ms), [this] { return stopping_; });
    }
  });
  monitor_ = std::thread([this] { MonitorLoop(); });
  return Status::Ok();
}

void AgentService::BeginStop() {
  {
    std::lock_guard l(stop_mu_);
    stopping_ = true;
  }
  // Wake long-polling event readers first: the HTTP server waits for in-flight handlers.
  { std::lock_guard l(events_mu_); }
  events_cv_.notify_all();
  stop_cv_.notify_all();
  { std::lock_guard l(health_mu_); }
  health_cv_.notify_all();
}

void AgentService::Stop() {
  BeginStop();
  if (sampler_.joinable()) sampler_.join();
  if (monitor_.joinable()) monitor_.join();
  // Migrations in flight finish in libvirtd (peer-to-peer) whether or not we wait; we wait so
  // that their threads never outlive the service.
  std::map<std::string, std::unique_ptr<Outgoing>> migrations;
  {
    std::lock_guard l(migrations_mu_);
    migrations.swap(migrations_);
  }
  for (auto& [name, m] : migrations) {
    if (m->thread.joinable()) m->thread.join();
  }
}

bool AgentService::Stopping() {
  std::lock_guard l(stop_mu_);
  return stopping_;
}

void AgentService::RecordEvent(LifecycleEvent e) {
  if (e.event == "crashed") NoteCrash(e.guest, e.uuid, e.id, true);
  AppendEvent(std::move(e));
}

void AgentService::AppendEvent(LifecycleEvent e) {
  {
    std::lock_guard l(events_mu_);
    events_.push_back({next_seq_++, std::move(e)});
    while (events_.size() > kEventLogSize) events_.pop_front();
  }
  events_cv_.notify_all();
}

EventPage AgentService::EventsSince(uint64_t since, Duration wait) {
  std::unique_lock l(events_mu_);
  auto has_new = [&] { return next_seq_ - 1 > since; };
  if (!has_new() && wait > Duration::zero()) {
    events_cv_.wait_for(l, wait, [&] {
      std::lock_guard s(stop_mu_);
      return has_new() || stopping_;
    });
  }
  EventPage page;
  for (const auto& e : events_) {
    if (e.seq > since && page.events.size() < kEventPageSize) page.events.push_back(e);
  }
  page.next = next_seq_ - 1;
  return page;
}

Status AgentService::SampleNow() {
  std::vector<GuestCounters> all, vms, cts;
  UW_ASSIGN_OR_RETURN(vms, vm_->SampleAll());
  if (ct_) {
    UW_ASSIGN_OR_RETURN(cts, ct_->SampleAll());
  }
  ObserveSample(vms, cts);
  all = vms;
  all.insert(all.end(), cts.begin(), cts.end());
  UW_ASSIGN_OR_RETURN(HostInfo host, vm_->Host());
  std::lock_guard l(usage_mu_);
  auto usage = tracker_.Update(all);
  usage_.clear();
  for (auto& u : usage) usage_[u.counters.name] = std::move(u);
  host_usage_ = std::move(host);
  sampled_at_ = clock_.Now();
  return Status::Ok();
}

UsageReport AgentService::Usage() {
  std::lock_guard l(usage_mu_);
  UsageReport r;
  r.sampled_at = sampled_at_;
  r.host = host_usage_;
  for (const auto& [name, u] : usage_) r.guests.push_back(u);
  return r;
}

Result<GuestUsage> AgentService::GuestUsageOf(std::string_view name) {
  UW_RETURN_IF_ERROR(ValidateGuestName(name, "guest name"));
  std::lock_guard l(usage_mu_);
  auto u = usage_.find(std::string(name));
  if (u == usage_.end()) {
    return NotFoundError("no usage sample for guest '" + std::string(name) + "' on host " + config_.host_name);
  }
  return u->second;
}

Result<HostReport> AgentService::Host() {
  HostReport r;
  UW_ASSIGN_OR_RETURN(r.host, vm_->Host());
  r.kvm = kvm_;
  r.cgroups = cgroups_;
  r.kinds = {"qemu"};
  if (kvm_.usable || config_.allow_emulated_kvm) r.kinds.push_back("kvm");
  if (ct_) r.kinds.push_back("lxc");
  for (const auto& [k, v] : config_.images) r.images.push_back(k);
  r.adopted = adopted_;
  std::lock_guard l(usage_mu_);
  r.cpu_busy_fraction = host_usage_.cpu_busy_fraction;
  r.guests = usage_.size();
  if (config_.network) {
    std::lock_guard n(network_mu_);
    r.network = network_;
    if (r.network->bridge.empty()) *r.network = {.bridge = config_.network->bridge, .error = "not made yet"};
  }
  return r;
}

Hypervisor* AgentService::HypervisorFor(GuestKind kind) { return kind == GuestKind::kLxc ? ct_.get() : vm_.get(); }

Result<Hypervisor*> AgentService::Find(std::string_view name) {
  UW_RETURN_IF_ERROR(ValidateGuestName(name, "guest name"));
  for (Hypervisor* h : {vm_.get(), ct_.get()}) {
    if (!h) continue;
    auto g = h->Get(name);
    if (g.ok()) return h;
    if (g.status().code() != StatusCode::kNotFound) return g.status();
  }
  return NotFoundError("guest '" + std::string(name) + "' does not exist on host " + config_.host_name);
}

Status AgentService::CheckExists(std::string_view name) { return Find(name).status(); }

std::shared_ptr<GuestChannel> AgentService::ChannelFor(const std::string& socket_path) {
  std::lock_guard l(channels_mu_);
  auto& c = channels_[socket_path];
  if (!c) c = std::make_shared<GuestChannel>(socket_path, clock_);
  return c;
}

}  // namespace uw::vmm
