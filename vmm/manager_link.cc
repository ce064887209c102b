#include "vmm/manager_link.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

namespace uw::vmm {
namespace {
// Numbered samples a heartbeat carries at most: the manager's heartbeat route takes 1 MiB, and
// the guest list of a host with 1,024 guests is about 190 KB. A backlog drains a few samples a beat.
constexpr size_t kSampleBudgetBytes = 384 << 10;
}  // namespace

AgentSource RouterSource(const api::Router& router, std::string agent_token) {
  return [&router, token = std::move(agent_token)](std::string_view path) -> Result<Json> {
    api::Request req;
    req.method = "GET";
    req.path = std::string(path);
    req.headers["authorization"] = "Bearer " + token;
    api::Response r = router.Dispatch(std::move(req));
    if (r.status < 200 || r.status >= 300) return api::StatusFromHttp(r.status, r.body);
    return ParseJson(r.body, "agent " + std::string(path));
  };
}

ManagerLink::ManagerLink(ManagerLinkOptions options, AgentSource source)
    : options_(std::move(options)),
      source_(std::move(source)),
      client_(api::ClientOptions{options_.manager_url, "", options_.request_timeout_ms, 3000}),
      interval_ms_(options_.heartbeat_interval_ms) {
  if (!options_.samples_path.empty()) {
    if (Status s = samples_.Open(options_.samples_path); !s.ok()) {
      spdlog::warn("{}; numbered samples are kept in memory only", s.ToString());
    }
  }
}

ManagerLink::~ManagerLink() { Stop(); }

Status ManagerLink::Join() {
  UW_ASSIGN_OR_RETURN(Json host, source_("/api/v1/host"));
  Json body = {{"name", options_.host_name},
               {"agent_url", options_.agent_url},
               {"agent_token", options_.agent_token},
               {"capacity", {{"cpu_cores", host.value("cpu_cores", 0)}, {"memory_mib", host.value("memory_mib", 0)}}},
               {"info",
                {{"hostname", host.value("hostname", "")},
                 {"kinds", host.value("kinds", Json::array())},
                 {"images", host.value("images", Json::array())},
                 {"kvm", host.value("kvm", Json::object())},
                 {"libvirt_version", host.value("libvirt_version", 0)}}}};
  UW_ASSIGN_OR_RETURN(
      auto r, client_.Do("POST", "/api/v1/hosts/join", body.dump(),
                         {{"Authorization", "Bearer " + options_.join_token}, {"Content-Type", "application/json"}}));
  if (r.status != 201 && r.status != 200) {
    return api::StatusFromHttp(r.status, r.body).WithContext("joining manager " + options_.manager_url);
  }
  UW_ASSIGN_OR_RETURN(Json answer, ParseJson(r.body, "join answer"));
  if (!answer.contains("host_token") || !answer["host_token"].is_string()) {
    return InternalError("join answer from " + options_.manager_url + " has no host_token");
  }
  std::lock_guard l(mu_);
  host_token_ = answer["host_token"].get<std::string>();
  if (answer.contains("heartbeat_interval_ms") && answer["heartbeat_interval_ms"].is_number_integer()) {
    interval_ms_ = std::max(50, answer["heartbeat_interval_ms"].get<int>());
  }
  spdlog::info("joined manager {} as host {}", options_.manager_url, options_.host_name);
  return Status::Ok();
}

namespace {

// Copies the listed members of `from` that are present.
Json Pick(const Json& from, std::initializer_list<const char*> keys) {
  Json out = Json::object();
  if (!from.is_object()) return out;
  for (const char* k : keys) {
    if (auto it = from.find(k); it != from.end()) out[k] = *it;
  }
  return out;
}

// What a counter counted since `before`; one that went back (a reset) counted `now` since then.
uint64_t Delta(uint64_t now, uint64_t before) { return now >= before ? now - before : now; }

uint64_t Counter(const Json& g, const char* key) {
  auto it = g.find(key);
  return it != g.end() && it->is_number_unsigned() ? it->get<uint64_t>() : 0;
}

}  // namespace

SampleBook::~SampleBook() {
  if (log_) std::fclose(log_);
}

Status SampleBook::Open(const std::string& path) {
  {
    std::ifstream in(path);
    int64_t acked = 0;
    for (std::string line; in && std::getline(in, line);) {
      Json j = Json::parse(line, nullptr, false);
      if (!j.is_object()) break;  // a line cut short by a kill: what follows it cannot be trusted
      if (auto ack = j.find("ack"); ack != j.end() && ack->is_number_integer()) {
        acked = std::max(acked, ack->get<int64_t>());
      } else if (auto seq = j.find("seq"); seq != j.end() && seq->is_number_integer()) {
        next_seq_ = std::max(next_seq_, seq->get<int64_t>() + 1);
        if (seq->get<int64_t>() > acked) {
          pending_.push_back({seq->get<int64_t>(), line});
          pending_bytes_ += line.size();
        }
      } else if (auto next = j.find("next_seq"); next != j.end() && next->is_number_integer()) {
        next_seq_ = std::max(next_seq_, next->get<int64_t>());
      }
    }
    Ack(acked);
    DropOverflow();
    if (!pending_.empty()) newest_ = pending_.back().json;
  }
  path_ = path;
  Compact();
  if (!log_) return UnavailableError("samples log " + path + ": cannot be written");
  return Status::Ok();
}

void SampleBook::Log(const std::string& line) {
  if (!log_) return;
  if (std::fwrite(line.data(), 1, line.size(), log_) != line.size() || std::fputc('\n', log_) == EOF ||
      std::fflush(log_) != 0) {
    spdlog::warn("samples log {}: write failed; samples are kept in memory only", path_);
    std::fclose(log_);
    log_ = nullptr;
    return;
  }
  log_bytes_ += line.size() + 1;
}

void SampleBook::Compact() {
  if (path_.empty()) return;
  if (log_) std::fclose(log_);
  log_ = nullptr;
  const std::string tmp = path_ + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << Json{{"next_seq", next_seq_}}.dump() << '\n';
    for (const Sample& s : pending_) out << s.json << '\n';
    if (!out.flush()) {
      spdlog::warn("samples log {}: cannot be written; samples are kept in memory only", tmp);
      return;
    }
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path_, ec);
  if (ec) {
    spdlog::warn("samples log {}: {}; samples are kept in memory only", path_, ec.message());
    return;
  }
  log_ = std::fopen(path_.c_str(), "a");
  log_bytes_ = pending_bytes_ + pending_.size() + 32;
}

void SampleBook::Add(const Json& stats) {
  if (!stats.is_object() || !stats.contains("sampled_at") || !stats["sampled_at"].is_string()) return;
  const std::string at = stats["sampled_at"].get<std::string>();
  if (at == last_sampled_at_) return;  // the same sample as the last heartbeat's
  last_sampled_at_ = at;
  Json guests = Json::array();
  std::map<std::string, Counters> next;
  for (const Json& g : stats.value("guests", Json::array())) {
    if (!g.is_object() || !g.contains("name") || !g["name"].is_string()) continue;
    const std::string name = g["name"].get<std::string>();
    Counters c{Counter(g, "cpu_time_ns"), Counter(g, "net_rx_bytes") + Counter(g, "net_tx_bytes"),
               Counter(g, "block_rd_bytes") + Counter(g, "block_wr_bytes")};
    Json one = Pick(g, {"name", "cpu_cores", "memory_used_mib"});
    auto prev = last_.find(name);
    one["cpu_us"] = prev == last_.end() ? 0 : Delta(c.cpu_ns, prev->second.cpu_ns) / 1000;
    one["net_bytes"] = prev == last_.end() ? 0 : Delta(c.net, prev->second.net);
    one["disk_bytes"] = prev == last_.end() ? 0 : Delta(c.disk, prev->second.disk);
    // The first sample of a guest counts nothing: its counters are where counting starts (a new
    // guest, a guest that arrived, or this agent started again and what it had counted is gone).
    if (prev == last_.end()) one["baseline"] = true;
    if (prev != last_.end()) c.cpu_ns -= Delta(c.cpu_ns, prev->second.cpu_ns) % 1000;  // carry the sub-µs rest
    next[name] = c;
    guests.push_back(std::move(one));
  }
  last_ = std::move(next);  // a guest gone from the sample is forgotten
  const int64_t seq = next_seq_++;
  newest_ = Json{{"seq", seq}, {"sampled_at", at}, {"guests", std::move(guests)}}.dump();
  pending_.push_back({seq, newest_});
  pending_bytes_ += newest_.size();
  DropOverflow();
  Log(newest_);
  if (log_ && LogMostlyDone()) Compact();  // dropped ones pile up
}

void SampleBook::DropOverflow() {
  while (pending_.size() > 1 && (pending_.size() > kMaxPending || pending_bytes_ > kMaxPendingBytes)) {
    pending_bytes_ -= pending_.front().json.size();
    pending_.pop_front();
    ++dropped_;
  }
}

Json SampleBook::Pending(size_t budget) const {
  Json out = Json::array();
  size_t used = 0;
  for (const Sample& s : pending_) {
    if (!out.empty() && used + s.json.size() > budget) break;
    out.push_back(Json::parse(s.json));
    used += s.json.size();
  }
  if (out.empty() && !newest_.empty()) out.push_back(Json::parse(newest_));
  return out;
}

void SampleBook::Ack(int64_t seq) {
  const size_t before = pending_.size();
  while (!pending_.empty() && pending_.front().seq <= seq) {
    pending_bytes_ -= pending_.front().json.size();
    pending_.pop_front();
  }
  if (!log_ || pending_.size() == before) return;
  if (pending_.empty() || LogMostlyDone()) {
    Compact();
  } else {
    Log(Json{{"ack", seq}}.dump());
  }
}

Json HeartbeatBody(const Json& stats, const Json& guests, const Json& samples) {
  Json out_stats = Pick(stats, {"sampled_at"});
  if (samples.is_array()) {
    out_stats["samples"] = samples;
  } else {
    Json usage = Json::array();
    if (stats.is_object() && stats.contains("guests") && stats["guests"].is_array()) {
      for (const auto& g : stats["guests"]) usage.push_back(Pick(g, {"name", "cpu_cores", "memory_used_mib"}));
    }
    out_stats["guests"] = std::move(usage);
  }
  Json list = Json::array();
  if (guests.is_array()) {
    for (const auto& g : guests) {
      Json one = Pick(g, {"name", "state", "kind", "vcpus", "max_vcpus", "memory_mib", "max_memory_mib", "health",
                          "unresponsive_since", "asked_at_ms"});
      if (g.is_object() && g.contains("crash")) one["crash"] = Pick(g["crash"], {"at", "console_tail"});
      list.push_back(std::move(one));
    }
  }
  Json body = Json::object();
  body["stats"] = std::move(out_stats);
  body["guests"] = std::move(list);
  return body;
}

Status ManagerLink::Heartbeat() {
  std::string token;
  {
    std::lock_guard l(mu_);
    token = host_token_;
  }
  if (token.empty()) {
    UW_RETURN_IF_ERROR(Join());
    std::lock_guard l(mu_);
    token = host_token_;
  }
  UW_ASSIGN_OR_RETURN(Json stats, source_("/api/v1/stats"));
  UW_ASSIGN_OR_RETURN(Json guests, source_("/api/v1/guests"));
  Json samples;
  {
    std::lock_guard l(mu_);
    samples_.Add(stats);
    samples = samples_.Pending(kSampleBudgetBytes);
  }
  Json body = HeartbeatBody(stats, guests.value("guests", Json::array()), samples);
  UW_ASSIGN_OR_RETURN(auto r, client_.Do("POST", "/api/v1/hosts/" + options_.host_name + "/heartbeat", body.dump(),
                                         {{"Authorization", "Bearer " + token}, {"Content-Type", "application/json"}}));
  if (r.status == 401 || r.status == 404) {
    std::lock_guard l(mu_);
    host_token_.clear();  // join again next time
  }
  if (r.status != 200) return api::StatusFromHttp(r.status, r.body).WithContext("heartbeat to " + options_.manager_url);
  // The manager says up to which sample it stored them; those are not sent again.
  const Json ack = Json::parse(r.body, nullptr, false);
  std::lock_guard l(mu_);
  if (ack.is_object() && ack.contains("samples_through") && ack["samples_through"].is_number_integer()) {
    samples_.Ack(ack["samples_through"].get<int64_t>());
  }
  ++heartbeats_;
  return Status::Ok();
}

void ManagerLink::Start() {
  {
    std::lock_guard l(mu_);
    stopping_ = false;
  }
  thread_ = std::thread([this] {
    int backoff_ms = 0;
    std::unique_lock l(mu_);
    while (!stopping_) {
      l.unlock();
      Status s = Heartbeat();
      if (!s.ok()) {
        backoff_ms = std::min(backoff_ms == 0 ? 200 : backoff_ms * 2, 10000);
        spdlog::warn("manager link: {} (retrying in {} ms)", s.ToString(), backoff_ms);
      } else {
        backoff_ms = 0;
      }
      l.lock();
      int wait = backoff_ms > 0 ? backoff_ms : interval_ms_;
      cv_.wait_for(l, std::chrono::milliseconds(wait), [this] { return stopping_; });
    }
  });
}

void ManagerLink::Stop() {
  {
    std::lock_guard l(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

bool ManagerLink::joined() const {
  std::lock_guard l(mu_);
  return !host_token_.empty();
}

int ManagerLink::heartbeats_sent() const {
  std::lock_guard l(mu_);
  return heartbeats_;
}

}  // namespace uw::vmm
