// Storage heartbeats (heartbeat.h): one RADOS object's omap, a key per host.
#include "storage/heartbeat.h"

#include <rados/librados.h>
#include <spdlog/spdlog.h>

#include <cerrno>
#include <chrono>

#include "storage/internal.h"

namespace uw::storage {
namespace {

constexpr uint64_t kPage = 512;  // keys per omap read

class RadosHeartbeats final : public StorageHeartbeats {
 public:
  explicit RadosHeartbeats(const RbdConfig& c)
      : pool_(c, "storage heartbeats in pool '" + c.pool + "' (" + c.config_file + ")") {}
  Status Connect() { return pool_.Connect(); }

  Status Beat(const std::string& host, const std::string& value) override {
    rados_write_op_t op = rados_create_write_op();
    const char* keys[] = {host.c_str()};
    const char* vals[] = {value.data()};
    const size_t lens[] = {value.size()};
    rados_write_op_omap_set(op, keys, vals, lens, 1);
    const int r = rados_write_op_operate(op, pool_.io(), kHeartbeatObject, nullptr, 0);
    rados_release_write_op(op);
    if (r < 0) return pool_.Error(r, "host " + host + "'s heartbeat");
    return Status::Ok();
  }

  Result<std::map<std::string, std::string>> ReadAll() override {
    std::map<std::string, std::string> out;
    std::string after;
    for (;;) {
      rados_read_op_t op = rados_create_read_op();
      rados_omap_iter_t it = nullptr;
      unsigned char more = 0;
      int rval = 0;
      rados_read_op_omap_get_vals2(op, after.c_str(), "", kPage, &it, &more, &rval);
      int r = rados_read_op_operate(op, pool_.io(), kHeartbeatObject, 0);
      if (r == 0 && rval < 0) r = rval;
      if (r == 0) {
        char* key = nullptr;
        char* val = nullptr;
        size_t key_len = 0, val_len = 0;
        while (rados_omap_get_next2(it, &key, &val, &key_len, &val_len) == 0 && key != nullptr) {
          after.assign(key, key_len);
          out[after] = std::string(val == nullptr ? "" : val, val_len);
        }
      }
      if (it != nullptr) rados_omap_get_end(it);
      rados_release_read_op(op);
      if (r == -ENOENT) return out;  // no host has beaten yet
      if (r < 0) return pool_.Error(r, "reading the hosts' heartbeats");
      if (more == 0) return out;
    }
  }

 private:
  internal::RadosPool pool_;
};

}  // namespace

Result<std::unique_ptr<StorageHeartbeats>> OpenStorageHeartbeats(const RbdConfig& config) {
  UW_RETURN_IF_ERROR(internal::CheckRbdConfig(config));
  auto hb = std::make_unique<RadosHeartbeats>(config);
  UW_RETURN_IF_ERROR(hb->Connect());
  return std::unique_ptr<StorageHeartbeats>(std::move(hb));
}

std::string_view BeatStateName(BeatState s) {
  switch (s) {
    case BeatState::kLive:
      return "live";
    case BeatState::kStopped:
      return "stopped";
    case BeatState::kUnknown:
      break;
  }
  return "unknown";
}

void HeartbeatWatch::Observe(const std::map<std::string, std::string>& values, int64_t now_ms) {
  // A read after a long gap (the manager could not reach Ceph): what changed meanwhile changed at
  // some unknown time, so every host starts afresh.
  if (last_read_ms_ >= 0 && now_ms - last_read_ms_ >= timeout_ms_) hosts_.clear();
  last_read_ms_ = now_ms;
  for (const auto& [host, value] : values) {
    auto [it, added] = hosts_.try_emplace(host, Seen{value, now_ms, -1});
    if (!added && it->second.value != value) {
      it->second.value = value;
      it->second.changed_ms = now_ms;
    }
  }
}

BeatState HeartbeatWatch::State(const std::string& host, int64_t now_ms) const {
  if (last_read_ms_ < 0 || now_ms - last_read_ms_ >= timeout_ms_) return BeatState::kUnknown;
  auto it = hosts_.find(host);
  if (it == hosts_.end()) return BeatState::kUnknown;
  const Seen& s = it->second;
  // Judged at the last good read: a value is stopped only if reads saw it stand for the timeout.
  if (s.changed_ms >= 0) return last_read_ms_ - s.changed_ms < timeout_ms_ ? BeatState::kLive : BeatState::kStopped;
  return last_read_ms_ - s.first_seen_ms >= timeout_ms_ ? BeatState::kStopped : BeatState::kUnknown;
}

std::string HeartbeatWatch::Value(const std::string& host) const {
  auto it = hosts_.find(host);
  return it == hosts_.end() ? "" : it->second.value;
}

int64_t HeartbeatWatch::UnchangedMs(const std::string& host, int64_t now_ms) const {
  auto it = hosts_.find(host);
  if (it == hosts_.end()) return 0;
  return now_ms - (it->second.changed_ms >= 0 ? it->second.changed_ms : it->second.first_seen_ms);
}

HeartbeatWriter::HeartbeatWriter(RbdConfig config, std::string host, std::chrono::milliseconds interval)
    : config_(std::move(config)), host_(std::move(host)), interval_(interval) {}

HeartbeatWriter::~HeartbeatWriter() { Stop(); }

void HeartbeatWriter::Start() {
  {
    std::lock_guard l(mu_);
    stopping_ = false;
  }
  thread_ = std::thread([this] { Loop(); });
}

void HeartbeatWriter::Stop() {
  {
    std::lock_guard l(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

int64_t HeartbeatWriter::beats() const {
  std::lock_guard l(mu_);
  return beats_;
}

void HeartbeatWriter::Loop() {
  // The value changes with every beat; the start time keeps a restarted agent's values new.
  const std::string start = std::to_string(
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
          .count());
  std::unique_ptr<StorageHeartbeats> hb;
  std::string last_error;
  int64_t seq = 0;
  std::unique_lock l(mu_);
  while (!stopping_) {
    l.unlock();
    Status s = Status::Ok();
    if (!hb) {
      auto opened = OpenStorageHeartbeats(config_);
      if (opened.ok()) hb = std::move(*opened);
      s = opened.status();
    }
    if (hb) s = hb->Beat(host_, start + "-" + std::to_string(++seq));
    if (!s.ok() && s.message() != last_error) {
      spdlog::warn("storage heartbeat: {}", s.ToString());  // once per distinct error
    } else if (s.ok() && !last_error.empty()) {
      spdlog::info("storage heartbeat: beating again");
    }
    last_error = s.ok() ? "" : s.message();
    if (!s.ok() && s.code() != StatusCode::kUnavailable) hb.reset();  // connect afresh
    l.lock();
    if (s.ok()) ++beats_;
    cv_.wait_for(l, interval_, [this] { return stopping_; });
  }
}

}  // namespace uw::storage
