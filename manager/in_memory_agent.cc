// In-memory agents (see in_memory_agent.h): uw-agent's answers without libvirt or HTTP.
#include "manager/in_memory_agent.h"

#include <algorithm>
#include <utility>

#include "common/id.h"
#include "common/json.h"
#include "vmm/hypervisor.h"

namespace uw::manager {

namespace {
// The console of a crashed in-memory guest.
constexpr const char* kCrashConsole = "Kernel panic - not syncing: in-memory crash\n";
}  // namespace

class InMemoryAgent final : public AgentClient {
 public:
  InMemoryAgent(InMemoryCluster& cluster, std::string host) : cluster_(cluster), host_(std::move(host)) {}
  const std::string& host() const override { return host_; }

  Result<AgentGuest> Create(const Json& spec) override {
    UW_ASSIGN_OR_RETURN(JsonView v, JsonView::Of(spec, "body"));
    AgentGuest g;
    UW_ASSIGN_OR_RETURN(g.name, v.String("name"));
    UW_RETURN_IF_ERROR(ValidateGuestName(g.name, "body.name"));
    UW_ASSIGN_OR_RETURN(std::string kind, v.String("kind", "qemu"));
    UW_ASSIGN_OR_RETURN(g.kind, ParseGuestKind(kind));
    UW_ASSIGN_OR_RETURN(g.vcpus, v.Int("vcpus", 1));
    UW_ASSIGN_OR_RETURN(g.max_vcpus, v.Int("max_vcpus", g.vcpus));
    UW_ASSIGN_OR_RETURN(g.memory_mib, v.Int("memory_mib", 128));
    UW_ASSIGN_OR_RETURN(g.max_memory_mib, v.Int("max_memory_mib", g.memory_mib));
    UW_ASSIGN_OR_RETURN(bool start, v.Bool("start", true));
    g.state = start ? "running" : "shutoff";
    g.has_channel = g.kind != GuestKind::kLxc;
    std::map<std::string, int64_t> local;  // target -> size_mib of the local disks to make
    if (v.Has("disks")) {
      UW_ASSIGN_OR_RETURN(auto disks, v.Objects("disks"));
      for (const auto& d : disks) {
        AttachedDisk disk;
        UW_ASSIGN_OR_RETURN(disk.target, d.String("target", vmm::DefaultDiskTarget(g.disks.size())));
        UW_ASSIGN_OR_RETURN(disk.rbd, d.String("rbd", ""));
        UW_ASSIGN_OR_RETURN(int64_t size_mib, d.Int("size_mib", 0));
        if (disk.rbd.empty() && !d.Has("path") && size_mib > 0) local[disk.target] = size_mib;
        g.disks.push_back(std::move(disk));
      }
    }
    g.port_nics = PortNicsOf(spec.value("nics", Json::array()));  // as the agent's spec shows them
    UW_ASSIGN_OR_RETURN(bool carried, v.Bool("disks_carried", false));
    std::unique_lock l(cluster_.mu_);
    UW_ASSIGN_OR_RETURN(auto* h, Up());
    for (const auto& [target, size_mib] : local) {
      const std::string key = g.name + "/" + target;
      if (carried && !h->incoming_whole.count(key)) {
        return FailedPreconditionError("disk " + target + " of guest '" + g.name + "' carried to host " + host_ +
                                       " has not arrived whole (a cold move sends it before the create)");
      }
      g.local_disks.push_back({target, g.name + "-" + target + ".qcow2", "qcow2", size_mib << 20});
    }
    ++h->creates;
    h->create_specs[g.name] = spec;
    if (h->hold_creates) {
      ++h->creates_waiting;
      cluster_.creates_released_.wait(l, [h] { return !h->hold_creates; });
      --h->creates_waiting;
    }
    if (h->guests.count(g.name)) {
      return AlreadyExistsError("guest '" + g.name + "' already exists on host " + host_);
    }
    for (const auto& [target, size_mib] : local) {
      const std::string key = g.name + "/" + target;
      h->disk_files[key] = carried ? h->incoming[key] : "empty " + std::to_string(size_mib) + " MiB";
      h->incoming.erase(key);
      h->incoming_whole.erase(key);
    }
    h->guests[g.name] = g;
    return Answer(g);
  }

  Status Ping() override {
    std::lock_guard l(cluster_.mu_);
    return Up().status();
  }

  // The host goes down once no guest runs on it.
  Status ShutdownHost() override {
    std::lock_guard l(cluster_.mu_);
    UW_ASSIGN_OR_RETURN(auto* h, Up());
    for (const auto& [name, g] : h->guests) {
      if (g.state != "shutoff") return FailedPreconditionError("host " + host_ + " still runs guest " + name);
    }
    h->down = true;
    return Status::Ok();
  }

  Result<AgentGuest> Get(const std::string& guest) override {
    std::lock_guard l(cluster_.mu_);
    UW_ASSIGN_OR_RETURN(auto* g, Find(guest));
    return *g;
  }

  Result<AgentGuest> Start(const std::string& guest) override {
    std::lock_guard l(cluster_.mu_);
    UW_ASSIGN_OR_RETURN(auto* g, Find(guest));
    if (g->state == "running" || g->state == "paused") {
      return FailedPreconditionError("guest '" + guest + "' is already running");
    }
    g->state = "running";
    return Answer(*g);
  }

  Result<AgentGuest> Stop(const std::string& guest, const StopRequest& r) override {
    std::lock_guard l(cluster_.mu_);
    UW_ASSIGN_OR_RETURN(auto* g, Find(guest));
    const bool crashed = g->state == "crashed";
    if (g->state == "shutoff") return FailedPreconditionError("guest '" + guest + "' is not running");
    g->state = "shutoff";
    AgentGuest out = Answer(*g);
    out.forced = r.force || crashed;
    return out;
  }

  Result<AgentGuest> Pause(const std::string& guest) override {
    std::lock_guard l(cluster_.mu_);
    UW_ASSIGN_OR_RETURN(auto* g, Find(guest));
    if (g->state != "running") return FailedPreconditionError("guest '" + guest + "' is not running");
    g->state = "paused";
    return Answer(*g);
  }

  Result<AgentGuest> Resume(const std::string& guest) override {
    std::lock_guard l(cluster_.mu_);
    UW_ASSIGN_OR_RETURN(auto* g, Find(guest));
    if (g->state != "paused") return FailedPreconditionError("guest '" + guest + "' is not paused");
    g->state = "running";
    return Answer(*g);
  }

  Result<AgentGuest> Resize(const std::string& guest, const ResizeRequest& r) override {
    std::lock_guard l(cluster_.mu_);
    UW_ASSIGN_OR_RETURN(auto* g, Find(guest));
    if (r.memory_mib && (*r.memory_mib < 1 || *r.memory_mib > g->max_memory_mib)) {
      return InvalidArgumentError("body.memory_mib: " + std::to_string(*r.memory_mib) + " is outside 1.." +
                                  std::to_string(g->max_memory_mib));
    }
    if (r.vcpus && (*r.vcpus < 1 || *r.vcpus > g->max_vcpus)) {
      return InvalidArgumentError("body.vcpus: " + std::to_string(*r.vcpus) + " is above the guest's maximum of " +
                                  std::to_string(g->max_vcpus));
    }
    if (r.cpu_quota_us && *r.cpu_quota_us != -1 && *r.cpu_quota_us < 1000) {
      return InvalidArgumentError("body.cpu.quota_us: expected -1 (unlimited) or at least 1000");
    }
    if (r.memory_mib) g->memory_mib = *r.memory_mib;
    if (r.vcpus) g->vcpus = *r.vcpus;
    if (r.cpu_quota_us) cluster_.cpu_quotas_[guest] = *r.cpu_quota_us;
    return Answer(*g);
  }

  Result<AgentGuest> AttachDisk(const std::string& guest, const AttachedDisk& disk) override {
    std::lock_guard l(cluster_.mu_);
    UW_ASSIGN_OR_RETURN(auto* g, Find(guest));
    if (g->kind == GuestKind::kLxc)
      return FailedPreconditionError("guest '" + guest + "' is a container: it has no disks");
    for (const AttachedDisk& d : g->disks) {
      if (d.target == disk.target) {
        return AlreadyExistsError("guest '" + guest + "' has a disk at " + disk.target + " already");
      }
    }
    g->disks.push_back(disk);
    return *g;
  }

  Result<AgentGuest> ResizeDisk(const std::string& guest, const std::string& target, int64_t size_mib) override {
    std::lock_guard l(cluster_.mu_);
    UW_ASSIGN_OR_RETURN(auto* g, Find(guest));
    if (std::none_of(g->disks.begin(), g->disks.end(), [&](const AttachedDisk& d) { return d.target == target; })) {
      return NotFoundError("disk " + target + " of guest '" + guest + "': the guest has no such disk");
    }
    int64_t& have = cluster_.hosts_[host_].disk_mib[guest + "/" + target];
    if (size_mib < have) return InvalidArgumentError("size_mib: a resize only grows the disk");
    have = size_mib;
    return *g;
  }

  Result<AgentGuest> DetachDisk(const std::string& guest, const std::string& target) override {
    std::lock_guard l(cluster_.mu_);
    UW_ASSIGN_OR_RETURN(auto* g, Find(guest));
    auto it = std::find_if(g->disks.begin(), g->disks.end(), [&](const AttachedDisk& d) { return d.target == target; });
    if (it == g->disks.end()) return NotFoundError("disk " + target + " of guest '" + guest + "': no such disk");
    g->disks.erase(it);
    return *g;
  }

  Status Delete(const std::string& guest, bool force) override {
    std::lock_guard l(cluster_.mu_);
    UW_ASSIGN_OR_RETURN(auto* g, Find(guest));
    if (!force && (g->state == "running" || g->state == "paused")) {
      return FailedPreconditionError("guest '" + guest + "' is running; stop it first");
    }
    auto& h = cluster_.hosts_[host_];
    h.guests.erase(guest);
    EraseDisks(h.disk_files, guest);
    return Status::Ok();
  }

  Result<DiskFilePiece> ReadDiskPart(const std::string& guest, const std::string& target, int64_t offset,
                                     int64_t length) override {
    std::lock_guard l(cluster_.mu_);
    UW_ASSIGN_OR_RETURN(auto* g, Find(guest));
    const std::string what = "disk " + target + " of guest '" + guest + "'";
    auto it = cluster_.hosts_[host_].disk_files.find(guest + "/" + target);
    if (it == cluster_.hosts_[host_].disk_files.end()) return NotFoundError(what + ": the guest has no such disk");
    if (g->state != "shutoff") return FailedPreconditionError(what + " is read only while the guest is shut off");
    const auto total = static_cast<int64_t>(it->second.size());
    if (offset < 0 || offset > total || length <= 0 || length > (4 << 20)) {
      return InvalidArgumentError(what + ": offset " + std::to_string(offset) + ", length " + std::to_string(length));
    }
    return DiskFilePiece{it->second.substr(static_cast<size_t>(offset), static_cast<size_t>(length)), total};
  }

  Result<ImageCopyState> PutIncomingDiskPart(const std::string& guest, const std::string& target, int64_t offset,
                                             int64_t total_bytes, const std::string& bytes) override {
    std::lock_guard l(cluster_.mu_);
    UW_ASSIGN_OR_RETURN(auto* h, Up());
    if (h->guests.count(guest)) return AlreadyExistsError("guest '" + guest + "' already exists on host " + host_);
    const std::string key = guest + "/" + target;
    std::string& file = h->incoming[key];
    if (offset == 0) {
      file.clear();
      h->incoming_whole.erase(key);
    }
    if (offset != static_cast<int64_t>(file.size())) {
      return FailedPreconditionError("disk " + key + " on host " + host_ + ": has " + std::to_string(file.size()) +
                                     " bytes, not " + std::to_string(offset));
    }
    if (offset + static_cast<int64_t>(bytes.size()) > total_bytes) {
      return InvalidArgumentError("disk " + key + ": more bytes than total " + std::to_string(total_bytes));
    }
    file += bytes;
    if (static_cast<int64_t>(file.size()) == total_bytes) h->incoming_whole.insert(key);
    return ImageCopyState{static_cast<int64_t>(file.size()), h->incoming_whole.count(key) > 0};
  }

  Result<ImageCopyState> ImageState(const std::string& ref) override {
    std::lock_guard l(cluster_.mu_);
    UW_ASSIGN_OR_RETURN(auto* h, Up());
    auto it = h->images.find(ref);
    if (it == h->images.end()) return ImageCopyState{};
    return ImageCopyState{static_cast<int64_t>(it->second.size()), h->complete_images.count(ref) > 0};
  }

  Result<ImageCopyState> PutImagePart(const std::string& ref, int64_t offset, int64_t total_bytes,
                                      const std::string& bytes) override {
    std::lock_guard l(cluster_.mu_);
    UW_ASSIGN_OR_RETURN(auto* h, Up());
    std::string& copy = h->images[ref];
    if (offset != static_cast<int64_t>(copy.size())) {
      return FailedPreconditionError("image " + ref + " on host " + host_ + ": has " + std::to_string(copy.size()) +
                                     " bytes, not " + std::to_string(offset));
    }
    copy += bytes;
    if (static_cast<int64_t>(copy.size()) > total_bytes) {
      return InvalidArgumentError("image " + ref + ": more bytes than total " + std::to_string(total_bytes));
    }
    if (static_cast<int64_t>(copy.size()) == total_bytes) h->complete_images.insert(ref);
    return ImageCopyState{static_cast<int64_t>(copy.size()), h->complete_images.count(ref) > 0};
  }

  Result<ExecResult> Exec(const std::string& guest, const ExecRequest& r) override {
    std::lock_guard l(cluster_.mu_);
    UW_ASSIGN_OR_RETURN(auto* g, Find(guest));
    if (g->state != "running") return FailedPreconditionError("guest '" + guest + "' is " + g->state);
    if (!g->has_channel) return FailedPreconditionError("guest '" + guest + "' has no control channel");
    cluster_.execs_[guest].push_back(r.command);
    for (const auto& [prefix, output] : cluster_.exec_outputs_[guest]) {
      if (r.command.rfind(prefix, 0) == 0) return ExecResult{0, output};
    }
    return ExecResult{r.command == "false" ? 1 : 0, ""};
  }

  Result<std::string> ConsoleTail(const std::string& guest, size_t) override {
    std::lock_guard l(cluster_.mu_);
    UW_ASSIGN_OR_RETURN(auto* g, Find(guest));
    return g->state == "crashed" ? std::string(kCrashConsole) : std::string();
  }

  Result<IncomingReady> PrepareIncoming(const IncomingRequest& r) override {
    UW_RETURN_IF_ERROR(ValidateGuestName(r.guest, "body.guest"));
    if (r.kind == GuestKind::kLxc)
      return InvalidArgumentError("body.kind: containers do not live-migrate (move them cold)");
    if (r.memory_mib < 1) return InvalidArgumentError("body.memory_mib: expected a positive integer");
    std::lock_guard l(cluster_.mu_);
    UW_ASSIGN_OR_RETURN(auto* h, Up());
    int64_t used = 0;
    for (const auto& [name, g] : h->guests) {
      if (g.state != "shutoff") used += g.memory_mib;
    }
    const int64_t free = std::max<int64_t>(0, h->memory_mib - used);
    if (r.memory_mib > free) {
      return ResourceExhaustedError("host " + host_ + " has " + std::to_string(free) + " MiB free, guest '" + r.guest +
                                    "' needs " + std::to_string(r.memory_mib));
    }
    if (!r.nics.empty()) h->prepared_nics[r.guest] = r.nics;
    return IncomingReady{host_, "inmem://" + host_, "/var/lib/underware/" + host_};
  }

  Status AbandonIncoming(const std::string& guest) override {
    std::lock_guard l(cluster_.mu_);
    UW_ASSIGN_OR_RETURN(auto* h, Up());
    EraseDisks(h->incoming, guest);
    std::erase_if(h->incoming_whole, [&](const std::string& key) { return key.rfind(guest + "/", 0) == 0; });
    auto it = h->guests.find(guest);
    if (it == h->guests.end()) return Status::Ok();
    if (it->second.state == "running") {
      return FailedPreconditionError("guest '" + guest + "' runs on host " + host_ +
                                     ": not an abandoned incoming copy");
    }
    h->guests.erase(it);
    EraseDisks(h->disk_files, guest);
    return Status::Ok();
  }

  Status StartMigration(const std::string& guest, const TransferRequest& r) override {
    std::lock_guard l(cluster_.mu_);
    UW_ASSIGN_OR_RETURN(auto* g, Find(guest));
    if (g->state != "running") return FailedPreconditionError("guest '" + guest + "' is not running");
    if (!cluster_.hosts_.count(r.destination_host)) {
      return UnavailableError("libvirt: cannot reach " + r.destination.migration_uri);
    }
    auto& h = cluster_.hosts_[host_];
    InMemoryCluster::Job job;
    job.destination = r.destination_host;
    auto script = h.scripts.find(guest);
    if (script == h.scripts.end()) script = h.scripts.find("*");
    if (script != h.scripts.end()) job.script = script->second;
    h.jobs[guest] = job;
    return Status::Ok();
  }

  Result<MigrationJob> MigrationStatus(const std::string& guest) override {
    std::lock_guard l(cluster_.mu_);
    UW_ASSIGN_OR_RETURN(auto* h, Up());
    MigrationJob out;
    auto it = h->jobs.find(guest);
    if (it == h->jobs.end()) return out;  // the agent answers "none" for any guest
    InMemoryCluster::Job& job = it->second;
    if (job.state == "running") Step(guest, job);
    out.state = job.state;
    out.error = job.error;
    const int64_t total = (h->guests.count(guest) ? h->guests[guest].memory_mib : 128) << 20;
    migration::Stats s;
    s.total_ms = int64_t{100} * job.polls;
    s.memory_total_bytes = total;
    s.memory_remaining_bytes = job.state == "completed" ? 0 : total / (job.polls + 1);
    s.memory_processed_bytes = total - s.memory_remaining_bytes;
    s.downtime_ms = job.state == "completed" ? 5 : -1;
    s.iteration = job.polls;
    out.stats = s;
    return out;
  }

  Status CancelMigration(const std::string& guest) override {
    std::lock_guard l(cluster_.mu_);
    UW_ASSIGN_OR_RETURN(auto* h, Up());
    UW_RETURN_IF_ERROR(Find(guest).status());
    auto it = h->jobs.find(guest);
    if (it == h->jobs.end() || it->second.state != "running") {
      return FailedPreconditionError("guest '" + guest + "' has no migration in progress");
    }
    it->second.cancelled = true;
    return Status::Ok();
  }

  Status SetMigrationBandwidth(const std::string& guest, double mib_s) override {
    if (!(mib_s > 0)) return InvalidArgumentError("body.bandwidth_mib_s: expected a positive number");
    std::lock_guard l(cluster_.mu_);
    return Find(guest).status();
  }

  Status StartPostCopy(const std::string& guest) override {
    std::lock_guard l(cluster_.mu_);
    UW_ASSIGN_OR_RETURN(auto* h, Up());
    UW_RETURN_IF_ERROR(Find(guest).status());
    auto it = h->jobs.find(guest);
    if (it == h->jobs.end() || it->second.state != "running") {
      return FailedPreconditionError("guest '" + guest + "' has no migration in progress");
    }
    it->second.script.never_converges = false;  // post-copy always finishes
    it->second.polls = std::max(it->second.polls, it->second.script.polls_to_complete - 1);
    return Status::Ok();
  }

 private:
  // Requires cluster_.mu_.
  Result<InMemoryCluster::Host*> Up() {
    ++cluster_.calls_;
    auto it = cluster_.hosts_.find(host_);
    if (it == cluster_.hosts_.end()) return NotFoundError("host '" + host_ + "' is no longer in the cluster");
    if (it->second.down) {
      return UnavailableError("agent of host " + host_ + ": connection refused (the in-memory host is down)");
    }
    return &it->second;
  }
  Result<AgentGuest*> Find(const std::string& guest) {
    UW_ASSIGN_OR_RETURN(auto* h, Up());
    auto it = h->guests.find(guest);
    if (it == h->guests.end()) return NotFoundError("guest '" + guest + "' not found on host " + host_);
    return &it->second;
  }
  // Removes `guest`'s entries ("GUEST/TARGET") from `files`.
  static void EraseDisks(std::map<std::string, std::string>& files, const std::string& guest) {
    const std::string prefix = guest + "/";
    for (auto d = files.lower_bound(prefix); d != files.end() && d->first.rfind(prefix, 0) == 0;) d = files.erase(d);
  }
  // Lifecycle answers carry no disks (only Get does), as the agent's.
  static AgentGuest Answer(AgentGuest g) {
    g.local_disks.clear();
    g.disks.clear();
    return g;
  }
  // One poll of a running job. Requires cluster_.mu_.
  void Step(const std::string& guest, InMemoryCluster::Job& job) {
    ++job.polls;
    if (job.script.source_down_after_polls > 0 && job.polls >= job.script.source_down_after_polls) {
      cluster_.hosts_[host_].down = true;
    }
    if (job.cancelled) {
      job.state = "cancelled";
      job.error = "operation aborted: migration out job: canceled by client";
      return;
    }
    if (job.script.never_converges || job.polls < job.script.polls_to_complete) return;
    if (job.script.fail) {
      job.state = "failed";
      job.error = "operation failed: migration out job: unexpectedly failed (in-memory script)";
      return;
    }
    auto& source = cluster_.hosts_[host_];
    auto moving = source.guests.find(guest);
    if (moving == source.guests.end()) {
      job.state = "failed";
      job.error = "the guest vanished during the transfer";
      return;
    }
    AgentGuest g = moving->second;
    source.guests.erase(moving);
    auto& dest = cluster_.hosts_[job.destination];
    for (auto d = source.disk_files.lower_bound(guest + "/");
         d != source.disk_files.end() && d->first.rfind(guest + "/", 0) == 0;) {
      dest.disk_files[d->first] = d->second;  // the copy-storage mirror
      d = source.disk_files.erase(d);
    }
    g.state = job.script.dies_on_destination ? "crashed" : "running";
    cluster_.hosts_[job.destination].guests[guest] = g;
    job.state = "completed";
  }

  InMemoryCluster& cluster_;
  const std::string host_;
};

void InMemoryCluster::AddHost(const std::string& host, int64_t memory_mib) {
  std::lock_guard l(mu_);
  hosts_[host].memory_mib = memory_mib;
}

std::shared_ptr<AgentClient> InMemoryCluster::Client(const std::string& host) {
  return std::make_shared<InMemoryAgent>(*this, host);
}

std::function<std::shared_ptr<AgentClient>(const std::string&, const AgentAddress&)> InMemoryCluster::Factory() {
  return [this](const std::string& host, const AgentAddress&) { return Client(host); };
}

void InMemoryCluster::SetDown(const std::string& host, bool down) {
  std::lock_guard l(mu_);
  hosts_[host].down = down;
}

void InMemoryCluster::Script(const std::string& host, const std::string& guest, MigrationScript script) {
  std::lock_guard l(mu_);
  hosts_[host].scripts[guest] = script;
}

void InMemoryCluster::SetState(const std::string& host, const std::string& guest, const std::string& state) {
  std::lock_guard l(mu_);
  auto& h = hosts_[host];
  if (auto it = h.guests.find(guest); it != h.guests.end()) it->second.state = state;
}

void InMemoryCluster::Place(const std::string& host, const AgentGuest& guest) {
  std::lock_guard l(mu_);
  hosts_[host].guests[guest.name] = guest;
}

void InMemoryCluster::Remove(const std::string& host, const std::string& guest) {
  std::lock_guard l(mu_);
  hosts_[host].guests.erase(guest);
}

void InMemoryCluster::SetExecOutput(const std::string& guest, const std::string& prefix, const std::string& output) {
  std::lock_guard l(mu_);
  auto& outputs = exec_outputs_[guest];
  for (auto& [p, out] : outputs) {
    if (p == prefix) {
      out = output;  // the same prefix answers anew
      return;
    }
  }
  outputs.emplace_back(prefix, output);
}

std::vector<std::string> InMemoryCluster::ExecsOf(const std::string& guest) const {
  std::lock_guard l(mu_);
  auto it = execs_.find(guest);
  return it == execs_.end() ? std::vector<std::string>() : it->second;
}

void InMemoryCluster::HoldCreates(const std::string& host, bool hold) {
  {
    std::lock_guard l(mu_);
    hosts_[host].hold_creates = hold;
  }
  creates_released_.notify_all();
}

int InMemoryCluster::creates(const std::string& host) const {
  std::lock_guard l(mu_);
  auto it = hosts_.find(host);
  return it == hosts_.end() ? 0 : it->second.creates;
}

int InMemoryCluster::creates_waiting(const std::string& host) const {
  std::lock_guard l(mu_);
  auto it = hosts_.find(host);
  return it == hosts_.end() ? 0 : it->second.creates_waiting;
}

int64_t InMemoryCluster::DiskMib(const std::string& host, const std::string& guest, const std::string& target) const {
  std::lock_guard l(mu_);
  auto h = hosts_.find(host);
  if (h == hosts_.end()) return 0;
  auto it = h->second.disk_mib.find(guest + "/" + target);
  return it == h->second.disk_mib.end() ? 0 : it->second;
}

std::optional<std::string> InMemoryCluster::DiskFile(const std::string& host, const std::string& guest,
                                                     const std::string& target) const {
  std::lock_guard l(mu_);
  auto h = hosts_.find(host);
  if (h == hosts_.end()) return std::nullopt;
  auto it = h->second.disk_files.find(guest + "/" + target);
  if (it == h->second.disk_files.end()) return std::nullopt;
  return it->second;
}

void InMemoryCluster::SetDiskFile(const std::string& host, const std::string& guest, const std::string& target,
                                  const std::string& bytes) {
  std::lock_guard l(mu_);
  hosts_[host].disk_files[guest + "/" + target] = bytes;
}

std::string InMemoryCluster::ImageCopy(const std::string& host, const std::string& ref) const {
  std::lock_guard l(mu_);
  auto h = hosts_.find(host);
  if (h == hosts_.end()) return "";
  auto it = h->second.images.find(ref);
  return it == h->second.images.end() ? "" : it->second;
}

Json InMemoryCluster::PreparedNics(const std::string& host, const std::string& guest) const {
  std::lock_guard l(mu_);
  auto it = hosts_.find(host);
  if (it == hosts_.end()) return nullptr;
  auto nics = it->second.prepared_nics.find(guest);
  return nics == it->second.prepared_nics.end() ? Json(nullptr) : nics->second;
}

Json InMemoryCluster::CreateSpec(const std::string& host, const std::string& guest) const {
  std::lock_guard l(mu_);
  auto it = hosts_.find(host);
  if (it == hosts_.end()) return nullptr;
  auto spec = it->second.create_specs.find(guest);
  return spec == it->second.create_specs.end() ? Json(nullptr) : spec->second;
}

Json InMemoryCluster::HeartbeatBody(const std::string& host) const {
  std::lock_guard l(mu_);
  Json guests = Json::array();
  if (auto it = hosts_.find(host); it != hosts_.end()) {
    for (const auto& [name, g] : it->second.guests) {
      Json one = {{"name", name},
                  {"state", g.state},
                  {"kind", g.kind},
                  {"vcpus", g.vcpus},
                  {"max_vcpus", g.max_vcpus},
                  {"memory_mib", g.memory_mib},
                  {"max_memory_mib", g.max_memory_mib}};
      if (g.state == "crashed") one["crash"] = {{"console_tail", kCrashConsole}};
      guests.push_back(std::move(one));
    }
  }
  return {{"stats", {{"guests", Json::array()}}}, {"guests", std::move(guests)}};
}

std::set<std::string> InMemoryCluster::GuestsOn(const std::string& host) {
  std::lock_guard l(mu_);
  std::set<std::string> out;
  if (auto it = hosts_.find(host); it != hosts_.end()) {
    for (const auto& [name, g] : it->second.guests) out.insert(name);
  }
  return out;
}

std::string InMemoryCluster::StateOf(const std::string& host, const std::string& guest) {
  std::lock_guard l(mu_);
  auto it = hosts_.find(host);
  if (it == hosts_.end()) return "";
  auto g = it->second.guests.find(guest);
  return g == it->second.guests.end() ? "" : g->second.state;
}

int64_t InMemoryCluster::CpuQuotaOf(const std::string& guest) const {
  std::lock_guard l(mu_);
  auto it = cpu_quotas_.find(guest);
  return it == cpu_quotas_.end() ? -1 : it->second;
}

int InMemoryCluster::calls() const {
  std::lock_guard l(mu_);
  return calls_;
}

}  // namespace uw::manager
