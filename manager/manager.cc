#include "manager/manager.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <set>

#include "api/http.h"
#include "common/id.h"
#include "manager/auth.h"
#include "manager/drs_controller.h"
#include "manager/event_log.h"
#include "manager/guest_listing.h"
#include "manager/guest_service.h"
#include "manager/guest_table.h"
#include "manager/ha_service.h"
#include "manager/host_sessions.h"
#include "manager/host_table.h"
#include "manager/internal.h"
#include "manager/lease_service.h"
#include "manager/metering_service.h"
#include "manager/migration_dispatcher.h"
#include "manager/network_service.h"
#include "manager/power_service.h"
#include "manager/snapshot_builder.h"
#include "manager/storage_service.h"
#include "manager/task_journal.h"
#include "placement/placement.h"
#include "vmm/hypervisor.h"

namespace uw::manager {

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
  auto lookup = [this](const std::string& host) { return hosts_->AddressOf(host); };
  agents_ = std::make_unique<AgentDirectory>(std::move(lookup), std::move(factory));
}

Manager::~Manager() { Stop(); }

int64_t Manager::NowMs() const { return ToUnixMillis(clock_.Now()); }

Status Manager::Start() {
  ha_.reset();
  guest_service_.reset();  // a manager started again reopens its store
  storage_.reset();
  leases_.reset();
  sessions_.reset();
  power_.reset();
  drs_.reset();
  migrations_.reset();
  listing_.reset();
  tasks_.reset();
  hosts_.reset();
  guests_.reset();
  tokens_.reset();
  events_.reset();
  UW_ASSIGN_OR_RETURN(store_, Store::Open(config_.db_path));
  events_ = std::make_unique<internal::EventLog>(*store_, clock_);
  UW_RETURN_IF_ERROR(events_->Start());
  tokens_ = std::make_unique<internal::TokenRegistry>(*store_, *events_, clock_);
  UW_RETURN_IF_ERROR(tokens_->Load(config_.admin_token));
  tasks_ = std::make_unique<internal::TaskJournal>(*store_, *events_, clock_);
  hosts_ = std::make_unique<internal::HostTable>(*store_);
  guests_ = std::make_unique<internal::GuestTable>(*store_);
  listing_ = std::make_unique<internal::GuestListing>(*store_, *guests_);
  // What the components ask of the manager itself.
  auto agent_of = [this](const std::string& host) { return AgentOf(host); };
  auto new_task = [this](std::string_view kind, std::string_view subject, std::string_view tenant,
                         const Json& request) { return NewTask(kind, subject, tenant, request); };
  // leases_ is made below, before any heartbeat can find a guest.
  auto open_lease = [this](std::string_view guest, int64_t now_ms, std::string_view why) {
    return leases_->Reopen(guest, now_ms, why);
  };
  auto asked = [this](std::string_view guest, int64_t asked_at_ms) { leases_->Asked(guest, asked_at_ms); };
  power_ = std::make_unique<internal::PowerService>(
      internal::PowerService::Deps{.store = *store_,
                                   .events = *events_,
                                   .hosts = *hosts_,
                                   .guests = *guests_,
                                   .tasks = *tasks_,
                                   .clock = clock_,
                                   .config = config_,
                                   .sleep = [this](Duration d) { return poll_sleeper_(d); },
                                   .agent_of = agent_of});
  sessions_ = std::make_unique<internal::HostSessions>(internal::HostSessions::Deps{
      .store = *store_,
      .events = *events_,
      .hosts = *hosts_,
      .guests = *guests_,
      .tasks = *tasks_,
      .clock = clock_,
      .config = config_,
      .agent_of = agent_of,
      .new_task = new_task,
      .open_lease = open_lease,
      .asked = asked,
      .power_heard = [this](std::string_view host, bool joined) { return power_->Heard(host, joined); }});
  leases_ = std::make_unique<internal::LeaseService>(internal::LeaseService::Deps{
      .store = *store_,
      .events = *events_,
      .tasks = *tasks_,
      .guests = *guests_,
      .clock = clock_,
      .config = config_,
      .agent_of = agent_of,
      .enqueue = [this](const std::string& id) { Enqueue(id); },
      .visible = [this](const Principal& p, std::string_view name) { return VisibleGuest(p, name); }});
  metering_ = std::make_unique<internal::MeteringService>(*store_, clock_, config_);
  storage_ = std::make_unique<internal::StorageService>(internal::StorageService::Deps{
      .store = *store_,
      .events = *events_,
      .clock = clock_,
      .config = config_,
      .guests = *guests_,
      .agent_of = agent_of,
      .visible_guest = [this](const Principal& p, std::string_view name) { return VisibleGuest(p, name); },
      .new_task = [this](std::string_view kind, std::string_view subject,
                         const Json& request) { return NewTask(kind, subject, "", request); }});
  guest_service_ = std::make_unique<internal::GuestService>(internal::GuestService::Deps{
      .store = *store_,
      .events = *events_,
      .hosts = *hosts_,
      .guests = *guests_,
      .tasks = *tasks_,
      .leases = *leases_,
      .clock = clock_,
      .config = config_,
      .placement_mu = placement_mu_,
      .snapshot = [this](const placement::Vm* incoming) { return BuildSnapshot(incoming); },
      .agent_of = agent_of,
      .enqueue = [this](const std::string& id) { Enqueue(id); },
      .new_task = new_task,
      .admit_to_pool = [this](GuestCreate& req) { return AdmitToPool(req); },
      .remove_from_rules = [this](const std::string& guest) { return RemoveGuestFromRules(guest); },
      .attach_devices = [this](GuestCreate& req) { return AttachDevices(req); },
      .release_devices = [this](const std::string& g, const std::string& t) { ReleaseDevices(g, t); },
      .copy_images = [this](AgentClient& agent, const Json& spec) { return storage_->CopyBaseImages(agent, spec); }});
  // Hosts are not known to be alive after a restart until they heartbeat again; give them a full
  // timeout from now rather than judging them by heartbeats the previous process received.
  UW_RETURN_IF_ERROR(hosts_->ExtendDeadlines(NowMs()));
  {
    std::lock_guard l(mu_);
    stopping_ = false;
  }
  UW_RETURN_IF_ERROR(tasks_->Recover([this](const std::string& id) { Enqueue(id); }));
  migrations_ = std::make_unique<internal::MigrationDispatcher>(
      *store_, *tasks_, *events_, config_.migration_caps,
      [this](const std::string& task_id, bool resume) { RunMigration(task_id, resume); });
  UW_RETURN_IF_ERROR(migrations_->Recover());
  MakeDrsAndHa();
  for (int i = 0; i < config_.task_workers; ++i) workers_.emplace_back([this] { WorkerLoop(); });
  monitor_ = std::thread([this] { MonitorLoop(); });
  migrations_->Start();
  leases_->Start();
  storage_->Start();
  ha_->Start();
  UW_RETURN_IF_ERROR(AddEvent("manager.started", "manager", "", {{"schema_version", store_->schema_version()}}));
  return Status::Ok();
}

// A guest create's network ports and catalogue disks (GuestService's attach_devices): all or nothing.
Status Manager::AttachDevices(GuestCreate& req) {
  internal::NetworkService networks(*store_, clock_, *events_);
  UW_RETURN_IF_ERROR(networks.AttachForCreate(req));
  Status disks = storage_->AttachForCreate(req);
  if (!disks.ok()) networks.ReleaseGuest(req.name);
  return disks;
}

// Their release once the guest is gone or its create failed (GuestService's release_devices).
void Manager::ReleaseDevices(const std::string& guest, const std::string& tenant) {
  storage_->ReleaseGuest(guest, tenant);
  internal::NetworkService(*store_, clock_, *events_).ReleaseGuest(guest);
}

// The controllers that act on the engine's plans: DRS (with DPM) and HA. Part of Start.
void Manager::MakeDrsAndHa() {
  drs_ = std::make_unique<internal::DrsController>(internal::DrsController::Deps{
      .store = *store_,
      .events = *events_,
      .tasks = *tasks_,
      .guests = *guests_,
      .clock = clock_,
      .interval_ms = config_.drs_interval_ms,
      .snapshot = [this] { return BuildSnapshot(); },
      .start_moves = [this](const std::vector<placement::Move>& moves,
                            const std::vector<std::string>& recs) { return StartMoves(moves, recs, Json::object()); },
      .power = [this](std::string_view host, std::string_view action) { return power_->Act(host, action); },
      .power_of = [this](std::string_view host) { return power_->Get(host, false); }});
  ha_ = std::make_unique<internal::HaService>(
      internal::HaService::Deps{.store = *store_,
                                .events = *events_,
                                .guests = *guests_,
                                .tasks = *tasks_,
                                .leases = *leases_,
                                .power = *power_,
                                .clock = clock_,
                                .config = config_,
                                .agent_of = [this](const std::string& host) { return AgentOf(host); },
                                .drs_config = [this] { return drs_->Config(); },
                                .placement_mu = placement_mu_,
                                .snapshot = [this] { return BuildSnapshot(); },
                                .enqueue = [this](const std::string& id) { Enqueue(id); }});
}

void Manager::Stop() {
  {
    std::lock_guard l(mu_);
    if (stopping_ && workers_.empty() && !monitor_.joinable()) return;
    stopping_ = true;
  }
  cv_.notify_all();
  if (tasks_) tasks_->WakeWaiters();
  for (auto& t : workers_) t.join();
  workers_.clear();
  if (monitor_.joinable()) monitor_.join();
  if (ha_) ha_->Stop();
  if (storage_) storage_->Stop();
  if (leases_) leases_->Stop();
  if (migrations_) migrations_->Stop();
  if (events_) events_->Stop();
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
      if (Status s = tasks_->Finish(id, InternalError(std::string("task aborted: ") + e.what()), nullptr); !s.ok()) {
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
    // Usage samples are kept for a day; metering makes usage records of them every minute.
    if (Status s = hosts_->PruneUsage(NowMs() - 86'400'000); !s.ok()) {
      spdlog::warn("pruning usage samples: {}", s.ToString());
    }
    if (Status s = metering_->Pass(); !s.ok()) spdlog::warn("metering: {}", s.ToString());
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
  if (tokens_ == nullptr) return FailedPreconditionError("the manager is not started");
  return tokens_->Authenticate(bearer_token);
}

// Leases: the lease service's (lease_service.h).
Result<Page<LeaseRecord>> Manager::ListLeases(const Principal& p, std::string_view guest, const PageQuery& page) {
  return leases_->List(p, guest, page);
}
Result<LeaseRecord> Manager::GetLease(const Principal& p, std::string_view id) { return leases_->Get(p, id); }
Result<LeaseRecord> Manager::ExtendLease(const Principal& p, std::string_view id, const LeaseExtend& req) {
  return leases_->Extend(p, id, req);
}
Result<LeaseRecord> Manager::ReleaseLease(const Principal& p, std::string_view id) { return leases_->Release(p, id); }
Result<NoticeRecord> Manager::ReclaimLease(const Principal& p, std::string_view id, const LeaseReclaim& req) {
  return leases_->Reclaim(p, id, req);
}
Result<HostReclaim> Manager::ReclaimFromHost(const Principal& p, std::string_view host, const HostReclaimRequest& req) {
  UW_RETURN_IF_ERROR(hosts_->SessionOf(std::string(host)).status());
  return leases_->ReclaimFromHost(p, host, req);
}
Result<Page<NoticeRecord>> Manager::ListNotices(const Principal& p, std::string_view guest, const PageQuery& page) {
  return leases_->ListNotices(p, guest, page);
}
Result<NoticeRecord> Manager::GetNotice(const Principal& p, std::string_view id) { return leases_->GetNotice(p, id); }
Result<Page<ImageRecord>> Manager::ListImages(const Principal& p, const PageQuery& page) {
  return storage_->ListImages(p, page);
}
Result<ImageRecord> Manager::GetImage(const Principal& p, std::string_view name) { return storage_->GetImage(p, name); }
Result<Task> Manager::ImportImage(const Principal& p, const ImageImport& req) { return storage_->StartImport(p, req); }
Status Manager::DeleteImage(const Principal& p, std::string_view name) { return storage_->DeleteImage(p, name); }
Result<Page<VolumeRecord>> Manager::ListVolumes(const Principal& p, const PageQuery& page) {
  return storage_->ListVolumes(p, page);
}
Result<VolumeRecord> Manager::GetVolume(const Principal& p, std::string_view name) {
  return storage_->GetVolume(p, name);
}
Result<VolumeRecord> Manager::CreateVolume(const Principal& p, const VolumeCreate& req) {
  return storage_->CreateVolume(p, req);
}
Result<VolumeRecord> Manager::ResizeVolume(const Principal& p, std::string_view name, int64_t size_gib) {
  return storage_->ResizeVolume(p, name, size_gib);
}
Status Manager::DeleteVolume(const Principal& p, std::string_view name) { return storage_->DeleteVolume(p, name); }
Result<VolumeRecord> Manager::AttachVolume(const Principal& p, std::string_view name, std::string_view guest) {
  return storage_->AttachVolume(p, name, guest);
}
Result<VolumeRecord> Manager::DetachVolume(const Principal& p, std::string_view name) {
  return storage_->DetachVolume(p, name);
}
Result<std::vector<StorageQuota>> Manager::ListStorageQuotas(const Principal& p) { return storage_->ListQuotas(p); }
Result<StorageQuota> Manager::SetStorageQuota(const Principal& p, std::string_view tenant, std::optional<int64_t> gib) {
  return storage_->SetQuota(p, tenant, gib);
}
Result<StorageInfo> Manager::GetStorageInfo(const Principal& p) { return storage_->Info(p); }

Result<std::vector<Budget>> Manager::ListBudgets(const Principal& p) { return leases_->ListBudgets(p); }
Result<Budget> Manager::SetBudget(const Principal& p, std::string_view tenant, int64_t per_hour) {
  return leases_->SetBudget(p, tenant, per_hour);
}
Result<NoticeRecord> Manager::AnswerNotice(const Principal& p, std::string_view id, const NoticeAnswer& answer) {
  return leases_->Answer(p, id, answer);
}
Result<Page<lease::Repossession>> Manager::ListRepossessions(const Principal& p, std::string_view guest,
                                                             const PageQuery& page) {
  return leases_->ListRepossessions(p, guest, page);
}
Status Manager::RunLeases() { return leases_->Tick(); }

// DRS: the controller's (drs_controller.h).
Result<DrsConfig> Manager::GetDrsConfig() { return drs_->Config(); }
Result<DrsConfig> Manager::SetDrsConfig(const DrsConfig& config) { return drs_->SetConfig(config); }
Result<Page<Recommendation>> Manager::ListRecommendations(bool pending_only, const PageQuery& page) {
  return drs_->Recommendations(pending_only, page);
}
Result<Task> Manager::ApplyRecommendation(std::string_view id) { return drs_->Apply(id); }
Result<Json> Manager::PowerRecommendations() { return drs_->PowerRecommendations(); }
Result<StartedMoves> Manager::ApplyAllRecommendations() { return drs_->ApplyAll(); }
Result<placement::Plan> Manager::DryRunPlan(const placement::Snapshot* snapshot) { return drs_->DryRun(snapshot); }
Result<DrsPass> Manager::RunDrs() { return drs_->RunPass(); }

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

Result<std::vector<Event>> Manager::EventsSince(const Principal& p, int64_t since, int64_t limit) {
  if (events_ == nullptr) return FailedPreconditionError("the manager is not started");
  return events_->Since(p, since, limit);
}

// ---------------------------------------------------------------------------------------------
// Tokens

Result<NewToken> Manager::CreateToken(std::string_view name, Role role, std::string_view tenant,
                                      const std::vector<std::string>& rights) {
  if (tokens_ == nullptr) return FailedPreconditionError("the manager is not started");
  return tokens_->Create(name, role, tenant, rights);
}

Result<Page<TokenInfo>> Manager::ListTokens(const PageQuery& page) {
  if (tokens_ == nullptr) return FailedPreconditionError("the manager is not started");
  UW_ASSIGN_OR_RETURN(auto all, tokens_->List());
  return internal::PageList(
      std::move(all), page, [](const TokenInfo& t) -> const std::string& { return t.id; }, false);
}

Status Manager::DeleteToken(std::string_view id) {
  if (tokens_ == nullptr) return FailedPreconditionError("the manager is not started");
  return tokens_->Delete(id);
}

}  // namespace uw::manager
