// uw-agent's HTTP layer: each route parses its request (JsonView, GuestSpecFromJson), calls
// AgentService and renders the answer as JSON. Errors go through api::Response::Error, the one
// error body of api/router.cc.
#include "vmm/agent.h"

#include <spawn.h>
#include <spdlog/spdlog.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstring>
#include <thread>

#include "common/id.h"

namespace uw::vmm {
namespace {

constexpr size_t kDefaultConsoleTail = 64 << 10;
constexpr size_t kMaxConsoleTail = 4 << 20;
constexpr int64_t kMaxEventWaitMs = 30'000;

api::Response Ok(const Json& body, int status = 200) { return api::Response::Json(status, body); }
api::Response Err(const Status& s) { return api::Response::Error(s); }

int64_t UnixMillis(TimePoint t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}

Json EventToJson(const AgentEvent& e) {
  return {
      {"seq", e.seq},           {"at", FormatRfc3339(e.event.at)}, {"guest", e.event.guest},  {"uuid", e.event.uuid},
      {"event", e.event.event}, {"detail", e.event.detail},        {"source", e.event.source}};
}

// GuestInfoToJson plus health, ready and crash.
Json GuestStatusToJson(const GuestStatus& s) {
  Json j = GuestInfoToJson(s.info);
  j["health"] = HealthName(s.health);
  j["ready"] = s.ready;
  if (s.health_since) j["health_since"] = UnixMillis(*s.health_since);
  if (s.unresponsive_since) j["unresponsive_since"] = UnixMillis(*s.unresponsive_since);
  if (s.asked_at) j["asked_at_ms"] = UnixMillis(*s.asked_at);
  if (s.crash) j["crash"] = {{"at", UnixMillis(s.crash->at)}, {"console_tail", s.crash->console_tail}};
  return j;
}

Json GuestDetailsToJson(const GuestDetails& d) {
  Json j = GuestStatusToJson(d.status);
  if (d.spec) j["spec"] = GuestSpecToJson(*d.spec);
  if (d.local_disks) {
    Json disks = Json::array();
    for (const auto& l : *d.local_disks) {
      disks.push_back(
          {{"target", l.target}, {"file", l.file}, {"format", l.format}, {"virtual_size_bytes", l.virtual_size_bytes}});
    }
    j["local_disks"] = disks;
  }
  return j;
}

Json HostReportToJson(const HostReport& r, const AgentConfig& config) {
  Json j = HostInfoToJson(r.host);
  j["name"] = config.host_name;
  j["kvm"] = {{"device_present", r.kvm.device_present},
              {"usable", r.kvm.usable},
              {"module", r.kvm.module},
              {"reason", r.kvm.reason}};
  j["allow_emulated_kvm"] = config.allow_emulated_kvm;
  j["cgroups"] = CgroupLayoutToJson(r.cgroups);
  j["monitor"] = {{"interval_s", config.monitor_interval_s}, {"timeout_s", config.monitor_timeout_s}};
  j["kinds"] = r.kinds;
  j["images"] = r.images;
  j["adopted"] = r.adopted;
  j["cpu_busy_fraction"] = r.cpu_busy_fraction;
  j["guests"] = r.guests;
  j["network"] = r.network ? Json{{"bridge", r.network->bridge},
                                  {"ready", r.network->ready},
                                  {"error", r.network->error.empty() ? Json(nullptr) : Json(r.network->error)}}
                           : Json(nullptr);
  return j;
}

Json MigrationReportToJson(const MigrationReport& r, std::string_view guest, const std::string& host) {
  Json out = {{"guest", guest}, {"host", host}, {"state", r.state}};
  if (r.tracked) {
    out["destination"] = r.destination;
    out["error"] = r.error;
  }
  if (r.job) out["job"] = MigrationJobToJson(*r.job);
  if (!r.guest_state.empty()) out["guest_state"] = r.guest_state;
  return out;
}

// Assigns a parsed field or returns its error as the response.
#define UW_PARSE(lhs, expr)                \
  do {                                     \
    auto r_ = (expr);                      \
    if (!r_.ok()) return Err(r_.status()); \
    (lhs) = std::move(*r_);                \
  } while (0)
#define UW_CHECK(expr)                                \
  do {                                                \
    if (Status s_ = (expr); !s_.ok()) return Err(s_); \
  } while (0)

}  // namespace

// ---------------------------------------------------------------------------------------------
// Lifecycle of the agent

Agent::Agent(AgentConfig config, std::unique_ptr<Hypervisor> vm, std::unique_ptr<Hypervisor> ct, KvmSupport kvm,
             Clock& clock)
    : config_(std::move(config)), service_(config_, std::move(vm), std::move(ct), std::move(kvm), clock) {
  BuildRoutes();
}

Agent::~Agent() { Stop(); }

Status Agent::Start(bool serve_http) {
  UW_RETURN_IF_ERROR(service_.Start());
  if (serve_http) {
    api::ServerOptions opts;
    opts.address = config_.listen_address;
    opts.port = config_.listen_port;
    opts.max_body_bytes = config_.max_body_bytes;
    server_ = std::make_unique<api::HttpServer>(opts, &router_);
    if (Status s = server_->Start(); !s.ok()) {
      Stop();
      return s;
    }
    spdlog::info("agent {} serving on {}:{}", config_.host_name, config_.listen_address, server_->port());
  }
  return Status::Ok();
}

void Agent::Stop() {
  // Wake long-polling /events handlers first: the server waits for in-flight handlers.
  service_.BeginStop();
  if (server_) server_->Stop();
  service_.Stop();
}

int Agent::port() const { return server_ ? server_->port() : 0; }

// ---------------------------------------------------------------------------------------------
// Routes

void Agent::BuildRoutes() {
  router_.SetAuthenticator([this](api::Request& req) -> Status {
    const std::string token = req.BearerToken();
    if (token.empty()) return UnauthenticatedError("missing bearer token (Authorization: Bearer ...)");
    // Constant-time comparison.
    unsigned diff = token.size() ^ config_.token.size();
    for (size_t i = 0; i < token.size(); ++i)
      diff |=
          static_cast<unsigned char>(token[i]) ^ static_cast<unsigned char>(config_.token[i % config_.token.size()]);
    if (diff != 0) return UnauthenticatedError("wrong bearer token");
    req.principal = "manager";
    return Status::Ok();
  });
  router_.AddPublic("GET", "/healthz", [this](const api::Request&) {
    return Ok({{"status", "ok"}, {"host", config_.host_name}});
  });
  router_.Add("GET", "/api/v1/host", [this](const api::Request&) { return HostInfoResponse(); });
  router_.Add("POST", "/api/v1/host/shutdown", [this](const api::Request&) { return ShutdownHost(); });
  router_.Add("GET", "/api/v1/guests", [this](const api::Request&) { return ListGuests(); });
  router_.Add("POST", "/api/v1/guests", [this](const api::Request& r) { return CreateGuest(r); });
  router_.Add("GET", "/api/v1/guests/{name}", [this](const api::Request& r) { return GetGuest(r); });
  router_.Add("DELETE", "/api/v1/guests/{name}", [this](const api::Request& r) { return DeleteGuest(r); });
  router_.Add("POST", "/api/v1/guests/{name}/start", [this](const api::Request& r) { return StartGuest(r); });
  router_.Add("POST", "/api/v1/guests/{name}/stop", [this](const api::Request& r) { return StopGuest(r); });
  router_.Add("POST", "/api/v1/guests/{name}/pause", [this](const api::Request& r) { return PauseGuest(r, true); });
  router_.Add("POST", "/api/v1/guests/{name}/resume", [this](const api::Request& r) { return PauseGuest(r, false); });
  router_.Add("POST", "/api/v1/guests/{name}/resize", [this](const api::Request& r) { return ResizeGuest(r); });
  router_.Add("POST", "/api/v1/guests/{name}/disks", [this](const api::Request& r) { return AttachDisk(r); });
  router_.Add("POST", "/api/v1/guests/{name}/disks/{target}/resize",
              [this](const api::Request& r) { return ResizeDisk(r); });
  router_.Add("DELETE", "/api/v1/guests/{name}/disks/{target}",
              [this](const api::Request& r) { return DetachDisk(r); });
  router_.Add("POST", "/api/v1/guests/{name}/exec", [this](const api::Request& r) { return ExecInGuest(r); });
  router_.Add("GET", "/api/v1/guests/{name}/console", [this](const api::Request& r) { return GuestConsole(r); });
  router_.Add("GET", "/api/v1/guests/{name}/stats", [this](const api::Request& r) { return Stats(r); });
  router_.Add("GET", "/api/v1/stats", [this](const api::Request& r) { return Stats(r); });
  router_.Add("GET", "/api/v1/events", [this](const api::Request& r) { return Events(r); });
  router_.Add("GET", "/api/v1/images/{ref}", [this](const api::Request& r) { return ImageState(r); });
  // An image arrives in pieces of up to 3 MiB (the manager's StorageService::kImageChunkBytes).
  router_.Add(
      "PUT", "/api/v1/images/{ref}", [this](const api::Request& r) { return PutImagePart(r); },
      api::RouteOptions{.max_body_bytes = 4 << 20, .json_body = false});
  // Cold moves: a stopped guest's local disk read in pieces, and carried to the destination.
  router_.Add("GET", "/api/v1/guests/{name}/disks/{target}/file",
              [this](const api::Request& r) { return ReadLocalDisk(r); });
  router_.Add(
      "PUT", "/api/v1/incoming/{name}/disks/{target}", [this](const api::Request& r) { return PutIncomingDisk(r); },
      api::RouteOptions{.max_body_bytes = AgentService::kDiskPieceMaxBytes, .json_body = false});
  router_.Add("POST", "/api/v1/migrations/prepare", [this](const api::Request& r) { return PrepareIncoming(r); });
  router_.Add("POST", "/api/v1/migrations/abandon", [this](const api::Request& r) { return AbandonIncoming(r); });
  router_.Add("POST", "/api/v1/guests/{name}/migrate", [this](const api::Request& r) { return MigrateGuest(r); });
  router_.Add("GET", "/api/v1/guests/{name}/migration", [this](const api::Request& r) { return MigrationStatus(r); });
  router_.Add("POST", "/api/v1/guests/{name}/migration/{action}",
              [this](const api::Request& r) { return ControlMigration(r); });
}

api::Response Agent::HostInfoResponse() {
  auto host = service_.Host();
  if (!host.ok()) return Err(host.status());
  return Ok(HostReportToJson(*host, config_));
}

api::Response Agent::ShutdownHost() {
  if (config_.shutdown_command.empty()) {
    return Err(UnimplementedError("this agent has no shutdown_command configured: it cannot power its host off"));
  }
  auto guests = service_.List();
  if (!guests.ok()) return Err(guests.status());
  std::vector<std::string> up;
  for (const auto& g : *guests) {
    if (g.info.state != GuestState::kShutoff)
      up.push_back(g.info.name + " (" + std::string(GuestStateName(g.info.state)) + ")");
  }
  if (!up.empty()) {
    std::string names;
    for (const auto& n : up) names += (names.empty() ? "" : ", ") + n;
    return Err(FailedPreconditionError("host " + config_.host_name + " still runs " + std::to_string(up.size()) +
                                       " guest(s): " + names + "; move or stop them before a shutdown"));
  }
  // The command starts once this answer is on its way: it stops this agent.
  std::thread([argv = config_.shutdown_command] {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSID);
    pid_t pid = -1;
    const int rc = posix_spawnp(&pid, args[0], nullptr, &attr, args.data(), environ);
    posix_spawnattr_destroy(&attr);
    if (rc != 0) {
      spdlog::error("host shutdown: cannot start {}: {}", argv[0], std::strerror(rc));
      return;
    }
    int status = 0;
    waitpid(pid, &status, 0);
    spdlog::info("host shutdown: {} exited with {}", argv[0], WIFEXITED(status) ? WEXITSTATUS(status) : -1);
  }).detach();
  spdlog::warn("host {}: shutting down on the manager's request ({})", config_.host_name, config_.shutdown_command[0]);
  return Ok({{"host", config_.host_name}, {"status", "shutting_down"}}, 202);
}

api::Response Agent::ListGuests() {
  auto guests = service_.List();
  if (!guests.ok()) return Err(guests.status());
  Json out = Json::array();
  for (const auto& g : *guests) out.push_back(GuestStatusToJson(g));
  return Ok({{"guests", out}});
}

api::Response Agent::CreateGuest(const api::Request& req) {
  Json body;
  UW_PARSE(body, req.JsonBody());
  CreateRequest create;
  UW_PARSE(create.spec, GuestSpecFromJson(body));
  if (body.contains("start")) {
    if (!body["start"].is_boolean()) return Err(InvalidArgumentError("spec.start: expected true or false"));
    create.start = body["start"].get<bool>();
  }
  if (body.contains("image") && !body["image"].is_null()) {
    if (!body["image"].is_string()) return Err(InvalidArgumentError("spec.image: expected a string"));
    create.image = body["image"].get<std::string>();
  }
  if (body.contains("disks_carried")) {
    if (!body["disks_carried"].is_boolean())
      return Err(InvalidArgumentError("spec.disks_carried: expected true or false"));
    create.disks_carried = body["disks_carried"].get<bool>();
  }
  auto guest = service_.Create(std::move(create));
  return guest.ok() ? Ok(GuestStatusToJson(*guest), 201) : Err(guest.status());
}

api::Response Agent::GetGuest(const api::Request& req) {
  auto guest = service_.Get(req.params.at("name"));
  return guest.ok() ? Ok(GuestDetailsToJson(*guest)) : Err(guest.status());
}

api::Response Agent::StartGuest(const api::Request& req) {
  auto guest = service_.Start(req.params.at("name"));
  return guest.ok() ? Ok(GuestStatusToJson(*guest)) : Err(guest.status());
}

api::Response Agent::StopGuest(const api::Request& req) {
  Json body;
  UW_PARSE(body, req.OptionalJsonBody());
  auto v = JsonView::Of(body, "body");
  if (!v.ok()) return Err(v.status());
  UW_CHECK(v->RejectUnknown({"force", "timeout_s"}));
  StopRequest stop;
  UW_PARSE(stop.force, v->Bool("force", false));
  int64_t timeout_s = 0;
  UW_PARSE(timeout_s, v->NonNegativeInt("timeout_s", config_.stop_timeout_s));
  if (timeout_s > 3600) return Err(v->FieldError("timeout_s", "expected at most 3600"));
  stop.timeout = std::chrono::seconds(timeout_s);
  auto r = service_.Stop(req.params.at("name"), stop);
  if (!r.ok()) return Err(r.status());
  Json j = GuestStatusToJson(r->guest);
  j["forced"] = r->forced;
  return Ok(j);
}

api::Response Agent::PauseGuest(const api::Request& req, bool pause) {
  const std::string& name = req.params.at("name");
  auto guest = pause ? service_.Pause(name) : service_.Resume(name);
  return guest.ok() ? Ok(GuestStatusToJson(*guest)) : Err(guest.status());
}

namespace {

// The "cpu" object of a resize body.
Status ParseCpuTune(const JsonView& c, ResizeRequest& r) {
  UW_RETURN_IF_ERROR(c.RejectUnknown({"shares", "quota_us", "period_us"}));
  if (c.Has("shares")) {
    UW_ASSIGN_OR_RETURN(int64_t x, c.PositiveInt("shares"));
    if (x < 2 || x > 262144) return c.FieldError("shares", "expected 2..262144");
    r.cpu_shares = x;
  }
  if (c.Has("quota_us")) {
    UW_ASSIGN_OR_RETURN(int64_t x, c.Int("quota_us"));
    if (x != -1 && x < 1000) return c.FieldError("quota_us", "expected -1 (unlimited) or at least 1000");
    r.cpu_quota_us = x;
  }
  if (c.Has("period_us")) {
    UW_ASSIGN_OR_RETURN(int64_t x, c.Int("period_us"));
    if (x < 1000 || x > 1000000) return c.FieldError("period_us", "expected 1000..1000000");
    r.cpu_period_us = x;
  }
  return Status::Ok();
}

Result<ResizeRequest> ParseResize(const Json& body) {
  UW_ASSIGN_OR_RETURN(JsonView v, JsonView::Of(body, "body"));
  UW_RETURN_IF_ERROR(v.RejectUnknown({"memory_mib", "vcpus", "cpu"}));
  ResizeRequest r;
  if (v.Has("memory_mib")) {
    UW_ASSIGN_OR_RETURN(r.memory_mib, v.PositiveInt("memory_mib"));
  }
  if (v.Has("vcpus")) {
    UW_ASSIGN_OR_RETURN(r.vcpus, v.PositiveInt("vcpus"));
  }
  if (v.Has("cpu")) {
    UW_ASSIGN_OR_RETURN(JsonView c, v.Object("cpu"));
    UW_RETURN_IF_ERROR(ParseCpuTune(c, r));
  }
  if (!r.memory_mib && !r.vcpus && !r.cpu_shares && !r.cpu_quota_us && !r.cpu_period_us) {
    return InvalidArgumentError("body: nothing to change (give memory_mib, vcpus or cpu)");
  }
  return r;
}

}  // namespace

api::Response Agent::ResizeGuest(const api::Request& req) {
  Json body;
  UW_PARSE(body, req.JsonBody());
  // Validate everything before changing anything.
  ResizeRequest resize;
  UW_PARSE(resize, ParseResize(body));
  auto guest = service_.Resize(req.params.at("name"), resize);
  return guest.ok() ? Ok(GuestStatusToJson(*guest)) : Err(guest.status());
}

api::Response Agent::DeleteGuest(const api::Request& req) {
  const std::string& name = req.params.at("name");
  const bool force = req.query.count("force") && (req.query.at("force") == "true" || req.query.at("force") == "1");
  UW_CHECK(service_.Delete(name, force));
  return Ok({{"deleted", name}});
}

api::Response Agent::AttachDisk(const api::Request& req) {
  Json body;
  UW_PARSE(body, req.JsonBody());
  DiskSpec disk;
  UW_PARSE(disk, DiskSpecFromJson(body, "body", ""));
  auto guest = service_.AttachDisk(req.params.at("name"), disk);
  return guest.ok() ? Ok(GuestDetailsToJson(*guest)) : Err(guest.status());
}

namespace {

Json ImageCopyJson(std::string_view ref, const ImageCopy& c) {
  return {{"image", ref}, {"bytes", c.bytes}, {"complete", c.complete}};
}

// Query parameter `name` as a non-negative integer.
Result<int64_t> QueryInt(const api::Request& req, const std::string& name) {
  auto it = req.query.find(name);
  if (it == req.query.end()) return InvalidArgumentError(name + ": missing");
  int64_t v = 0;
  const std::string& s = it->second;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || v < 0) {
    return InvalidArgumentError(name + ": expected a non-negative integer, got '" + s + "'");
  }
  return v;
}

}  // namespace

api::Response Agent::ImageState(const api::Request& req) {
  const std::string& ref = req.params.at("ref");
  auto c = service_.ImageState(ref);
  return c.ok() ? Ok(ImageCopyJson(ref, *c)) : Err(c.status());
}

api::Response Agent::PutImagePart(const api::Request& req) {
  const std::string& ref = req.params.at("ref");
  int64_t offset = 0, total = 0;
  UW_PARSE(offset, QueryInt(req, "offset"));
  UW_PARSE(total, QueryInt(req, "total"));
  auto c = service_.PutImagePart(ref, offset, total, req.body);
  return c.ok() ? Ok(ImageCopyJson(ref, *c)) : Err(c.status());
}

api::Response Agent::ReadLocalDisk(const api::Request& req) {
  int64_t offset = 0, length = 0;
  UW_PARSE(offset, QueryInt(req, "offset"));
  UW_PARSE(length, QueryInt(req, "length"));
  auto piece = service_.ReadLocalDisk(req.params.at("name"), req.params.at("target"), offset, length);
  if (!piece.ok()) return Err(piece.status());
  api::Response r;
  r.content_type = "application/octet-stream";
  r.headers["X-Uw-File-Bytes"] = std::to_string(piece->total_bytes);
  r.body = std::move(piece->bytes);
  return r;
}

api::Response Agent::PutIncomingDisk(const api::Request& req) {
  int64_t offset = 0, total = 0;
  UW_PARSE(offset, QueryInt(req, "offset"));
  UW_PARSE(total, QueryInt(req, "total"));
  auto c = service_.PutIncomingDisk(req.params.at("name"), req.params.at("target"), offset, total, req.body);
  if (!c.ok()) return Err(c.status());
  return Ok({{"guest", req.params.at("name")},
             {"target", req.params.at("target")},
             {"bytes", c->bytes},
             {"complete", c->complete}});
}

api::Response Agent::ResizeDisk(const api::Request& req) {
  Json body;
  UW_PARSE(body, req.JsonBody());
  auto v = JsonView::Of(body, "body");
  if (!v.ok()) return Err(v.status());
  UW_CHECK(v->RejectUnknown({"size_mib"}));
  int64_t size_mib = 0;
  UW_PARSE(size_mib, v->PositiveInt("size_mib"));
  if (size_mib > (int64_t{16} << 20)) return Err(v->FieldError("size_mib", "expected at most 16 TiB"));
  auto guest = service_.ResizeDisk(req.params.at("name"), req.params.at("target"), size_mib);
  return guest.ok() ? Ok(GuestDetailsToJson(*guest)) : Err(guest.status());
}

api::Response Agent::DetachDisk(const api::Request& req) {
  auto guest = service_.DetachDisk(req.params.at("name"), req.params.at("target"));
  return guest.ok() ? Ok(GuestDetailsToJson(*guest)) : Err(guest.status());
}

api::Response Agent::ExecInGuest(const api::Request& req) {
  Json body;
  UW_PARSE(body, req.JsonBody());
  auto v = JsonView::Of(body, "body");
  if (!v.ok()) return Err(v.status());
  UW_CHECK(v->RejectUnknown({"command", "argv", "timeout_s"}));
  int64_t timeout_s = 0;
  UW_PARSE(timeout_s, v->NonNegativeInt("timeout_s", 10));
  if (timeout_s < 1 || timeout_s > 300) return Err(v->FieldError("timeout_s", "expected 1..300"));
  ExecRequest exec;
  exec.timeout = std::chrono::seconds(timeout_s);
  if (v->Has("argv")) UW_PARSE(exec.argv, v->Strings("argv"));
  if (v->Has("command")) UW_PARSE(exec.command, v->String("command"));
  auto result = service_.Exec(req.params.at("name"), exec);
  if (!result.ok()) return Err(result.status());
  return Ok({{"exit_code", result->exit_code}, {"output", result->output}});
}

api::Response Agent::GuestConsole(const api::Request& req) {
  const std::string& name = req.params.at("name");
  size_t tail = kDefaultConsoleTail;
  if (auto it = req.query.find("tail_bytes"); it != req.query.end()) {
    try {
      tail = std::min<size_t>(std::stoull(it->second), kMaxConsoleTail);
    } catch (...) {
      // The guest is checked first, as the agent always did: an unknown guest is 404 whatever
      // the query says.
      if (auto none = service_.ConsoleTail(name, 0); !none.ok()) return Err(none.status());
      return Err(InvalidArgumentError("tail_bytes: expected a number, got '" + it->second + "'"));
    }
  }
  auto text = service_.ConsoleTail(name, tail);
  if (!text.ok()) return Err(text.status());
  api::Response r;
  r.status = 200;
  r.content_type = "text/plain; charset=utf-8";
  r.body = std::move(*text);
  return r;
}

api::Response Agent::Stats(const api::Request& req) {
  if (req.query.count("fresh") && req.query.at("fresh") != "0") UW_CHECK(service_.SampleNow());
  if (auto it = req.params.find("name"); it != req.params.end()) {
    auto u = service_.GuestUsageOf(it->second);
    return u.ok() ? Ok(GuestUsageToJson(*u)) : Err(u.status());
  }
  const UsageReport usage = service_.Usage();
  Json guests = Json::array();
  for (const auto& u : usage.guests) guests.push_back(GuestUsageToJson(u));
  Json host = HostInfoToJson(usage.host);
  host["name"] = config_.host_name;
  return Ok({{"sampled_at", FormatRfc3339(usage.sampled_at)}, {"host", host}, {"guests", guests}});
}

api::Response Agent::Events(const api::Request& req) {
  uint64_t since = 0;
  int64_t wait_ms = 0;
  try {
    if (auto it = req.query.find("since"); it != req.query.end()) since = std::stoull(it->second);
    if (auto it = req.query.find("wait_ms"); it != req.query.end()) wait_ms = std::stoll(it->second);
  } catch (...) {
    return Err(InvalidArgumentError("since and wait_ms must be non-negative integers"));
  }
  wait_ms = std::clamp<int64_t>(wait_ms, 0, kMaxEventWaitMs);
  const EventPage page = service_.EventsSince(since, std::chrono::milliseconds(wait_ms));
  Json out = Json::array();
  for (const auto& e : page.events) out.push_back(EventToJson(e));
  return Ok({{"events", out}, {"next", page.next}});
}

// ---------------------------------------------------------------------------------------------
// Live migration

namespace {

// Body {"guest", "kind", "memory_mib", "vcpus", "disks": [{"file", "format",
// "virtual_size_bytes"}], "nics": [port NICs as a guest spec has them]}.
Result<IncomingRequest> ParseIncoming(const Json& body) {
  UW_ASSIGN_OR_RETURN(JsonView v, JsonView::Of(body, "body"));
  UW_RETURN_IF_ERROR(v.RejectUnknown({"guest", "kind", "memory_mib", "vcpus", "disks", "nics"}));
  IncomingRequest r;
  UW_ASSIGN_OR_RETURN(r.guest, v.String("guest"));
  UW_RETURN_IF_ERROR(ValidateGuestName(r.guest, "body.guest"));
  UW_ASSIGN_OR_RETURN(std::string kind_name, v.String("kind", "qemu"));
  auto kind = ParseGuestKind(kind_name);
  if (!kind.ok()) return v.FieldError("kind", kind.status().message());
  if (*kind == GuestKind::kLxc) return v.FieldError("kind", "containers do not live-migrate (move them cold)");
  r.kind = *kind;
  UW_ASSIGN_OR_RETURN(r.memory_mib, v.PositiveInt("memory_mib"));
  UW_ASSIGN_OR_RETURN(r.vcpus, v.Int("vcpus", 1));
  if (v.Has("nics")) {
    // The guest spec's own parser: the same checks as at create, the same field names.
    UW_ASSIGN_OR_RETURN(GuestSpec nics, GuestSpecFromJson({{"name", r.guest}, {"nics", body["nics"]}}, "body"));
    for (NicSpec& n : nics.nics) {
      if (n.type != "port") return v.FieldError("nics", "only port NICs are prepared (a bridge is the host's)");
      r.nics.push_back(std::move(n));
    }
  }
  if (!v.Has("disks")) return r;
  UW_ASSIGN_OR_RETURN(auto list, v.Objects("disks"));
  for (const auto& d : list) {
    IncomingDisk disk;
    UW_ASSIGN_OR_RETURN(disk.file, d.String("file"));
    if (disk.file.empty() || disk.file.find('/') != std::string::npos || disk.file == "." || disk.file == "..") {
      return d.FieldError("file", "expected a plain file name");
    }
    UW_ASSIGN_OR_RETURN(disk.format, d.String("format", "qcow2"));
    if (disk.format != "qcow2" && disk.format != "raw") return d.FieldError("format", "expected qcow2 or raw");
    UW_ASSIGN_OR_RETURN(disk.virtual_size_bytes, d.PositiveInt("virtual_size_bytes"));
    r.disks.push_back(std::move(disk));
  }
  return r;
}

// Body {"destination": {"host", "migration_uri", "state_dir"}, "bandwidth_mib_s",
// "downtime_limit_ms", "auto_converge", "postcopy"}.
Result<MigrateRequest> ParseMigrate(const Json& body) {
  UW_ASSIGN_OR_RETURN(JsonView v, JsonView::Of(body, "body"));
  UW_RETURN_IF_ERROR(
      v.RejectUnknown({"destination", "bandwidth_mib_s", "downtime_limit_ms", "auto_converge", "postcopy"}));
  UW_ASSIGN_OR_RETURN(JsonView dest, v.Object("destination"));
  UW_RETURN_IF_ERROR(dest.RejectUnknown({"host", "migration_uri", "state_dir"}));
  MigrateRequest r;
  UW_ASSIGN_OR_RETURN(r.dest_host, dest.String("host", ""));
  UW_ASSIGN_OR_RETURN(r.dest_uri, dest.String("migration_uri"));
  UW_ASSIGN_OR_RETURN(r.dest_state_dir, dest.String("state_dir"));
  if (r.dest_uri.find("://") == std::string::npos) return dest.FieldError("migration_uri", "expected a libvirt URI");
  if (r.dest_state_dir.empty() || r.dest_state_dir[0] != '/') {
    return dest.FieldError("state_dir", "expected an absolute path");
  }
  UW_ASSIGN_OR_RETURN(r.bandwidth_mib_s, v.Number("bandwidth_mib_s", 0));
  UW_ASSIGN_OR_RETURN(r.downtime_limit_ms, v.NonNegativeInt("downtime_limit_ms", 0));
  UW_ASSIGN_OR_RETURN(r.auto_converge, v.Bool("auto_converge", false));
  UW_ASSIGN_OR_RETURN(r.postcopy, v.Bool("postcopy", false));
  if (r.bandwidth_mib_s < 0) return v.FieldError("bandwidth_mib_s", "expected a number >= 0");
  return r;
}

}  // namespace

// POST /api/v1/migrations/prepare (destination): room for the guest, its directories and empty
// local volumes. Returns where the source should send it.
api::Response Agent::PrepareIncoming(const api::Request& req) {
  Json body;
  UW_PARSE(body, req.JsonBody());
  IncomingRequest incoming;
  UW_PARSE(incoming, ParseIncoming(body));
  auto prepared = service_.PrepareIncoming(incoming);
  if (!prepared.ok()) return Err(prepared.status());
  Json disks = Json::array();
  for (const auto& [file, path] : prepared->disks) disks.push_back({{"file", file}, {"path", path}});
  return Ok({{"host", prepared->host},
             {"migration_uri", prepared->migration_uri},
             {"state_dir", prepared->state_dir},
             {"disks", disks}});
}

// POST /api/v1/migrations/abandon (destination): removes what an incoming migration of `guest`
// left here.
api::Response Agent::AbandonIncoming(const api::Request& req) {
  Json body;
  UW_PARSE(body, req.JsonBody());
  auto v = JsonView::Of(body, "body");
  if (!v.ok()) return Err(v.status());
  UW_CHECK(v->RejectUnknown({"guest"}));
  std::string guest;
  UW_PARSE(guest, v->String("guest"));
  bool removed = false;
  UW_PARSE(removed, service_.AbandonIncoming(guest));
  return Ok({{"guest", guest}, {"removed", removed}});
}

// POST /api/v1/guests/{name}/migrate (source): starts a peer-to-peer live migration to the
// destination a prepare call returned. 202.
api::Response Agent::MigrateGuest(const api::Request& req) {
  const std::string& name = req.params.at("name");
  Json body;
  UW_PARSE(body, req.JsonBody());
  MigrateRequest migrate;
  UW_PARSE(migrate, ParseMigrate(body));
  auto started = service_.Migrate(name, migrate);
  if (!started.ok()) return Err(started.status());
  return Ok({{"guest", name},
             {"state", "running"},
             {"destination", started->destination},
             {"copy_storage", started->copy_storage}},
            202);
}

// GET /api/v1/guests/{name}/migration: this agent's view of the guest's outgoing migration.
api::Response Agent::MigrationStatus(const api::Request& req) {
  const std::string& name = req.params.at("name");
  return Ok(MigrationReportToJson(service_.MigrationStatus(name), name, config_.host_name));
}

// POST /api/v1/guests/{name}/migration/{cancel|bandwidth|postcopy}.
api::Response Agent::ControlMigration(const api::Request& req) {
  const std::string& name = req.params.at("name");
  const std::string& action = req.params.at("action");
  // The guest first, then the action and its body, as the agent always answered.
  UW_CHECK(service_.CheckExists(name));
  MigrationAction a = MigrationAction::kCancel;
  double bandwidth = 0;
  if (action == "cancel") {
    a = MigrationAction::kCancel;
  } else if (action == "bandwidth") {
    a = MigrationAction::kBandwidth;
    Json body;
    UW_PARSE(body, req.JsonBody());
    auto v = JsonView::Of(body, "body");
    if (!v.ok()) return Err(v.status());
    UW_PARSE(bandwidth, v->Number("bandwidth_mib_s"));
  } else if (action == "postcopy") {
    a = MigrationAction::kPostcopy;
  } else {
    return Err(NotFoundError("no migration action '" + action + "' (expected cancel, bandwidth or postcopy)"));
  }
  UW_CHECK(service_.ControlMigration(name, a, bandwidth));
  return Ok({{"guest", name}, {"action", action}, {"ok", true}});
}

}  // namespace uw::vmm
