#include "manager/manager.h"

#include <openssl/evp.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdio>
#include <set>

#include "api/http.h"
#include "common/id.h"
#include "manager/event_log.h"
#include "manager/internal.h"
#include "manager/snapshot_builder.h"
#include "placement/placement.h"
#include "vmm/hypervisor.h"

namespace uw::manager {

using internal::Dump;
using internal::GuestKey;
using internal::IsFinal;
using internal::kMaxTaskAttempts;
using internal::NeedWrite;
using internal::ShowShortNames;

std::string_view RoleName(Role r) {
  switch (r) {
    case Role::kAdmin:
      return "admin";
    case Role::kOperator:
      return "operator";
    case Role::kTenant:
      return "tenant";
    case Role::kBillingReader:
      return "billing-reader";
    case Role::kReadOnly:
      return "read-only";
  }
  return "?";
}

Result<Role> ParseRole(std::string_view name) {
  if (name == "admin") return Role::kAdmin;
  if (name == "operator") return Role::kOperator;
  if (name == "tenant") return Role::kTenant;
  if (name == "billing-reader") return Role::kBillingReader;
  if (name == "read-only") return Role::kReadOnly;
  return InvalidArgumentError("role: expected admin, operator, tenant, billing-reader or read-only, got '" +
                              std::string(name) + "'");
}

std::string Sha256Hex(std::string_view text) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_Digest(text.data(), text.size(), md, &n, EVP_sha256(), nullptr);
  std::string out;
  char buf[3];
  for (unsigned i = 0; i < n; ++i) {
    std::snprintf(buf, sizeof buf, "%02x", md[i]);
    out += buf;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Lifecycle

Manager::Manager(ManagerConfig config, Clock& clock) : config_(std::move(config)), clock_(clock) {
  SetAgentFactory([timeout = config_.agent_timeout_ms](const std::string& host, const AgentAddress& address) {
    return NewHttpAgentClient(host, address, timeout);
  });
  SetPollSleeper([this](Duration d) {
    std::unique_lock l(mu_);
    cv_.wait_for(l, d, [this] { return stopping_; });
    return !stopping_;
  });
}

void Manager::SetPollSleeper(std::function<bool(Duration)> sleeper) { poll_sleeper_ = std::move(sleeper); }

void Manager::SetAgentFactory(AgentDirectory::Factory factory) {
  auto lookup = [this](const std::string& host) -> Result<AgentAddress> {
    UW_ASSIGN_OR_RETURN(SqlRow h, store_->QueryOne("SELECT agent_url, agent_token FROM hosts WHERE name = ?", {host},
                                                   "host '" + host + "' is no longer in the cluster"));
    return AgentAddress{h.Str("agent_url"), h.Str("agent_token")};
  };
  agents_ = std::make_unique<AgentDirectory>(std::move(lookup), std::move(factory));
}

Manager::~Manager() { Stop(); }

int64_t Manager::NowMs() const {
  return std::chrono::duration_cast<std::chrono::milliseconds>(clock_.Now().time_since_epoch()).count();
}

Status Manager::Start() {
  events_.reset();  // a manager started again reopens its store
  UW_ASSIGN_OR_RETURN(store_, Store::Open(config_.db_path));
  // The bootstrap admin token (replaced when the configured one changes).
  UW_RETURN_IF_ERROR(store_->Exec(
      "INSERT INTO api_tokens(id, name, role, tenant, token_hash, created_ms) VALUES ('bootstrap-admin', "
      "'bootstrap admin (config)', 'admin', '', ?, ?) ON CONFLICT(id) DO UPDATE SET token_hash = excluded.token_hash",
      {Sha256Hex(config_.admin_token), NowMs()}));
  {
    UW_ASSIGN_OR_RETURN(auto rows, store_->Query("SELECT id, role, tenant, token_hash, rights FROM api_tokens"));
    std::lock_guard l(tokens_mu_);
    tokens_.clear();
    for (const auto& r : rows) {
      auto role = ParseRole(r.Str("role"));
      if (!role.ok()) continue;
      Principal p{r.Str("id"), *role, r.Str("tenant"), {}};
      const Json rights = r.JsonOf("rights");
      if (rights.is_array()) {
        for (const auto& right : rights) {
          if (right.is_string() && ValidateRight(right.get<std::string>(), "rights").ok())
            p.rights.insert(right.get<std::string>());
        }
      }
      tokens_[r.Str("token_hash")] = std::move(p);
    }
  }
  events_ = std::make_unique<internal::EventLog>(*store_, clock_);
  UW_RETURN_IF_ERROR(events_->Start());
  // Hosts are not known to be alive after a restart until they heartbeat again; give them a full
  // timeout from now rather than judging them by heartbeats the previous process received.
  UW_RETURN_IF_ERROR(store_->Exec("UPDATE hosts SET last_heartbeat_ms = MAX(last_heartbeat_ms, ?)", {NowMs()}));
  {
    std::lock_guard l(mu_);
    stopping_ = false;
  }
  UW_RETURN_IF_ERROR(RecoverTasks());
  UW_RETURN_IF_ERROR(RecoverMigrations());
  for (int i = 0; i < config_.task_workers; ++i) workers_.emplace_back([this] { WorkerLoop(); });
  monitor_ = std::thread([this] { MonitorLoop(); });
  migrator_ = std::thread([this] { MigratorLoop(); });
  UW_RETURN_IF_ERROR(AddEvent("manager.started", "manager", "", {{"schema_version", store_->schema_version()}}));
  return Status::Ok();
}

void Manager::Stop() {
  {
    std::lock_guard l(mu_);
    if (stopping_ && workers_.empty() && !monitor_.joinable() && !migrator_.joinable()) return;
    stopping_ = true;
  }
  cv_.notify_all();
  tasks_cv_.notify_all();
  migrator_cv_.notify_all();
  for (auto& t : workers_) t.join();
  workers_.clear();
  if (monitor_.joinable()) monitor_.join();
  if (migrator_.joinable()) migrator_.join();
  std::map<std::string, std::thread> threads;
  {
    std::lock_guard l(migrator_mu_);
    threads.swap(migration_threads_);
  }
  for (auto& [id, t] : threads) t.join();
  if (events_) events_->Stop();
}

Status Manager::RecoverTasks() {
  // Migrations have their own recovery (RecoverMigrations): they cannot simply start over.
  UW_ASSIGN_OR_RETURN(auto rows,
                      store_->Query("SELECT id, kind, subject, state, attempts FROM tasks WHERE state IN "
                                    "('pending', 'running') AND kind <> 'guest.migrate' ORDER BY created_ms"));
  for (const auto& r : rows) {
    std::string id = r.Str("id");
    if (r.Int("attempts") >= kMaxTaskAttempts) {
      UW_RETURN_IF_ERROR(FinishTask(id,
                                    AbortedError("manager restarted " + std::to_string(r.Int("attempts")) +
                                                 " times while this task ran; giving up"),
                                    nullptr));
      continue;
    }
    // Every step is idempotent against the agent (create treats "already exists" as done, delete
    // treats "not found" as done), so a running task is resumed from its start.
    UW_RETURN_IF_ERROR(store_->Exec("UPDATE tasks SET state = 'pending', message = ?, updated_ms = ? WHERE id = ?",
                                    {"resumed after a manager restart (was " + r.Str("state") + ")", NowMs(), id}));
    UW_RETURN_IF_ERROR(AddEvent("task.resumed", id, "",
                                {{"kind", r.Str("kind")}, {"subject", r.Str("subject")}, {"was", r.Str("state")}}));
    spdlog::info("resuming task {} ({} {}, was {})", id, r.Str("kind"), r.Str("subject"), r.Str("state"));
    Enqueue(id);
  }
  return Status::Ok();
}

void Manager::Enqueue(const std::string& id) {
  {
    std::lock_guard l(mu_);
    queue_.push_back(id);
  }
  cv_.notify_all();  // the monitor loop waits on cv_ too: notify_one could wake only it
}

void Manager::WorkerLoop() {
  while (true) {
    std::string id;
    {
      std::unique_lock l(mu_);
      cv_.wait(l, [this] { return stopping_ || !queue_.empty(); });
      if (stopping_) return;
      id = std::move(queue_.front());
      queue_.pop_front();
    }
    // An agent's malformed answer must fail its task, never the process.
    try {
      RunTask(id);
    } catch (const std::exception& e) {
      spdlog::error("task {}: {}", id, e.what());
      if (Status s = FinishTask(id, InternalError(std::string("task aborted: ") + e.what()), nullptr); !s.ok()) {
        spdlog::error("task {}: cannot record its failure: {}", id, s.ToString());
      }
    }
  }
}

void Manager::MonitorLoop() {
  auto last_drs = clock_.Monotonic();
  std::unique_lock l(mu_);
  while (!stopping_) {
    l.unlock();
    CheckHeartbeats();
    // Usage samples are kept for a day (metering reads them; later issues aggregate them).
    if (Status s = store_->Exec("DELETE FROM usage_samples WHERE at_ms < ?", {NowMs() - 86'400'000}); !s.ok()) {
      spdlog::warn("pruning usage samples: {}", s.ToString());
    }
    if (Status s = store_->Exec("DELETE FROM idempotency WHERE created_ms < ?", {NowMs() - 86'400'000}); !s.ok()) {
      spdlog::warn("pruning idempotency records: {}", s.ToString());
    }
    if (config_.drs_interval_ms > 0 &&
        clock_.Monotonic() - last_drs >= std::chrono::milliseconds(config_.drs_interval_ms)) {
      last_drs = clock_.Monotonic();
      try {
        if (auto r = RunDrs(); !r.ok()) spdlog::warn("DRS pass failed: {}", r.status().ToString());
      } catch (const std::exception& e) {
        spdlog::error("DRS pass aborted: {}", e.what());
      }
    }
    l.lock();
    cv_.wait_for(l, std::chrono::milliseconds(std::min(config_.heartbeat_interval_ms, 1000)),
                 [this] { return stopping_; });
  }
}

// ---------------------------------------------------------------------------------------------
// Auth, events

Result<Principal> Manager::Authenticate(std::string_view bearer_token) {
  if (bearer_token.empty()) {
    return UnauthenticatedError(
        "missing bearer token: send 'Authorization: Bearer <token>' (uwctl: --token or UW_TOKEN)");
  }
  std::lock_guard l(tokens_mu_);
  auto it = tokens_.find(Sha256Hex(bearer_token));
  if (it == tokens_.end()) return UnauthenticatedError("unknown or revoked API token");
  return it->second;
}

Status Manager::AddEvent(std::string_view type, std::string_view subject, std::string_view tenant, const Json& data) {
  if (events_ == nullptr) return FailedPreconditionError("the manager is not started");
  return events_->Add(type, subject, tenant, data);
}

void Manager::SubscribeEvents(const Principal& p, int64_t since, bool follow,
                              std::shared_ptr<api::StreamWriter> writer) {
  if (events_ == nullptr) {  // not started: nothing to serve
    writer->Close();
    return;
  }
  events_->Subscribe(p, since, follow, std::move(writer));
}

size_t Manager::event_subscribers() const { return events_ ? events_->subscribers() : 0; }

Result<std::vector<Json>> Manager::EventsSince(const Principal& p, int64_t since, int64_t limit) {
  if (events_ == nullptr) return FailedPreconditionError("the manager is not started");
  return events_->Since(p, since, limit);
}

// ---------------------------------------------------------------------------------------------
// Tokens

Result<Json> Manager::CreateToken(std::string_view name, Role role, std::string_view tenant,
                                  const std::vector<std::string>& rights) {
  if (name.empty()) return InvalidArgumentError("name: must not be empty");
  if (name.size() > 128) {
    return InvalidArgumentError("name: expected at most 128 characters, got " + std::to_string(name.size()));
  }
  for (unsigned char c : name) {
    if (c < 0x20 || c == 0x7f) return InvalidArgumentError("name: control characters are not allowed");
  }
  std::set<std::string, std::less<>> granted;
  for (size_t i = 0; i < rights.size(); ++i) {
    UW_RETURN_IF_ERROR(ValidateRight(rights[i], "rights[" + std::to_string(i) + "]"));
    granted.insert(rights[i]);
  }
  if (!granted.empty() && (role == Role::kAdmin || role == Role::kOperator)) {
    return InvalidArgumentError("rights: admin and operator tokens hold every right already");
  }
  if (!granted.empty() && (role == Role::kBillingReader || role == Role::kReadOnly)) {
    return InvalidArgumentError("rights: a " + std::string(RoleName(role)) + " token cannot create guests");
  }
  const Json rights_json(std::vector<std::string>(granted.begin(), granted.end()));
  if (role == Role::kTenant) {
    if (tenant.empty()) return InvalidArgumentError("tenant: required for a tenant token");
    UW_RETURN_IF_ERROR(ValidateName(tenant, "tenant"));
  } else if (!tenant.empty()) {
    return InvalidArgumentError("tenant: only tenant tokens belong to a tenant");
  }
  std::string id = NewId("tok");
  std::string token = "uw_" + NewUuid() + NewUuid();
  token.erase(std::remove(token.begin(), token.end(), '-'), token.end());
  std::string hash = Sha256Hex(token);
  UW_RETURN_IF_ERROR(store_->Transact([&]() -> Status {
    UW_RETURN_IF_ERROR(store_->Exec(
        "INSERT INTO api_tokens(id, name, role, tenant, token_hash, created_ms, rights) VALUES (?, ?, ?, ?, ?, ?, ?)",
        {id, std::string(name), std::string(RoleName(role)), std::string(tenant), hash, NowMs(), Dump(rights_json)}));
    return AddEvent("token.created", id, "",
                    {{"name", name}, {"role", RoleName(role)}, {"tenant", tenant}, {"rights", rights_json}});
  }));
  {
    std::lock_guard l(tokens_mu_);
    tokens_[hash] = Principal{id, role, std::string(tenant), granted};
  }
  return Json{{"id", id},         {"name", name},          {"role", RoleName(role)},
              {"tenant", tenant}, {"rights", rights_json}, {"token", token}};
}

Result<Json> Manager::ListTokens(const PageQuery& page) {
  UW_ASSIGN_OR_RETURN(auto rows, store_->Query("SELECT * FROM api_tokens ORDER BY created_ms, rowid"));
  Json out = Json::array();
  for (const auto& r : rows) {
    out.push_back(Json{{"id", r.Str("id")},
                       {"name", r.Str("name")},
                       {"role", r.Str("role")},
                       {"tenant", r.Str("tenant")},
                       {"rights", r.JsonOf("rights")},
                       {"created", FormatRfc3339(TimePoint(std::chrono::milliseconds(r.Int("created_ms"))))}});
  }
  return internal::PageInMemory("tokens", std::move(out), page, "id", false);
}

Status Manager::DeleteToken(std::string_view id) {
  if (id == "bootstrap-admin") {
    return FailedPreconditionError("the bootstrap admin token comes from the config file; change admin_token there");
  }
  UW_ASSIGN_OR_RETURN(SqlRow r, store_->QueryOne("SELECT token_hash FROM api_tokens WHERE id = ?", {std::string(id)},
                                                 "token '" + std::string(id) + "' not found"));
  UW_RETURN_IF_ERROR(store_->Transact([&]() -> Status {
    UW_RETURN_IF_ERROR(store_->Exec("DELETE FROM api_tokens WHERE id = ?", {std::string(id)}));
    return AddEvent("token.revoked", id, "", Json::object());
  }));
  std::lock_guard l(tokens_mu_);
  tokens_.erase(r.Str("token_hash"));
  return Status::Ok();
}

// ---------------------------------------------------------------------------------------------
// Idempotency

Result<std::optional<Manager::StoredResponse>> Manager::FindIdempotent(const std::string& principal,
                                                                       const std::string& key) {
  UW_ASSIGN_OR_RETURN(auto rows,
                      store_->Query("SELECT * FROM idempotency WHERE principal = ? AND key = ?", {principal, key}));
  if (rows.empty()) return std::optional<StoredResponse>();
  StoredResponse r{static_cast<int>(rows[0].Int("status")), rows[0].Str("response"), rows[0].Str("body_hash"),
                   rows[0].Str("method"), rows[0].Str("path")};
  return std::optional<StoredResponse>(std::move(r));
}

Status Manager::SaveIdempotent(const std::string& principal, const std::string& key, const StoredResponse& r) {
  return store_->Exec(
      "INSERT INTO idempotency(principal, key, method, path, body_hash, status, response, created_ms) VALUES "
      "(?, ?, ?, ?, ?, ?, ?, ?)",
      {principal, key, r.method, r.path, r.body_hash, int64_t{r.status}, r.body, NowMs()});
}

}  // namespace uw::manager
