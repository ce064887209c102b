// A Ceph connection with one pool open (internal.h), shared by the rbd backend and the storage
// heartbeats.
#include <rados/librados.h>

#include <cerrno>
#include <cstring>

#include "storage/internal.h"

namespace uw::storage::internal {

RadosPool::RadosPool(RbdConfig config, std::string describe) : c_(std::move(config)), describe_(std::move(describe)) {}

RadosPool::~RadosPool() {
  if (io_ != nullptr) rados_ioctx_destroy(io_);
  if (cluster_ != nullptr) rados_shutdown(cluster_);
}

Status RadosPool::Connect() {
  int r = rados_create(&cluster_, c_.user.c_str());
  if (r < 0) return Error(r, "creating a cluster handle");
  if ((r = rados_conf_read_file(cluster_, c_.config_file.c_str())) < 0) return Error(r, "reading " + c_.config_file);
  const std::string op = std::to_string(c_.op_timeout_s), mount = std::to_string(c_.mount_timeout_s);
  for (const auto& [k, v] : {std::pair<std::string, std::string>{"keyring", c_.keyring},
                             {"rados_osd_op_timeout", op},
                             {"rados_mon_op_timeout", op},
                             {"client_mount_timeout", mount},
                             {"log_to_stderr", "false"},
                             {"err_to_stderr", "false"}}) {
    if ((r = rados_conf_set(cluster_, k.c_str(), v.c_str())) < 0) return Error(r, "setting " + k);
  }
  if ((r = rados_connect(cluster_)) < 0) {
    rados_shutdown(cluster_);
    cluster_ = nullptr;
    return Error(r, "connecting as client." + c_.user);
  }
  if ((r = rados_ioctx_create(cluster_, c_.pool.c_str(), &io_)) < 0) return Error(r, "opening the pool");
  return Status::Ok();
}

Status RadosPool::Error(int r, const std::string& what) {
  const int e = -r;
  std::string m = describe_ + ": " + what + ": " + std::strerror(e);
  switch (e) {
    case ENOENT:
      return NotFoundError(describe_ + ": " + what + ": does not exist");
    case EEXIST:
      return AlreadyExistsError(describe_ + ": " + what + " exists already");
    case EBUSY:
    case ENOTEMPTY:
      return FailedPreconditionError(m);
    case EACCES:
    case EPERM:
      return PermissionDeniedError(m + " (cephx refused client." + c_.user + ")");
    case ETIMEDOUT:
    case ESHUTDOWN:
    case ENOTCONN:
    case EAGAIN:
      if (cluster_ != nullptr && io_ != nullptr) rados_wait_for_latest_osdmap(cluster_);
      return UnavailableError(m + " (the cluster did not answer within " + std::to_string(c_.op_timeout_s) +
                              " s; retry later)");
    default:
      return InternalError(m);
  }
}

Status CheckRbdConfig(const RbdConfig& config) {
  if (config.config_file.empty()) return InvalidArgumentError("rbd storage: config_file must be given");
  if (config.keyring.empty()) return InvalidArgumentError("rbd storage: keyring must be given");
  if (config.pool.empty()) return InvalidArgumentError("rbd storage: pool must not be empty");
  if (config.user.empty()) return InvalidArgumentError("rbd storage: user must not be empty");
  if (config.op_timeout_s <= 0 || config.mount_timeout_s <= 0) {
    return InvalidArgumentError("rbd storage: op_timeout_s and mount_timeout_s must be positive");
  }
  return Status::Ok();
}

}  // namespace uw::storage::internal
