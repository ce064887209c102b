// Private to storage/: what the two backends share.
#pragma once

#include <rados/librados.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "common/json.h"
#include "common/status.h"
#include "storage/storage.h"

namespace uw::storage::internal {

// Runs `argv` (a qemu-img command) with `timeout`. A non-zero exit becomes an error whose message
// is `what` and the tool's output on one line; its code is kFailedPrecondition when the tool says
// another process holds the image's lock ("in use"), kNotFound when it says the file is missing,
// else kInternal. kUnavailable when the tool ran past its deadline or could not be started.
Result<std::string> RunTool(const std::vector<std::string>& argv, std::chrono::milliseconds timeout,
                            const std::string& what);

// The fields of `qemu-img info --output=json` the backends use.
struct ToolImageInfo {
  std::string format;
  int64_t virtual_bytes = 0;
  int64_t actual_bytes = 0;
  std::string backing_file;  // as written in the image
  std::vector<std::string> snapshots;
};
Result<ToolImageInfo> ParseToolImageInfo(const std::string& json_text, const std::string& what);

// A tool's output on one line: its non-empty lines joined by spaces, without "qemu-img: " prefixes.
std::string OneLine(const std::string& out);

// "a, b, c, d, e, ..." (at most five names).
std::string JoinNames(const std::vector<std::string>& names);

// kFailedPrecondition naming the clones when `image` has any (it cannot be deleted), else OK.
Status RefuseIfCloned(const std::string& backend, const ImageInfo& image);

// get(name) for each name, skipping names that vanished meanwhile (kNotFound); the first other
// error is returned.
template <typename Info, typename Get>
Result<std::vector<Info>> GetEach(const std::vector<std::string>& names, Get get) {
  std::vector<Info> out;
  for (const auto& name : names) {
    Result<Info> one = get(name);
    if (one.status().code() == StatusCode::kNotFound) continue;
    if (!one.ok()) return one.status();
    out.push_back(std::move(*one));
  }
  return out;
}

// A connection to a Ceph cluster with one pool open (the rbd backend's and the storage
// heartbeats'), closed on destruction. Every call on it is bounded by rados_osd_op_timeout and
// rados_mon_op_timeout; connecting by client_mount_timeout.
class RadosPool {
 public:
  // `describe` begins every error message ("rbd pool 'rbd' (/etc/ceph/ceph.conf)").
  RadosPool(RbdConfig config, std::string describe);
  ~RadosPool();
  RadosPool(const RadosPool&) = delete;
  RadosPool& operator=(const RadosPool&) = delete;

  // kUnavailable when no monitor answers in time, kNotFound for a missing pool,
  // kPermissionDenied when cephx refuses the user.
  Status Connect();
  // A librados/librbd return code `r` (< 0) as a Status about `what` (see storage.h for the codes).
  // After a timeout the client refreshes its OSD map: one that saw timeouts stays on a stale map.
  Status Error(int r, const std::string& what);

  rados_t cluster() const { return cluster_; }
  rados_ioctx_t io() const { return io_; }
  const RbdConfig& config() const { return c_; }
  const std::string& describe() const { return describe_; }

 private:
  const RbdConfig c_;
  const std::string describe_;
  rados_t cluster_ = nullptr;
  rados_ioctx_t io_ = nullptr;
};

// kInvalidArgument unless `config` names a config file, keyring, pool and user and positive timeouts.
Status CheckRbdConfig(const RbdConfig& config);

}  // namespace uw::storage::internal
