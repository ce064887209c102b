// The HTTP client of uw-agent's REST API (vmm/agent.cc serves it) and the per-host directory of
// clients. Every JSON body the manager sends an agent or reads from one is written or read here.
#include "manager/agent_client.h"

#include <utility>

#include "api/http.h"

namespace uw::manager {

namespace mg = uw::migration;

migration::Presence PresenceOf(const Result<AgentGuest>& guest) {
  if (!guest.ok())
    return guest.status().code() == StatusCode::kNotFound ? mg::Presence::kAbsent : mg::Presence::kUnknown;
  const std::string& state = guest->state;
  if (state == "running" || state == "blocked" || state == "shutting_down") return mg::Presence::kRunning;
  if (state == "paused") return mg::Presence::kPaused;
  if (state == "shutoff" || state == "crashed") return mg::Presence::kAbsent;
  return mg::Presence::kUnknown;
}

AgentDirectory::AgentDirectory(Lookup lookup, Factory factory)
    : lookup_(std::move(lookup)), factory_(std::move(factory)) {}

std::shared_ptr<AgentClient> AgentDirectory::For(const std::string& host) {
  auto found = lookup_(host);
  if (!found.ok()) return NewFailingAgentClient(host, found.status());
  const AgentAddress& address = *found;
  std::lock_guard l(mu_);
  auto it = clients_.find(host);
  if (it != clients_.end() && it->second.first == address) return it->second.second;
  auto client = factory_(host, address);
  clients_[host] = {address, client};
  return client;
}

namespace {

Json DiskJson(const LocalDisk& d) {
  return {{"target", d.target}, {"file", d.file}, {"format", d.format}, {"virtual_size_bytes", d.virtual_size_bytes}};
}

Result<LocalDisk> DiskFrom(const JsonView& v) {
  LocalDisk d;
  UW_ASSIGN_OR_RETURN(d.target, v.String("target", ""));
  UW_ASSIGN_OR_RETURN(d.file, v.String("file"));
  UW_ASSIGN_OR_RETURN(d.format, v.String("format"));
  UW_ASSIGN_OR_RETURN(d.virtual_size_bytes, v.Int("virtual_size_bytes"));
  return d;
}

// The agent's view of a guest (vmm's GuestInfoToJson plus what GET adds). Fields the manager
// does not use are not read.
Result<AgentGuest> GuestFrom(const JsonView& v) {
  const Json& j = v.json();
  AgentGuest g;
  UW_ASSIGN_OR_RETURN(g.name, v.String("name", ""));
  UW_ASSIGN_OR_RETURN(g.state, v.String("state", "unknown"));
  UW_ASSIGN_OR_RETURN(std::string kind, v.String("kind", "qemu"));
  auto parsed_kind = ParseGuestKind(kind);
  if (!parsed_kind.ok()) return v.FieldError("kind", "expected kvm, qemu or lxc");
  g.kind = *parsed_kind;
  UW_ASSIGN_OR_RETURN(g.vcpus, v.Int("vcpus", 0));
  UW_ASSIGN_OR_RETURN(g.max_vcpus, v.Int("max_vcpus", g.vcpus));
  UW_ASSIGN_OR_RETURN(g.memory_mib, v.Int("memory_mib", 0));
  UW_ASSIGN_OR_RETURN(g.max_memory_mib, v.Int("max_memory_mib", g.memory_mib));
  if (auto c = j.find("channels"); c != j.end() && !c->is_null()) {
    if (!c->is_array()) return v.FieldError("channels", "expected an array");
    g.has_channel = !c->empty();
  }
  if (v.Has("local_disks")) {
    UW_ASSIGN_OR_RETURN(auto disks, v.Objects("local_disks"));
    for (const auto& d : disks) {
      UW_ASSIGN_OR_RETURN(LocalDisk disk, DiskFrom(d));
      g.local_disks.push_back(std::move(disk));
    }
  }
  UW_ASSIGN_OR_RETURN(g.forced, v.Bool("forced", false));
  if (v.Has("spec")) {
    UW_ASSIGN_OR_RETURN(JsonView spec, v.Object("spec"));
    g.port_nics = PortNicsOf(spec.json().value("nics", Json::array()));
    if (spec.Has("disks")) {
      UW_ASSIGN_OR_RETURN(auto disks, spec.Objects("disks"));
      for (const auto& d : disks) {
        AttachedDisk disk;
        UW_ASSIGN_OR_RETURN(disk.target, d.String("target"));
        UW_ASSIGN_OR_RETURN(disk.rbd, d.String("rbd", ""));
        g.disks.push_back(std::move(disk));
      }
    }
  }
  return g;
}

Result<mg::Stats> StatsFrom(const JsonView& v) {
  mg::Stats s;
  UW_ASSIGN_OR_RETURN(s.total_ms, v.Int("elapsed_ms", 0));
  UW_ASSIGN_OR_RETURN(s.downtime_ms, v.Int("downtime_ms", -1));
  UW_ASSIGN_OR_RETURN(s.memory_total_bytes, v.Int("memory_total_bytes", 0));
  UW_ASSIGN_OR_RETURN(s.memory_remaining_bytes, v.Int("memory_remaining_bytes", 0));
  UW_ASSIGN_OR_RETURN(s.memory_processed_bytes, v.Int("memory_processed_bytes", 0));
  UW_ASSIGN_OR_RETURN(s.dirty_rate_pages_s, v.Int("dirty_rate_pages_s", 0));
  UW_ASSIGN_OR_RETURN(s.expected_downtime_ms, v.Int("expected_downtime_ms", 0));
  UW_ASSIGN_OR_RETURN(s.disk_total_bytes, v.Int("disk_total_bytes", 0));
  UW_ASSIGN_OR_RETURN(s.disk_remaining_bytes, v.Int("disk_remaining_bytes", 0));
  UW_ASSIGN_OR_RETURN(s.iteration, v.Int("memory_iteration", 0));
  return s;
}

class HttpAgentClient final : public AgentClient {
 public:
  HttpAgentClient(std::string host, const AgentAddress& address, int timeout_ms)
      : host_(std::move(host)), client_([&] {
          api::ClientOptions o;
          o.base_url = address.url;
          o.bearer_token = address.token;
          o.timeout_ms = timeout_ms;
          return o;
        }()) {}

  const std::string& host() const override { return host_; }

  Status Ping() override { return Call("GET", "/api/v1/host", nullptr).status(); }
  Status ShutdownHost() override { return Call("POST", "/api/v1/host/shutdown", nullptr).status(); }
  Result<AgentGuest> Create(const Json& spec) override { return GuestCall("POST", "/api/v1/guests", &spec); }
  Result<AgentGuest> Get(const std::string& guest) override { return GuestCall("GET", GuestPath(guest), nullptr); }
  Result<AgentGuest> Start(const std::string& guest) override {
    return GuestCall("POST", GuestPath(guest) + "/start", nullptr);
  }
  Result<AgentGuest> Stop(const std::string& guest, const StopRequest& r) override {
    Json body = {{"force", r.force}};
    if (r.timeout_s) body["timeout_s"] = *r.timeout_s;
    return GuestCall("POST", GuestPath(guest) + "/stop", &body);
  }
  Result<AgentGuest> Pause(const std::string& guest) override {
    return GuestCall("POST", GuestPath(guest) + "/pause", nullptr);
  }
  Result<AgentGuest> Resume(const std::string& guest) override {
    return GuestCall("POST", GuestPath(guest) + "/resume", nullptr);
  }
  Result<AgentGuest> Resize(const std::string& guest, const ResizeRequest& r) override {
    Json body = Json::object();
    if (r.vcpus) body["vcpus"] = *r.vcpus;
    if (r.memory_mib) body["memory_mib"] = *r.memory_mib;
    if (r.cpu_quota_us || r.cpu_period_us) {
      Json& cpu = body["cpu"] = Json::object();
      if (r.cpu_quota_us) cpu["quota_us"] = *r.cpu_quota_us;
      if (r.cpu_period_us) cpu["period_us"] = *r.cpu_period_us;
    }
    return GuestCall("POST", GuestPath(guest) + "/resize", &body);
  }
  Result<AgentGuest> AttachDisk(const std::string& guest, const AttachedDisk& disk) override {
    Json body = {{"rbd", disk.rbd}, {"target", disk.target}};
    return GuestCall("POST", GuestPath(guest) + "/disks", &body);
  }
  Result<AgentGuest> ResizeDisk(const std::string& guest, const std::string& target, int64_t size_mib) override {
    Json body = {{"size_mib", size_mib}};
    return GuestCall("POST", GuestPath(guest) + "/disks/" + target + "/resize", &body);
  }
  Result<AgentGuest> DetachDisk(const std::string& guest, const std::string& target) override {
    return GuestCall("DELETE", GuestPath(guest) + "/disks/" + target, nullptr);
  }
  Status Delete(const std::string& guest, bool force) override {
    return Call("DELETE", GuestPath(guest) + (force ? "?force=true" : ""), nullptr).status();
  }
  Result<ImageCopyState> ImageState(const std::string& ref) override {
    UW_ASSIGN_OR_RETURN(Json j, Call("GET", "/api/v1/images/" + ref, nullptr));
    return ReadImageCopy("GET /api/v1/images/" + ref, j);
  }
  Result<ImageCopyState> PutImagePart(const std::string& ref, int64_t offset, int64_t total_bytes,
                                      const std::string& bytes) override {
    return PutPiece(
        "/api/v1/images/" + ref + "?offset=" + std::to_string(offset) + "&total=" + std::to_string(total_bytes), bytes);
  }
  Result<DiskFilePiece> ReadDiskPart(const std::string& guest, const std::string& target, int64_t offset,
                                     int64_t length) override {
    const std::string path = GuestPath(guest) + "/disks/" + target + "/file?offset=" + std::to_string(offset) +
                             "&length=" + std::to_string(length);
    auto r = client_.Do("GET", path);
    if (!r.ok()) return r.status().WithContext(Context());
    if (r->status != 200) return api::StatusFromHttp(r->status, r->body).WithContext(Context());
    DiskFilePiece piece;
    const auto total = r->headers.find("x-uw-file-bytes");
    if (total == r->headers.end() || total->second.empty() ||
        total->second.find_first_not_of("0123456789") != std::string::npos || total->second.size() > 18) {
      return InternalError("GET " + path + ": the answer has no X-Uw-File-Bytes size").WithContext(Context());
    }
    piece.total_bytes = std::stoll(total->second);
    piece.bytes = std::move(r->body);
    return piece;
  }
  Result<ImageCopyState> PutIncomingDiskPart(const std::string& guest, const std::string& target, int64_t offset,
                                             int64_t total_bytes, const std::string& bytes) override {
    return PutPiece("/api/v1/incoming/" + guest + "/disks/" + target + "?offset=" + std::to_string(offset) +
                        "&total=" + std::to_string(total_bytes),
                    bytes);
  }
  Result<ExecResult> Exec(const std::string& guest, const ExecRequest& r) override {
    const std::string what = "POST " + GuestPath(guest) + "/exec";
    Json body = {{"command", r.command}, {"timeout_s", r.timeout_s}};
    UW_ASSIGN_OR_RETURN(Json j, Call("POST", GuestPath(guest) + "/exec", &body));
    return Read<ExecResult>(what, j, [](const JsonView& v) -> Result<ExecResult> {
      ExecResult e;
      UW_ASSIGN_OR_RETURN(e.exit_code, v.Int("exit_code"));
      UW_ASSIGN_OR_RETURN(e.output, v.String("output", ""));
      return e;
    });
  }
  Result<std::string> ConsoleTail(const std::string& guest, size_t bytes) override {
    const std::string path = GuestPath(guest) + "/console?tail_bytes=" + std::to_string(bytes);
    auto r = client_.Do("GET", path);
    if (!r.ok()) return r.status().WithContext(Context());
    if (r->status != 200) return api::StatusFromHttp(r->status, r->body).WithContext(Context());
    return r->body;
  }

  Result<IncomingReady> PrepareIncoming(const IncomingRequest& r) override {
    Json disks = Json::array();
    for (const auto& d : r.disks) disks.push_back(DiskJson(d));
    Json body = {{"guest", r.guest},
                 {"kind", GuestKindName(r.kind)},
                 {"memory_mib", r.memory_mib},
                 {"vcpus", r.vcpus},
                 {"disks", disks}};
    if (!r.nics.empty()) body["nics"] = r.nics;
    UW_ASSIGN_OR_RETURN(Json j, Call("POST", "/api/v1/migrations/prepare", &body));
    return Read<IncomingReady>("POST /api/v1/migrations/prepare", j, [](const JsonView& v) -> Result<IncomingReady> {
      IncomingReady ready;
      UW_ASSIGN_OR_RETURN(ready.host, v.String("host", ""));
      UW_ASSIGN_OR_RETURN(ready.migration_uri, v.String("migration_uri"));
      UW_ASSIGN_OR_RETURN(ready.state_dir, v.String("state_dir"));
      return ready;
    });
  }
  Status AbandonIncoming(const std::string& guest) override {
    Json body = {{"guest", guest}};
    return Call("POST", "/api/v1/migrations/abandon", &body).status();
  }
  Status StartMigration(const std::string& guest, const TransferRequest& r) override {
    Json body = {{"destination",
                  {{"host", r.destination_host},
                   {"migration_uri", r.destination.migration_uri},
                   {"state_dir", r.destination.state_dir}}},
                 {"bandwidth_mib_s", r.bandwidth_mib_s},
                 {"downtime_limit_ms", r.downtime_limit_ms},
                 {"auto_converge", r.auto_converge},
                 {"postcopy", r.postcopy}};
    return Call("POST", GuestPath(guest) + "/migrate", &body).status();
  }
  Result<MigrationJob> MigrationStatus(const std::string& guest) override {
    const std::string path = GuestPath(guest) + "/migration";
    UW_ASSIGN_OR_RETURN(Json j, Call("GET", path, nullptr));
    return Read<MigrationJob>("GET " + path, j, [](const JsonView& v) -> Result<MigrationJob> {
      MigrationJob job;
      UW_ASSIGN_OR_RETURN(job.state, v.String("state", "none"));
      UW_ASSIGN_OR_RETURN(job.error, v.String("error", ""));
      if (v.Has("job")) {
        UW_ASSIGN_OR_RETURN(JsonView figures, v.Object("job"));
        UW_ASSIGN_OR_RETURN(job.stats, StatsFrom(figures));
      }
      return job;
    });
  }
  Status CancelMigration(const std::string& guest) override {
    return Call("POST", GuestPath(guest) + "/migration/cancel", nullptr).status();
  }
  Status SetMigrationBandwidth(const std::string& guest, double mib_s) override {
    Json body = {{"bandwidth_mib_s", mib_s}};
    return Call("POST", GuestPath(guest) + "/migration/bandwidth", &body).status();
  }
  Status StartPostCopy(const std::string& guest) override {
    return Call("POST", GuestPath(guest) + "/migration/postcopy", nullptr).status();
  }

 private:
  static std::string GuestPath(const std::string& guest) { return "/api/v1/guests/" + guest; }
  std::string Context() const { return "agent of host " + host_; }

  Result<Json> Call(std::string_view method, const std::string& path, const Json* body) {
    auto r = client_.Call(method, path, body);
    if (!r.ok()) return r.status().WithContext(Context());
    return r;
  }

  // A piece of a file arriving in order (an image copy, a carried disk): raw bytes PUT to `path`,
  // answered with how much the agent has.
  Result<ImageCopyState> PutPiece(const std::string& path, const std::string& bytes) {
    auto r = client_.Do("PUT", path, bytes, {{"Content-Type", "application/octet-stream"}});
    if (!r.ok()) return r.status().WithContext(Context());
    if (r->status / 100 != 2) return api::StatusFromHttp(r->status, r->body).WithContext(Context());
    return ReadImageCopy("PUT " + path, Json::parse(r->body, nullptr, false));
  }
  Result<ImageCopyState> ReadImageCopy(const std::string& what, const Json& j) {
    return Read<ImageCopyState>(what, j, [](const JsonView& v) -> Result<ImageCopyState> {
      ImageCopyState c;
      UW_ASSIGN_OR_RETURN(c.bytes, v.Int("bytes"));
      UW_ASSIGN_OR_RETURN(c.complete, v.Bool("complete"));
      return c;
    });
  }

  // An answer the agent documents but did not give is the agent's fault: kInternal.
  template <typename T, typename F>
  Result<T> Read(const std::string& what, const Json& j, F&& read) {
    Result<T> out = [&]() -> Result<T> {
      UW_ASSIGN_OR_RETURN(JsonView v, JsonView::Of(j, ""));
      return read(v);
    }();
    if (!out.ok()) return InternalError(Context() + ": unexpected answer to " + what + ": " + out.status().message());
    return out;
  }

  Result<AgentGuest> GuestCall(std::string_view method, const std::string& path, const Json* body) {
    UW_ASSIGN_OR_RETURN(Json j, Call(method, path, body));
    return Read<AgentGuest>(std::string(method) + " " + path, j, GuestFrom);
  }

  std::string host_;
  api::HttpClient client_;  // keeps its connections open between calls
};

class FailingAgentClient final : public AgentClient {
 public:
  FailingAgentClient(std::string host, Status why) : host_(std::move(host)), why_(std::move(why)) {}
  const std::string& host() const override { return host_; }
  Status Ping() override { return why_; }
  Status ShutdownHost() override { return why_; }
  Result<AgentGuest> Create(const Json&) override { return why_; }
  Result<AgentGuest> Get(const std::string&) override { return why_; }
  Result<AgentGuest> Start(const std::string&) override { return why_; }
  Result<AgentGuest> Stop(const std::string&, const StopRequest&) override { return why_; }
  Result<AgentGuest> Pause(const std::string&) override { return why_; }
  Result<AgentGuest> Resume(const std::string&) override { return why_; }
  Result<AgentGuest> Resize(const std::string&, const ResizeRequest&) override { return why_; }
  Status Delete(const std::string&, bool) override { return why_; }
  Result<ImageCopyState> ImageState(const std::string&) override { return why_; }
  Result<ImageCopyState> PutImagePart(const std::string&, int64_t, int64_t, const std::string&) override {
    return why_;
  }
  Result<DiskFilePiece> ReadDiskPart(const std::string&, const std::string&, int64_t, int64_t) override { return why_; }
  Result<ImageCopyState> PutIncomingDiskPart(const std::string&, const std::string&, int64_t, int64_t,
                                             const std::string&) override {
    return why_;
  }
  Result<AgentGuest> AttachDisk(const std::string&, const AttachedDisk&) override { return why_; }
  Result<AgentGuest> DetachDisk(const std::string&, const std::string&) override { return why_; }
  Result<AgentGuest> ResizeDisk(const std::string&, const std::string&, int64_t) override { return why_; }
  Result<ExecResult> Exec(const std::string&, const ExecRequest&) override { return why_; }
  Result<std::string> ConsoleTail(const std::string&, size_t) override { return why_; }
  Result<IncomingReady> PrepareIncoming(const IncomingRequest&) override { return why_; }
  Status AbandonIncoming(const std::string&) override { return why_; }
  Status StartMigration(const std::string&, const TransferRequest&) override { return why_; }
  Result<MigrationJob> MigrationStatus(const std::string&) override { return why_; }
  Status CancelMigration(const std::string&) override { return why_; }
  Status SetMigrationBandwidth(const std::string&, double) override { return why_; }
  Status StartPostCopy(const std::string&) override { return why_; }

 private:
  std::string host_;
  Status why_;
};

}  // namespace

Json PortNicsOf(const Json& nics) {
  Json out = Json::array();
  if (!nics.is_array()) return out;
  for (const Json& n : nics) {
    if (n.is_object() && n.value("type", "") == "port") out.push_back(n);
  }
  return out;
}

std::shared_ptr<AgentClient> NewFailingAgentClient(const std::string& host, Status why) {
  return std::make_shared<FailingAgentClient>(host, std::move(why));
}

std::shared_ptr<AgentClient> NewHttpAgentClient(const std::string& host, const AgentAddress& address, int timeout_ms) {
  return std::make_shared<HttpAgentClient>(host, address, timeout_ms);
}

}  // namespace uw::manager
