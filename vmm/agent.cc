#include "vmm/agent.h"

#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <cstring>
#include <fstream>
#include <future>
#include <sstream>

#include <spdlog/spdlog.h>

#include "common/id.h"

namespace uw::vmm {
namespace {

namespace fs = std::filesystem;
constexpr size_t kEventLogSize = 4096;
constexpr const char* kGuestChannel = "org.underware.guest.0";

api::Response Ok(const Json& body, int status = 200) { return api::Response::Json(status, body); }
api::Response Err(const Status& s) { return api::Response::Error(s); }

// The body as an object; an empty body is an empty object (for optional bodies).
Result<Json> OptionalBody(const api::Request& req) {
  if (req.body.find_first_not_of(" \t\r\n") == std::string::npos) return Json::object();
  return req.JsonBody();
}

bool FileExists(const std::string& p) {
  std::error_code ec;
  return fs::exists(p, ec);
}

Json EventToJson(const AgentEvent& e) {
  return {{"seq", e.seq},
          {"at", FormatRfc3339(e.event.at)},
          {"guest", e.event.guest},
          {"uuid", e.event.uuid},
          {"event", e.event.event},
          {"detail", e.event.detail},
          {"source", e.event.source}};
}

// Runs a tool (qemu-img) and returns its output; kInternal with the output when it fails.
Result<std::string> RunTool(const std::vector<std::string>& argv) {
  int fds[2];
  if (pipe(fds) < 0) return InternalError(std::string("pipe: ") + std::strerror(errno));
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
  posix_spawn_file_actions_adddup2(&fa, fds[1], 2);
  posix_spawn_file_actions_addclose(&fa, fds[0]);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = 0;
  int rc = posix_spawnp(&pid, args[0], &fa, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  close(fds[1]);
  if (rc != 0) {
    close(fds[0]);
    return InternalError("running " + argv[0] + ": " + std::strerror(rc));
  }
  std::string out;
  char buf[4096];
  for (ssize_t n; (n = read(fds[0], buf, sizeof buf)) > 0;) out.append(buf, static_cast<size_t>(n));
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
    return InternalError(argv[0] + " " + (argv.size() > 1 ? argv[1] : "") + " failed: " + out);
  }
  return out;
}

// The last `bytes` bytes of a file ("" when it cannot be read).
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

int64_t UnixMillis(TimePoint t) { return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count(); }

HealthOptions HealthOptionsFor(const AgentConfig& c) {
  HealthOptions o;
  o.interval = std::chrono::seconds(c.monitor_interval_s);
  o.timeout = std::chrono::seconds(c.monitor_timeout_s);
  return o;
}

constexpr size_t kCrashConsoleTail = 2048;
constexpr size_t kCrashConsoleReach = 8192;
constexpr const char* kHealthSource = "agent";

// Replaces every occurrence of `from` in `text` with `to`.
std::string ReplaceAll(std::string text, const std::string& from, const std::string& to) {
  if (from.empty()) return text;
  for (size_t pos = 0; (pos = text.find(from, pos)) != std::string::npos; pos += to.size()) {
    text.replace(pos, from.size(), to);
  }
  return text;
}

}  // namespace

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

// ---------------------------------------------------------------------------------------------
// Config

Result<AgentConfig> AgentConfigFromJson(const Json& j, std::string_view where) {
  auto root = JsonView::Of(j, "");
  if (!root.ok()) return root.status().WithContext(where);
  const JsonView& v = *root;
  auto fail = [&](const Status& s) { return s.WithContext(where); };
  if (Status s = v.RejectUnknown({"host_name", "listen", "token", "libvirt_uri", "lxc_uri", "state_dir", "images",
                                  "guest_assets", "allow_emulated_kvm", "log_level", "log_file",
                                  "sample_interval_ms", "stop_timeout_s", "max_body_bytes", "sys_root", "manager_url",
                                  "join_token", "heartbeat_interval_ms", "advertise_url", "migration_uri", "monitor"});
      !s.ok()) {
    return fail(s);
  }
  AgentConfig c;
#define UW_CFG(lhs, expr)          \
  do {                             \
    auto r_ = (expr);              \
    if (!r_.ok()) return fail(r_.status()); \
    lhs = std::move(*r_);          \
  } while (0)
  UW_CFG(c.host_name, v.String("host_name"));
  if (Status s = ValidateName(c.host_name, "host_name"); !s.ok()) return fail(s);
  if (v.Has("listen")) {
    auto l = v.Object("listen");
    if (!l.ok()) return fail(l.status());
    UW_CFG(c.listen_address, l->String("address", c.listen_address));
    int64_t port = 0;
    UW_CFG(port, l->Int("port", c.listen_port));
    if (port < 0 || port > 65535) return fail(l->FieldError("port", "expected 0..65535"));
    c.listen_port = static_cast<int>(port);
  }
  UW_CFG(c.token, v.String("token"));
  if (c.token.size() < 16) return fail(v.FieldError("token", "must be at least 16 characters"));
  UW_CFG(c.libvirt_uri, v.String("libvirt_uri", c.libvirt_uri));
  UW_CFG(c.lxc_uri, v.String("lxc_uri", ""));
  UW_CFG(c.state_dir, v.String("state_dir", c.state_dir));
  if (v.Has("guest_assets")) {
    std::string dir;
    UW_CFG(dir, v.String("guest_assets"));
    c.images["tiny"] = dir;
  }
  if (v.Has("images")) {
    auto imgs = v.Object("images");
    if (!imgs.ok()) return fail(imgs.status());
    for (auto it = imgs->json().begin(); it != imgs->json().end(); ++it) {
      if (!it->is_string()) return fail(imgs->FieldError(it.key(), "expected a directory path"));
      c.images[it.key()] = it->get<std::string>();
    }
  }
  UW_CFG(c.allow_emulated_kvm, v.Bool("allow_emulated_kvm", false));
  UW_CFG(c.log_level, v.String("log_level", c.log_level));
  UW_CFG(c.log_file, v.String("log_file", ""));
  int64_t n = 0;
  UW_CFG(n, v.Int("sample_interval_ms", c.sample_interval_ms));
  if (n < 100 || n > 3'600'000) return fail(v.FieldError("sample_interval_ms", "expected 100..3600000"));
  c.sample_interval_ms = static_cast<int>(n);
  UW_CFG(n, v.Int("stop_timeout_s", c.stop_timeout_s));
  if (n < 0 || n > 3600) return fail(v.FieldError("stop_timeout_s", "expected 0..3600"));
  c.stop_timeout_s = static_cast<int>(n);
  UW_CFG(n, v.Int("max_body_bytes", static_cast<int64_t>(c.max_body_bytes)));
  if (n < 1024) return fail(v.FieldError("max_body_bytes", "expected at least 1024"));
  c.max_body_bytes = static_cast<size_t>(n);
  UW_CFG(c.sys_root, v.String("sys_root", c.sys_root));
  UW_CFG(c.manager_url, v.String("manager_url", ""));
  UW_CFG(c.join_token, v.String("join_token", ""));
  UW_CFG(c.advertise_url, v.String("advertise_url", ""));
  UW_CFG(c.migration_uri, v.String("migration_uri", "qemu+tcp://" + c.listen_address + "/system"));
  if (!c.manager_url.empty() && c.join_token.empty()) {
    return fail(v.FieldError("join_token", "required with manager_url (the join_token of the manager's config)"));
  }
  UW_CFG(n, v.Int("heartbeat_interval_ms", c.heartbeat_interval_ms));
  if (n < 50 || n > 600'000) return fail(v.FieldError("heartbeat_interval_ms", "expected 50..600000"));
  c.heartbeat_interval_ms = static_cast<int>(n);
  if (v.Has("monitor")) {
    auto m = v.Object("monitor");
    if (!m.ok()) return fail(m.status());
    if (Status s = m->RejectUnknown({"timeout_s", "interval_s"}); !s.ok()) return fail(s);
    UW_CFG(n, m->Int("timeout_s", c.monitor_timeout_s));
    if (n < 2 || n > 3600) return fail(m->FieldError("timeout_s", "expected 2..3600"));
    c.monitor_timeout_s = static_cast<int>(n);
    UW_CFG(n, m->Int("interval_s", c.monitor_interval_s));
    if (n < 1 || n > 3600) return fail(m->FieldError("interval_s", "expected 1..3600"));
    c.monitor_interval_s = static_cast<int>(n);
  }
#undef UW_CFG
  return c;
}

Result<AgentConfig> LoadAgentConfig(const std::string& path) {
  UW_ASSIGN_OR_RETURN(Json j, LoadJsonFile(path));
  return AgentConfigFromJson(j, path);
}

// ---------------------------------------------------------------------------------------------
// Lifecycle of the agent

Agent::Agent(AgentConfig config, std::unique_ptr<Hypervisor> vm, std::unique_ptr<Hypervisor> ct, KvmSupport kvm,
             Clock& clock)
    : config_(std::move(config)),
      vm_(std::move(vm)),
      ct_(std::move(ct)),
      kvm_(std::move(kvm)),
      clock_(clock),
      health_(HealthOptionsFor(config_)) {
  BuildRoutes();
}

Agent::~Agent() { Stop(); }

Status Agent::Start(bool serve_http) {
  for (const char* sub : {"channels", "console", "disks"}) {
    std::error_code ec;
    fs::create_directories(fs::path(config_.state_dir) / sub, ec);
    if (ec) return UnavailableError("cannot create " + (fs::path(config_.state_dir) / sub).string() + ": " + ec.message());
  }
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
      spdlog::info("adopted guest {} ({}, {}) from {}", g.name, GuestKindName(g.kind), GuestStateName(g.state), h->uri());
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
      l.lock();
      stop_cv_.wait_for(l, std::chrono::milliseconds(config_.sample_interval_ms), [this] { return stopping_; });
    }
  });
  monitor_ = std::thread([this] { MonitorLoop(); });
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
  {
    std::lock_guard l(stop_mu_);
    stopping_ = true;
  }
  // Wake long-polling /events handlers first: the server waits for in-flight handlers.
  {
    std::lock_guard l(events_mu_);
  }
  events_cv_.notify_all();
  stop_cv_.notify_all();
  {
    std::lock_guard l(health_mu_);
  }
  health_cv_.notify_all();
  if (server_) server_->Stop();
  if (sampler_.joinable()) sampler_.join();
  if (monitor_.joinable()) monitor_.join();
  // Migrations in flight finish in libvirtd (peer-to-peer) whether or not we wait; we wait so
  // that their threads never outlive the agent.
  std::map<std::string, std::unique_ptr<Outgoing>> migrations;
  {
    std::lock_guard l(migrations_mu_);
    migrations.swap(migrations_);
  }
  for (auto& [name, m] : migrations) {
    if (m->thread.joinable()) m->thread.join();
  }
}

int Agent::port() const { return server_ ? server_->port() : 0; }

void Agent::RecordEvent(LifecycleEvent e) {
  if (e.event == "crashed") NoteCrash(e.guest, e.uuid, e.id, true);
  AppendEvent(std::move(e));
}

void Agent::AppendEvent(LifecycleEvent e) {
  {
    std::lock_guard l(events_mu_);
    events_.push_back({next_seq_++, std::move(e)});
    while (events_.size() > kEventLogSize) events_.pop_front();
  }
  events_cv_.notify_all();
}

Status Agent::SampleNow() {
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

// ---------------------------------------------------------------------------------------------
// Helpers

Hypervisor* Agent::HypervisorFor(GuestKind kind) { return kind == GuestKind::kLxc ? ct_.get() : vm_.get(); }

Result<Hypervisor*> Agent::Find(std::string_view name) {
  UW_RETURN_IF_ERROR(ValidateGuestName(name, "guest name"));
  for (Hypervisor* h : {vm_.get(), ct_.get()}) {
    if (!h) continue;
    auto g = h->Get(name);
    if (g.ok()) return h;
    if (g.status().code() != StatusCode::kNotFound) return g.status();
  }
  return NotFoundError("guest '" + std::string(name) + "' does not exist on host " + config_.host_name);
}

std::shared_ptr<GuestChannel> Agent::ChannelFor(const std::string& socket_path) {
  std::lock_guard l(channels_mu_);
  auto& c = channels_[socket_path];
  if (!c) c = std::make_shared<GuestChannel>(socket_path, clock_);
  return c;
}

// ---------------------------------------------------------------------------------------------
// Health watch and crashes

namespace {
std::string ControlChannelOf(const GuestInfo& info) {
  if (info.kind == GuestKind::kLxc) return "";
  for (const auto& c : info.channels) {
    if (c.name == kGuestChannel) return c.socket_path;
  }
  return "";
}
}  // namespace

void Agent::ObserveGuest(const GuestInfo& info) {
  std::lock_guard l(health_mu_);
  health_.Observe(info.name, info.id, info.state == GuestState::kRunning, ControlChannelOf(info), clock_.Monotonic(),
                  clock_.Now());
}

void Agent::ObserveSample(const std::vector<GuestCounters>& vms, const std::vector<GuestCounters>& cts) {
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

void Agent::NoteCrash(const std::string& name, const std::string& uuid, int64_t id, bool event_seen) {
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

void Agent::RecordHealthEvents(const std::vector<HealthEvent>& events) {
  for (const auto& e : events) {
    spdlog::info("guest {} {}: {}", e.guest, e.event, e.detail);
    AppendEvent({clock_.Now(), e.guest, "", e.event, e.detail, kHealthSource});
  }
}

void Agent::MonitorLoop() {
  struct Pending {
    DuePing ping;
    std::future<bool> answered;
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
      const bool answered = it->answered.get();
      std::vector<HealthEvent> events;
      {
        std::lock_guard h(health_mu_);
        events = health_.Report(it->ping.guest, it->ping.instance, answered, clock_.Monotonic(), clock_.Now());
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
                           return channel->CallIfIdle("ping", timeout).ok();
                         })});
    }
    l.lock();
    stop_cv_.wait_for(l, std::chrono::milliseconds(200), [this] { return stopping_; });
  }
  l.unlock();
  for (auto& p : pending) p.answered.wait();
}

Status Agent::WaitUntilReady(const std::string& name, Duration deadline) {
  std::unique_lock l(health_mu_);
  while (true) {
    auto v = health_.View(name);
    if (!v || v->health != Health::kStarting) return Status::Ok();
    const Duration now = clock_.Monotonic();
    if (now >= deadline) {
      const auto waited = std::chrono::duration_cast<std::chrono::seconds>(now - v->started_mono).count();
      return FailedPreconditionError("guest " + name + " is not ready yet (its control channel has not answered since it started " +
                                     std::to_string(waited) + " s ago)");
    }
    {
      std::lock_guard s(stop_mu_);
      if (stopping_) return UnavailableError("the agent is stopping");
    }
    health_cv_.wait_for(l, std::chrono::milliseconds(100));
  }
}

Json Agent::GuestJson(Hypervisor* h, const GuestInfo& info) {
  Json j = GuestInfoToJson(info);
  const bool running = info.state == GuestState::kRunning;
  if (info.kind == GuestKind::kLxc) {
    // No control channel: a container is ready once its configured init runs.
    j["health"] = HealthName(Health::kNone);
    bool ready = false;
    if (running) {
      auto r = h->ContainerInitRunning(info.name);
      ready = r.ok() && *r;
    }
    j["ready"] = ready;
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
    j["health"] = HealthName(v ? v->health : Health::kNone);
    j["ready"] = v && v->ready;
    if (v) j["health_since"] = UnixMillis(v->since);
    if (v && v->unresponsive_since) j["unresponsive_since"] = UnixMillis(*v->unresponsive_since);
  }
  if (info.state == GuestState::kCrashed) {
    NoteCrash(info.name, info.uuid, info.id, false);  // no-op when already recorded
    TimePoint at;
    {
      std::lock_guard l(health_mu_);
      at = crashes_[info.name].at;
    }
    j["crash"] = {{"at", UnixMillis(at)},
                  {"console_tail",
                   info.console_log.empty() ? "" : CrashConsoleTail(ReadTail(info.console_log, kCrashConsoleReach))}};
  }
  return j;
}

Status Agent::ResolveImageAndChecks(GuestSpec& spec, const Json& body) {
  if (body.contains("image") && !body["image"].is_null()) {
    if (!body["image"].is_string()) return InvalidArgumentError("spec.image: expected a string");
    std::string image = body["image"].get<std::string>();
    auto it = config_.images.find(image);
    if (it == config_.images.end()) {
      std::string have;
      for (const auto& [k, v] : config_.images) have += (have.empty() ? "" : ", ") + k;
      return InvalidArgumentError("spec.image: no image '" + image + "' on host " + config_.host_name +
                                  " (available: " + (have.empty() ? "none" : have) + ")");
    }
    const fs::path dir = it->second;
    if (spec.kind == GuestKind::kLxc) {
      if (spec.lxc_root.empty()) spec.lxc_root = (dir / "lxc-rootfs").string();
      if (spec.lxc_init == "/bin/sh" && spec.lxc_init_args.empty()) {
        // The image's own init when it has one (prints the ready marker and idles), else a shell
        // that idles.
        if (FileExists(spec.lxc_root + "/sbin/uw-container-init")) {
          spec.lxc_init = "/sbin/uw-container-init";
        } else {
          spec.lxc_init_args = {"-c", "while :; do sleep 3600; done"};
        }
      }
    } else if (spec.kernel.empty()) {
      spec.kernel = FileExists((dir / "vmlinux").string()) ? (dir / "vmlinux").string() : (dir / "vmlinuz").string();
      if (spec.initrd.empty() && FileExists((dir / "initrd.img").string())) spec.initrd = (dir / "initrd.img").string();
      // panic=0: a panicked kernel waits (after telling QEMU through pvpanic) instead of rebooting,
      // so the crash is seen and the console kept.
      if (spec.cmdline.empty()) spec.cmdline = "console=ttyS0 quiet panic=0";
    }
  }
  if (spec.kind == GuestKind::kKvm && !kvm_.usable) {
    if (!config_.allow_emulated_kvm) {
      return FailedPreconditionError("host " + config_.host_name + " cannot run kind kvm: " + kvm_.reason +
                                     " (or set allow_emulated_kvm in the agent config)");
    }
    spec.emulated = true;
  }
  if (spec.kind == GuestKind::kLxc && !ct_) {
    return FailedPreconditionError("host " + config_.host_name + " has no container driver (lxc_uri is not set)");
  }
  if (!spec.kernel.empty() && !FileExists(spec.kernel)) return InvalidArgumentError("spec.boot.kernel: " + spec.kernel + ": no such file");
  if (!spec.initrd.empty() && !FileExists(spec.initrd)) return InvalidArgumentError("spec.boot.initrd: " + spec.initrd + ": no such file");
  for (size_t i = 0; i < spec.disks.size(); ++i) {
    if (spec.disks[i].path.empty()) continue;  // a local disk the agent makes (CreateLocalDisks)
    if (!FileExists(spec.disks[i].path)) {
      return InvalidArgumentError("spec.disks[" + std::to_string(i) + "].path: " + spec.disks[i].path + ": no such file");
    }
  }
  if (spec.kind == GuestKind::kLxc && !spec.lxc_root.empty() && !fs::is_directory(spec.lxc_root)) {
    return InvalidArgumentError("spec.lxc.root: " + spec.lxc_root + ": no such directory");
  }
  UW_RETURN_IF_ERROR(ValidateGuestSpec(spec));
  UW_ASSIGN_OR_RETURN(HostInfo host, vm_->Host());
  if (spec.max_memory_mib > host.memory_mib) {
    return ResourceExhaustedError("guest '" + spec.name + "' asks for " + std::to_string(spec.max_memory_mib) +
                                  " MiB but host " + config_.host_name + " has " + std::to_string(host.memory_mib) +
                                  " MiB in all");
  }
  if (spec.max_vcpus > host.cpu_cores) {
    return ResourceExhaustedError("guest '" + spec.name + "' asks for " + std::to_string(spec.max_vcpus) +
                                  " vCPUs but host " + config_.host_name + " has " + std::to_string(host.cpu_cores) +
                                  " CPUs");
  }
  if (spec.kind != GuestKind::kLxc) {
    spec.console_log = (fs::path(config_.state_dir) / "console" / (spec.name + ".log")).string();
    std::string sock = (fs::path(config_.state_dir) / "channels" / (spec.name + ".sock")).string();
    if (sock.size() >= 107) return InvalidArgumentError("state_dir is too long for a channel socket path: " + sock);
    spec.channels = {{kGuestChannel, sock}};
  }
  return Status::Ok();
}

// ---------------------------------------------------------------------------------------------
// Handlers

void Agent::BuildRoutes() {
  router_.SetAuthenticator([this](api::Request& req) -> Status {
    const std::string token = req.BearerToken();
    if (token.empty()) return UnauthenticatedError("missing bearer token (Authorization: Bearer ...)");
    // Constant-time comparison.
    unsigned diff = token.size() ^ config_.token.size();
    for (size_t i = 0; i < token.size(); ++i) diff |= static_cast<unsigned char>(token[i]) ^
                                                   static_cast<unsigned char>(config_.token[i % config_.token.size()]);
    if (diff != 0) return UnauthenticatedError("wrong bearer token");
    req.principal = "manager";
    return Status::Ok();
  });
  router_.AddPublic("GET", "/healthz", [this](const api::Request&) {
    return Ok({{"status", "ok"}, {"host", config_.host_name}});
  });
  router_.Add("GET", "/api/v1/host", [this](const api::Request&) { return HostInfoResponse(); });
  router_.Add("GET", "/api/v1/guests", [this](const api::Request&) { return ListGuests(); });
  router_.Add("POST", "/api/v1/guests", [this](const api::Request& r) { return CreateGuest(r); });
  router_.Add("GET", "/api/v1/guests/{name}", [this](const api::Request& r) { return GetGuest(r); });
  router_.Add("DELETE", "/api/v1/guests/{name}", [this](const api::Request& r) { return DeleteGuest(r); });
  router_.Add("POST", "/api/v1/guests/{name}/start", [this](const api::Request& r) { return StartGuest(r); });
  router_.Add("POST", "/api/v1/guests/{name}/stop", [this](const api::Request& r) { return StopGuest(r); });
  router_.Add("POST", "/api/v1/guests/{name}/pause", [this](const api::Request& r) { return PauseGuest(r, true); });
  router_.Add("POST", "/api/v1/guests/{name}/resume", [this](const api::Request& r) { return PauseGuest(r, false); });
  router_.Add("POST", "/api/v1/guests/{name}/resize", [this](const api::Request& r) { return ResizeGuest(r); });
  router_.Add("POST", "/api/v1/guests/{name}/exec", [this](const api::Request& r) { return ExecInGuest(r); });
  router_.Add("GET", "/api/v1/guests/{name}/console", [this](const api::Request& r) { return GuestConsole(r); });
  router_.Add("GET", "/api/v1/guests/{name}/stats", [this](const api::Request& r) { return Stats(r); });
  router_.Add("GET", "/api/v1/stats", [this](const api::Request& r) { return Stats(r); });
  router_.Add("GET", "/api/v1/events", [this](const api::Request& r) { return Events(r); });
  router_.Add("POST", "/api/v1/migrations/prepare", [this](const api::Request& r) { return PrepareIncoming(r); });
  router_.Add("POST", "/api/v1/migrations/abandon", [this](const api::Request& r) { return AbandonIncoming(r); });
  router_.Add("POST", "/api/v1/guests/{name}/migrate", [this](const api::Request& r) { return MigrateGuest(r); });
  router_.Add("GET", "/api/v1/guests/{name}/migration", [this](const api::Request& r) { return MigrationStatus(r); });
  router_.Add("POST", "/api/v1/guests/{name}/migration/{action}",
              [this](const api::Request& r) { return ControlMigration(r); });
}

api::Response Agent::HostInfoResponse() {
  auto host = vm_->Host();
  if (!host.ok()) return Err(host.status());
  Json j = HostInfoToJson(*host);
  j["name"] = config_.host_name;
  j["kvm"] = {{"device_present", kvm_.device_present}, {"usable", kvm_.usable}, {"module", kvm_.module},
              {"reason", kvm_.reason}};
  j["allow_emulated_kvm"] = config_.allow_emulated_kvm;
  j["cgroups"] = CgroupLayoutToJson(cgroups_);
  j["monitor"] = {{"interval_s", config_.monitor_interval_s}, {"timeout_s", config_.monitor_timeout_s}};
  Json kinds = Json::array({"qemu"});
  if (kvm_.usable || config_.allow_emulated_kvm) kinds.push_back("kvm");
  if (ct_) kinds.push_back("lxc");
  j["kinds"] = kinds;
  j["images"] = Json::array();
  for (const auto& [k, v] : config_.images) j["images"].push_back(k);
  j["adopted"] = adopted_;
  {
    std::lock_guard l(usage_mu_);
    j["cpu_busy_fraction"] = host_usage_.cpu_busy_fraction;
    j["guests"] = usage_.size();
  }
  return Ok(j);
}

api::Response Agent::ListGuests() {
  Json out = Json::array();
  for (Hypervisor* h : {vm_.get(), ct_.get()}) {
    if (!h) continue;
    auto guests = h->List();
    if (!guests.ok()) return Err(guests.status());
    for (const auto& g : *guests) out.push_back(GuestJson(h, g));
  }
  return Ok({{"guests", out}});
}

api::Response Agent::CreateGuest(const api::Request& req) {
  auto body = req.JsonBody();
  if (!body.ok()) return Err(body.status());
  auto spec = GuestSpecFromJson(*body);
  if (!spec.ok()) return Err(spec.status());
  bool start = true;
  if (body->contains("start")) {
    if (!(*body)["start"].is_boolean()) return Err(InvalidArgumentError("spec.start: expected true or false"));
    start = (*body)["start"].get<bool>();
  }
  if (Status s = ResolveImageAndChecks(*spec, *body); !s.ok()) return Err(s);
  // Names are unique across both drivers of this host.
  for (Hypervisor* h : {vm_.get(), ct_.get()}) {
    if (h && h->Get(spec->name).ok()) {
      return Err(AlreadyExistsError("guest '" + spec->name + "' already exists on host " + config_.host_name));
    }
  }
  if (Status s = CreateLocalDisks(*spec); !s.ok()) return Err(s);
  Hypervisor* h = HypervisorFor(spec->kind);
  auto info = h->Define(*spec);
  if (!info.ok()) {
    for (const auto& d : spec->disks) {
      if (d.size_mib > 0) fs::remove(d.path);
    }
    return Err(info.status());
  }
  if (start) {
    if (Status s = h->Start(spec->name); !s.ok()) {
      // Leave nothing half-made behind.
      if (Status u = h->Undefine(spec->name); !u.ok()) spdlog::warn("cleanup of {}: {}", spec->name, u.ToString());
      return Err(s);
    }
    info = h->Get(spec->name);
    if (!info.ok()) return Err(info.status());
    ObserveGuest(*info);
  }
  spdlog::info("created guest {} ({}{}){}", spec->name, GuestKindName(spec->kind), spec->emulated ? ", emulated" : "",
               start ? " and started it" : "");
  return Ok(GuestJson(h, *info), 201);
}

api::Response Agent::GetGuest(const api::Request& req) {
  auto h = Find(req.params.at("name"));
  if (!h.ok()) return Err(h.status());
  auto info = (*h)->Get(req.params.at("name"));
  if (!info.ok()) return Err(info.status());
  Json j = GuestJson(*h, *info);
  if (auto spec = (*h)->GetSpec(info->name); spec.ok()) {
    j["spec"] = GuestSpecToJson(*spec);
    // What a live migration must copy (and the destination prepare).
    if (auto disks = LocalDisks(*spec); disks.ok()) j["local_disks"] = *disks;
    else spdlog::warn("local disks of {}: {}", info->name, disks.status().ToString());
  }
  return Ok(j);
}

api::Response Agent::StartGuest(const api::Request& req) {
  const std::string& name = req.params.at("name");
  auto h = Find(name);
  if (!h.ok()) return Err(h.status());
  auto before = (*h)->Get(name);
  if (!before.ok()) return Err(before.status());
  if (before->state == GuestState::kCrashed && before->id >= 0) {
    // A crashed guest is kept (on_crash preserve) with its QEMU stopped: power it off first.
    if (Status s = (*h)->Destroy(name); !s.ok() && s.code() != StatusCode::kFailedPrecondition) return Err(s);
  }
  if (Status s = (*h)->Start(name); !s.ok()) return Err(s);
  auto info = (*h)->Get(name);
  if (!info.ok()) return Err(info.status());
  ObserveGuest(*info);
  return Ok(GuestJson(*h, *info));
}

api::Response Agent::StopGuest(const api::Request& req) {
  const std::string& name = req.params.at("name");
  auto body = OptionalBody(req);
  if (!body.ok()) return Err(body.status());
  auto v = JsonView::Of(*body, "body");
  if (!v.ok()) return Err(v.status());
  if (Status s = v->RejectUnknown({"force", "timeout_s"}); !s.ok()) return Err(s);
  auto force = v->Bool("force", false);
  if (!force.ok()) return Err(force.status());
  auto timeout = v->NonNegativeInt("timeout_s", config_.stop_timeout_s);
  if (!timeout.ok()) return Err(timeout.status());
  if (*timeout > 3600) return Err(v->FieldError("timeout_s", "expected at most 3600"));
  auto h = Find(name);
  if (!h.ok()) return Err(h.status());
  bool forced = *force;
  auto before = (*h)->Get(name);
  if (!before.ok()) return Err(before.status());
  if (before->state == GuestState::kCrashed) forced = true;  // a panicked guest cannot shut down
  if (forced) {
    if (Status s = (*h)->Destroy(name); !s.ok()) {
      // A guest torn down by its crash (on_crash destroy) is off already.
      if (!(before->state == GuestState::kCrashed && s.code() == StatusCode::kFailedPrecondition)) return Err(s);
    }
  } else if (Status s = (*h)->Shutdown(name, std::chrono::seconds(*timeout), &forced); !s.ok()) {
    return Err(s);
  }
  auto info = (*h)->Get(name);
  if (!info.ok()) return Err(info.status());
  Json j = GuestJson(*h, *info);
  j["forced"] = forced;
  return Ok(j);
}

api::Response Agent::PauseGuest(const api::Request& req, bool pause) {
  const std::string& name = req.params.at("name");
  auto h = Find(name);
  if (!h.ok()) return Err(h.status());
  Status s = pause ? (*h)->Pause(name) : (*h)->Resume(name);
  if (!s.ok()) return Err(s);
  auto info = (*h)->Get(name);
  return info.ok() ? Ok(GuestJson(*h, *info)) : Err(info.status());
}

api::Response Agent::ResizeGuest(const api::Request& req) {
  const std::string& name = req.params.at("name");
  auto body = req.JsonBody();
  if (!body.ok()) return Err(body.status());
  auto v = JsonView::Of(*body, "body");
  if (!v.ok()) return Err(v.status());
  if (Status s = v->RejectUnknown({"memory_mib", "vcpus", "cpu"}); !s.ok()) return Err(s);
  // Validate everything before changing anything.
  std::optional<int64_t> memory, vcpus, shares, quota, period;
  if (v->Has("memory_mib")) {
    auto m = v->PositiveInt("memory_mib");
    if (!m.ok()) return Err(m.status());
    memory = *m;
  }
  if (v->Has("vcpus")) {
    auto n = v->PositiveInt("vcpus");
    if (!n.ok()) return Err(n.status());
    vcpus = *n;
  }
  if (v->Has("cpu")) {
    auto c = v->Object("cpu");
    if (!c.ok()) return Err(c.status());
    if (Status s = c->RejectUnknown({"shares", "quota_us", "period_us"}); !s.ok()) return Err(s);
    if (c->Has("shares")) {
      auto x = c->PositiveInt("shares");
      if (!x.ok()) return Err(x.status());
      if (*x < 2 || *x > 262144) return Err(c->FieldError("shares", "expected 2..262144"));
      shares = *x;
    }
    if (c->Has("quota_us")) {
      auto x = c->Int("quota_us");
      if (!x.ok()) return Err(x.status());
      if (*x != -1 && *x < 1000) return Err(c->FieldError("quota_us", "expected -1 (unlimited) or at least 1000"));
      quota = *x;
    }
    if (c->Has("period_us")) {
      auto x = c->Int("period_us");
      if (!x.ok()) return Err(x.status());
      if (*x < 1000 || *x > 1000000) return Err(c->FieldError("period_us", "expected 1000..1000000"));
      period = *x;
    }
  }
  if (!memory && !vcpus && !shares && !quota && !period) {
    return Err(InvalidArgumentError("body: nothing to change (give memory_mib, vcpus or cpu)"));
  }
  auto h = Find(name);
  if (!h.ok()) return Err(h.status());
  auto before = (*h)->Get(name);
  if (!before.ok()) return Err(before.status());
  if (memory && *memory > before->max_memory_mib) {
    return Err(InvalidArgumentError("body.memory_mib: " + std::to_string(*memory) + " is above the guest's maximum of " +
                                    std::to_string(before->max_memory_mib) + " MiB"));
  }
  if (vcpus && *vcpus > before->max_vcpus) {
    return Err(InvalidArgumentError("body.vcpus: " + std::to_string(*vcpus) + " is above the guest's maximum of " +
                                    std::to_string(before->max_vcpus)));
  }
  if (memory) {
    if (Status s = (*h)->SetMemory(name, *memory); !s.ok()) return Err(s);
  }
  if (vcpus) {
    if (Status s = (*h)->SetVcpus(name, static_cast<int>(*vcpus)); !s.ok()) return Err(s);
  }
  if (shares || quota || period) {
    if (Status s = (*h)->SetCpuTune(name, shares, quota, period); !s.ok()) return Err(s);
  }
  auto info = (*h)->Get(name);
  return info.ok() ? Ok(GuestJson(*h, *info)) : Err(info.status());
}

api::Response Agent::DeleteGuest(const api::Request& req) {
  const std::string& name = req.params.at("name");
  const bool force = req.query.count("force") && (req.query.at("force") == "true" || req.query.at("force") == "1");
  auto h = Find(name);
  if (!h.ok()) return Err(h.status());
  auto info = (*h)->Get(name);
  if (!info.ok()) return Err(info.status());
  if (info->state != GuestState::kShutoff) {
    if (!force) {
      return Err(FailedPreconditionError("guest '" + name + "' is " + std::string(GuestStateName(info->state)) +
                                         "; stop it first or delete with ?force=true"));
    }
    if (Status s = (*h)->Destroy(name); !s.ok() && s.code() != StatusCode::kFailedPrecondition) return Err(s);
  }
  auto spec = (*h)->GetSpec(name);
  if (Status s = (*h)->Undefine(name); !s.ok()) return Err(s);
  if (spec.ok()) {
    for (const auto& d : spec->disks) {
      std::error_code ec;
      if (IsLocalDisk(d.path)) fs::remove(d.path, ec);
    }
  }
  for (const auto& c : info->channels) {
    std::lock_guard l(channels_mu_);
    channels_.erase(c.socket_path);
  }
  {
    std::lock_guard l(health_mu_);
    health_.Forget(name);
    crashes_.erase(name);
  }
  return Ok({{"deleted", name}});
}

api::Response Agent::ExecInGuest(const api::Request& req) {
  const std::string& name = req.params.at("name");
  auto body = req.JsonBody();
  if (!body.ok()) return Err(body.status());
  auto v = JsonView::Of(*body, "body");
  if (!v.ok()) return Err(v.status());
  if (Status s = v->RejectUnknown({"command", "argv", "timeout_s"}); !s.ok()) return Err(s);
  auto timeout = v->NonNegativeInt("timeout_s", 10);
  if (!timeout.ok()) return Err(timeout.status());
  if (*timeout < 1 || *timeout > 300) return Err(v->FieldError("timeout_s", "expected 1..300"));
  auto h = Find(name);
  if (!h.ok()) return Err(h.status());
  auto info = (*h)->Get(name);
  if (!info.ok()) return Err(info.status());
  if (info->state != GuestState::kRunning) {
    return Err(FailedPreconditionError("guest '" + name + "' is " + std::string(GuestStateName(info->state))));
  }
  Result<ExecResult> result = InternalError("unreachable");
  if (info->kind == GuestKind::kLxc) {
    std::vector<std::string> argv;
    if (v->Has("argv")) {
      auto a = v->Strings("argv");
      if (!a.ok()) return Err(a.status());
      argv = *a;
    } else {
      auto c = v->String("command");
      if (!c.ok()) return Err(c.status());
      argv = {"/bin/sh", "-c", *c};
    }
    result = (*h)->ExecInContainer(name, argv, std::chrono::seconds(*timeout));
  } else {
    auto c = v->String("command");
    if (!c.ok()) return Err(c.status());
    const std::string socket = ControlChannelOf(*info);
    if (socket.empty()) {
      return Err(FailedPreconditionError("guest '" + name + "' has no control channel " + kGuestChannel));
    }
    // A guest that has not answered since it started gets the request's timeout to do so.
    const Duration deadline = clock_.Monotonic() + std::chrono::seconds(*timeout);
    {
      std::optional<HealthView> v;
      {
        std::lock_guard l(health_mu_);
        v = health_.View(name);
      }
      if (!v || v->instance != info->id || !v->running) ObserveGuest(*info);
    }
    if (Status s = WaitUntilReady(name, deadline); !s.ok()) return Err(s);
    const Duration left = std::max<Duration>(deadline - clock_.Monotonic(), std::chrono::seconds(1));
    result = ChannelFor(socket)->Call(*c, left);
    if (result.ok()) {
      std::vector<HealthEvent> events;
      {
        std::lock_guard l(health_mu_);
        events = health_.Report(name, info->id, true, clock_.Monotonic(), clock_.Now());
      }
      health_cv_.notify_all();
      RecordHealthEvents(events);
    }
  }
  if (!result.ok()) {
    if (result.status().code() == StatusCode::kInternal) spdlog::warn("exec in {}: {}", name, result.status().ToString());
    return Err(result.status());
  }
  return Ok({{"exit_code", result->exit_code}, {"output", result->output}});
}

api::Response Agent::GuestConsole(const api::Request& req) {
  const std::string& name = req.params.at("name");
  auto h = Find(name);
  if (!h.ok()) return Err(h.status());
  auto info = (*h)->Get(name);
  if (!info.ok()) return Err(info.status());
  if (info->console_log.empty()) return Err(UnimplementedError("guest '" + name + "' has no console log"));
  size_t tail = 64 << 10;
  if (auto it = req.query.find("tail_bytes"); it != req.query.end()) {
    try {
      tail = std::min<size_t>(std::stoull(it->second), 4 << 20);
    } catch (...) {
      return Err(InvalidArgumentError("tail_bytes: expected a number, got '" + it->second + "'"));
    }
  }
  std::string text = ReadTail(info->console_log, tail);
  api::Response r;
  r.status = 200;
  r.content_type = "text/plain; charset=utf-8";
  r.body = std::move(text);
  return r;
}

api::Response Agent::Stats(const api::Request& req) {
  if (req.query.count("fresh") && req.query.at("fresh") != "0") {
    if (Status s = SampleNow(); !s.ok()) return Err(s);
  }
  std::lock_guard l(usage_mu_);
  if (auto it = req.params.find("name"); it != req.params.end()) {
    if (Status s = ValidateGuestName(it->second, "guest name"); !s.ok()) return Err(s);
    auto u = usage_.find(it->second);
    if (u == usage_.end()) {
      return Err(NotFoundError("no usage sample for guest '" + it->second + "' on host " + config_.host_name));
    }
    return Ok(GuestUsageToJson(u->second));
  }
  Json guests = Json::array();
  for (const auto& [name, u] : usage_) guests.push_back(GuestUsageToJson(u));
  Json host = HostInfoToJson(host_usage_);
  host["name"] = config_.host_name;
  return Ok({{"sampled_at", FormatRfc3339(sampled_at_)}, {"host", host}, {"guests", guests}});
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
  wait_ms = std::clamp<int64_t>(wait_ms, 0, 30'000);
  std::unique_lock l(events_mu_);
  auto has_new = [&] { return next_seq_ - 1 > since; };
  if (!has_new() && wait_ms > 0) {
    events_cv_.wait_for(l, std::chrono::milliseconds(wait_ms), [&] {
      std::lock_guard s(stop_mu_);
      return has_new() || stopping_;
    });
  }
  Json out = Json::array();
  for (const auto& e : events_) {
    if (e.seq > since && out.size() < 1000) out.push_back(EventToJson(e));
  }
  return Ok({{"events", out}, {"next", next_seq_ - 1}});
}

// ---------------------------------------------------------------------------------------------
// Local disks and live migration

Status Agent::CreateLocalDisks(GuestSpec& spec) {
  const fs::path dir = LocalDiskDir();
  std::vector<std::string> made;
  for (auto& d : spec.disks) {
    if (!d.path.empty() || d.size_mib <= 0) continue;
    d.path = (dir / (spec.name + "-" + d.target + "." + d.format)).string();
    if (FileExists(d.path)) {
      for (const auto& m : made) fs::remove(m);
      return AlreadyExistsError("local disk " + d.path + " already exists (left by an earlier guest '" + spec.name +
                                "'? delete it first)");
    }
    auto r = RunTool({"qemu-img", "create", "-q", "-f", d.format, d.path, std::to_string(d.size_mib) + "M"});
    if (!r.ok()) {
      for (const auto& m : made) fs::remove(m);
      return r.status();
    }
    made.push_back(d.path);
  }
  return Status::Ok();
}

Result<Json> Agent::LocalDisks(const GuestSpec& spec) {
  Json out = Json::array();
  for (const auto& d : spec.disks) {
    if (!IsLocalDisk(d.path)) continue;
    // -U: the running guest holds the image lock.
    UW_ASSIGN_OR_RETURN(std::string info, RunTool({"qemu-img", "info", "-U", "--output=json", d.path}));
    UW_ASSIGN_OR_RETURN(Json j, ParseJson(info, "qemu-img info " + d.path));
    out.push_back({{"target", d.target},
                   {"file", fs::path(d.path).filename().string()},
                   {"format", d.format},
                   {"virtual_size_bytes", j.value("virtual-size", int64_t{0})}});
  }
  return out;
}

// POST /api/v1/migrations/prepare (destination): room for the guest, its directories and empty
// local volumes. Body {"guest", "kind", "memory_mib", "vcpus", "disks": [{"file", "format",
// "virtual_size_bytes"}]}. Returns where the source should send it.
api::Response Agent::PrepareIncoming(const api::Request& req) {
  auto body = req.JsonBody();
  if (!body.ok()) return Err(body.status());
  auto v = JsonView::Of(*body, "body");
  if (!v.ok()) return Err(v.status());
  if (Status s = v->RejectUnknown({"guest", "kind", "memory_mib", "vcpus", "disks"}); !s.ok()) return Err(s);
  auto guest = v->String("guest");
  if (!guest.ok()) return Err(guest.status());
  if (Status s = ValidateGuestName(*guest, "body.guest"); !s.ok()) return Err(s);
  auto kind_name = v->String("kind", "qemu");
  if (!kind_name.ok()) return Err(kind_name.status());
  auto kind = ParseGuestKind(*kind_name);
  if (!kind.ok()) return Err(v->FieldError("kind", kind.status().message()));
  if (*kind == GuestKind::kLxc) return Err(v->FieldError("kind", "containers do not live-migrate (move them cold)"));
  if (*kind == GuestKind::kKvm && !kvm_.usable && !config_.allow_emulated_kvm) {
    return Err(FailedPreconditionError("host " + config_.host_name + " cannot run kind kvm: " + kvm_.reason));
  }
  auto memory = v->PositiveInt("memory_mib");
  if (!memory.ok()) return Err(memory.status());
  auto vcpus = v->Int("vcpus", 1);
  if (!vcpus.ok()) return Err(vcpus.status());
  for (Hypervisor* h : {vm_.get(), ct_.get()}) {
    if (!h) continue;
    auto existing = h->Get(*guest);
    if (existing.ok() && existing->state != GuestState::kShutoff) {
      return Err(AlreadyExistsError("guest '" + *guest + "' is already " + std::string(GuestStateName(existing->state)) +
                                    " on host " + config_.host_name));
    }
    if (existing.ok()) {
      // A shut-off leftover of an earlier attempt: the incoming definition replaces it.
      if (Status s = h->Undefine(*guest); !s.ok()) return Err(s);
    }
  }
  auto host = vm_->Host();
  if (!host.ok()) return Err(host.status());
  if (host->free_memory_mib >= 0 && *memory > host->free_memory_mib) {
    return Err(ResourceExhaustedError("host " + config_.host_name + " has " + std::to_string(host->free_memory_mib) +
                                      " MiB free, guest '" + *guest + "' needs " + std::to_string(*memory)));
  }
  if (*vcpus > host->cpu_cores) {
    return Err(ResourceExhaustedError("host " + config_.host_name + " has " + std::to_string(host->cpu_cores) +
                                      " CPUs, guest '" + *guest + "' needs " + std::to_string(*vcpus)));
  }
  const fs::path dir = LocalDiskDir();
  Json disks = Json::array();
  if (v->Has("disks")) {
    auto list = v->Objects("disks");
    if (!list.ok()) return Err(list.status());
    for (const auto& d : *list) {
      auto file = d.String("file");
      if (!file.ok()) return Err(file.status());
      if (file->empty() || file->find('/') != std::string::npos || *file == "." || *file == "..") {
        return Err(d.FieldError("file", "expected a plain file name"));
      }
      auto format = d.String("format", "qcow2");
      if (!format.ok()) return Err(format.status());
      if (*format != "qcow2" && *format != "raw") return Err(d.FieldError("format", "expected qcow2 or raw"));
      auto size = d.PositiveInt("virtual_size_bytes");
      if (!size.ok()) return Err(size.status());
      const std::string path = (dir / *file).string();
      std::error_code ec;
      fs::remove(path, ec);  // a leftover of an earlier attempt
      auto r = RunTool({"qemu-img", "create", "-q", "-f", *format, path, std::to_string(*size)});
      if (!r.ok()) return Err(r.status());
      disks.push_back({{"file", *file}, {"path", path}});
    }
  }
  spdlog::info("prepared host {} for incoming guest {} ({} MiB, {} local disks)", config_.host_name, *guest, *memory,
               disks.size());
  return Ok({{"host", config_.host_name},
             {"migration_uri", config_.migration_uri},
             {"state_dir", config_.state_dir},
             {"disks", disks}});
}

// POST /api/v1/migrations/abandon (destination): removes what an incoming migration of `guest`
// left here (a paused or shut-off copy, local volumes). A running copy is refused: it may be the
// only one.
api::Response Agent::AbandonIncoming(const api::Request& req) {
  auto body = req.JsonBody();
  if (!body.ok()) return Err(body.status());
  auto v = JsonView::Of(*body, "body");
  if (!v.ok()) return Err(v.status());
  if (Status s = v->RejectUnknown({"guest"}); !s.ok()) return Err(s);
  auto guest = v->String("guest");
  if (!guest.ok()) return Err(guest.status());
  if (Status s = ValidateGuestName(*guest, "body.guest"); !s.ok()) return Err(s);
  bool removed = false;
  auto info = vm_->Get(*guest);
  if (info.ok()) {
    if (info->state == GuestState::kRunning) {
      return Err(FailedPreconditionError("guest '" + *guest + "' runs on host " + config_.host_name +
                                         "; not removing a running copy"));
    }
    if (info->state != GuestState::kShutoff) {
      if (Status s = vm_->Destroy(*guest); !s.ok() && s.code() != StatusCode::kFailedPrecondition) return Err(s);
    }
    if (Status s = vm_->Undefine(*guest); !s.ok() && s.code() != StatusCode::kNotFound) return Err(s);
    removed = true;
  }
  std::error_code ec;
  const std::string prefix = *guest + "-";
  for (const auto& e : fs::directory_iterator(LocalDiskDir(), ec)) {
    if (e.path().filename().string().rfind(prefix, 0) == 0) {
      fs::remove(e.path(), ec);
      removed = true;
    }
  }
  return Ok({{"guest", *guest}, {"removed", removed}});
}

// POST /api/v1/guests/{name}/migrate (source): starts a peer-to-peer live migration to the
// destination a prepare call returned. Body {"destination": {"host", "migration_uri",
// "state_dir"}, "bandwidth_mib_s", "downtime_limit_ms", "auto_converge", "postcopy"}. 202.
api::Response Agent::MigrateGuest(const api::Request& req) {
  const std::string& name = req.params.at("name");
  auto body = req.JsonBody();
  if (!body.ok()) return Err(body.status());
  auto v = JsonView::Of(*body, "body");
  if (!v.ok()) return Err(v.status());
  if (Status s = v->RejectUnknown({"destination", "bandwidth_mib_s", "downtime_limit_ms", "auto_converge", "postcopy"});
      !s.ok()) {
    return Err(s);
  }
  auto dest = v->Object("destination");
  if (!dest.ok()) return Err(dest.status());
  if (Status s = dest->RejectUnknown({"host", "migration_uri", "state_dir"}); !s.ok()) return Err(s);
  auto dest_host = dest->String("host", "");
  auto dest_uri = dest->String("migration_uri");
  auto dest_dir = dest->String("state_dir");
  for (auto* r : {&dest_host, &dest_uri, &dest_dir}) {
    if (!r->ok()) return Err(r->status());
  }
  if (dest_uri->find("://") == std::string::npos) return Err(dest->FieldError("migration_uri", "expected a libvirt URI"));
  if (dest_dir->empty() || (*dest_dir)[0] != '/') return Err(dest->FieldError("state_dir", "expected an absolute path"));
  MigrationRequest mr;
  mr.dest_uri = *dest_uri;
  auto bw = v->Number("bandwidth_mib_s", 0);
  auto downtime = v->NonNegativeInt("downtime_limit_ms", 0);
  auto ac = v->Bool("auto_converge", false);
  auto pc = v->Bool("postcopy", false);
  if (!bw.ok()) return Err(bw.status());
  if (!downtime.ok()) return Err(downtime.status());
  if (!ac.ok()) return Err(ac.status());
  if (!pc.ok()) return Err(pc.status());
  if (*bw < 0) return Err(v->FieldError("bandwidth_mib_s", "expected a number >= 0"));
  mr.bandwidth_mib_s = *bw;
  mr.downtime_limit_ms = *downtime;
  mr.auto_converge = *ac;
  mr.postcopy = *pc;

  auto h = Find(name);
  if (!h.ok()) return Err(h.status());
  auto info = (*h)->Get(name);
  if (!info.ok()) return Err(info.status());
  if (info->kind == GuestKind::kLxc) {
    return Err(FailedPreconditionError("guest '" + name + "' is a container: containers move cold, not live"));
  }
  if (info->state != GuestState::kRunning && info->state != GuestState::kPaused) {
    return Err(FailedPreconditionError("guest '" + name + "' is " + std::string(GuestStateName(info->state)) +
                                       "; only a running guest migrates live"));
  }
  auto spec = (*h)->GetSpec(name);
  if (!spec.ok()) return Err(spec.status());
  std::vector<std::string> local_disks;  // copied to the destination, removed here once it runs there
  for (const auto& d : spec->disks) {
    if (IsLocalDisk(d.path)) local_disks.push_back(d.path);
  }
  mr.copy_storage = !local_disks.empty();
  auto xml = (*h)->MigratableXml(name);
  if (!xml.ok()) return Err(xml.status());
  // The destination keeps consoles, channels and local disks under its own state directory.
  std::string from = config_.state_dir, to = *dest_dir;
  while (from.size() > 1 && from.back() == '/') from.pop_back();
  while (to.size() > 1 && to.back() == '/') to.pop_back();
  mr.dest_xml = ReplaceAll(*xml, from + "/", to + "/");

  std::lock_guard l(migrations_mu_);
  auto it = migrations_.find(name);
  if (it != migrations_.end()) {
    if (it->second->state == "running") {
      return Err(FailedPreconditionError("guest '" + name + "' is already migrating to " + it->second->destination));
    }
    if (it->second->thread.joinable()) it->second->thread.join();
    migrations_.erase(it);
  }
  if (auto job = (*h)->GetMigrationJob(name, false); job.ok() && job->active) {
    return Err(FailedPreconditionError("guest '" + name + "' already has a migration job running in libvirt"));
  }
  auto m = std::make_unique<Outgoing>();
  m->destination = dest_host->empty() ? *dest_uri : *dest_host;
  Outgoing* raw = m.get();
  Hypervisor* hv = *h;
  m->thread = std::thread([this, raw, hv, name, mr, local_disks] {
    Status st = hv->Migrate(name, mr);
    MigrationJob final_job;
    if (st.ok()) {
      if (auto j = hv->GetMigrationJob(name, true); j.ok()) final_job = *j;
      // Confirm: the destination runs it; the shut-off source definition goes.
      if (Status u = hv->Undefine(name); !u.ok() && u.code() != StatusCode::kNotFound) {
        spdlog::warn("removing the source copy of migrated guest {}: {}", name, u.ToString());
      }
      for (const auto& path : local_disks) {
        std::error_code ec;
        fs::remove(path, ec);
      }
    }
    std::lock_guard l(migrations_mu_);
    raw->final_job = final_job;
    if (st.ok()) {
      raw->state = "completed";
      spdlog::info("guest {} migrated to {} in {} ms (downtime {} ms)", name, raw->destination, final_job.elapsed_ms,
                   final_job.downtime_ms);
    } else {
      raw->state = raw->cancel_requested || st.code() == StatusCode::kAborted ? "cancelled" : "failed";
      raw->error = st.message();
      spdlog::warn("migration of guest {} to {} {}: {}", name, raw->destination, raw->state, st.message());
    }
  });
  migrations_[name] = std::move(m);
  RecordEvent({clock_.Now(), name, info->uuid, "migrating", "to " + *dest_uri, (*h)->uri()});
  return Ok({{"guest", name}, {"state", "running"}, {"destination", *dest_uri}, {"copy_storage", mr.copy_storage}}, 202);
}

// GET /api/v1/guests/{name}/migration: this agent's view of the guest's outgoing migration.
// state: none | running | completed | failed | cancelled; "job" holds libvirt's statistics
// (live while running, final once completed). After an agent restart a migration libvirt still
// runs is reported as running (adopted).
api::Response Agent::MigrationStatus(const api::Request& req) {
  const std::string& name = req.params.at("name");
  Json out = {{"guest", name}, {"host", config_.host_name}, {"state", "none"}};
  {
    std::lock_guard l(migrations_mu_);
    auto it = migrations_.find(name);
    if (it != migrations_.end()) {
      out["state"] = it->second->state;
      out["destination"] = it->second->destination;
      out["error"] = it->second->error;
      if (it->second->state == "completed") out["job"] = MigrationJobToJson(it->second->final_job);
    }
  }
  auto h = Find(name);
  if (h.ok()) {
    auto info = (*h)->Get(name);
    if (info.ok()) out["guest_state"] = GuestStateName(info->state);
    if (out["state"] != "completed") {
      auto job = (*h)->GetMigrationJob(name, false);
      if (job.ok()) {
        out["job"] = MigrationJobToJson(*job);
        if (job->active && out["state"] == "none") out["state"] = "running";  // adopted after a restart
      }
    }
  } else {
    out["guest_state"] = "absent";
  }
  return Ok(out);
}

// POST /api/v1/guests/{name}/migration/{cancel|bandwidth|postcopy}.
api::Response Agent::ControlMigration(const api::Request& req) {
  const std::string& name = req.params.at("name");
  const std::string& action = req.params.at("action");
  auto h = Find(name);
  if (!h.ok()) return Err(h.status());
  Status st;
  if (action == "cancel") {
    {
      std::lock_guard l(migrations_mu_);
      auto it = migrations_.find(name);
      if (it != migrations_.end()) it->second->cancel_requested = true;
    }
    st = (*h)->AbortMigration(name);
  } else if (action == "bandwidth") {
    auto body = req.JsonBody();
    if (!body.ok()) return Err(body.status());
    auto v = JsonView::Of(*body, "body");
    if (!v.ok()) return Err(v.status());
    auto bw = v->Number("bandwidth_mib_s");
    if (!bw.ok()) return Err(bw.status());
    if (!(*bw > 0)) return Err(v->FieldError("bandwidth_mib_s", "expected a positive number"));
    st = (*h)->SetMigrationBandwidth(name, *bw);
  } else if (action == "postcopy") {
    st = (*h)->StartPostCopy(name);
  } else {
    return Err(NotFoundError("no migration action '" + action + "' (expected cancel, bandwidth or postcopy)"));
  }
  if (!st.ok()) return Err(st);
  return Ok({{"guest", name}, {"action", action}, {"ok", true}});
}

}  // namespace uw::vmm
