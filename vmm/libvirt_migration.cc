// LibvirtHypervisor: live migration (peer to peer) and its job statistics.
#include <libvirt/virterror.h>
#include <spdlog/spdlog.h>

#include "vmm/libvirt_driver.h"
#include "vmm/libvirt_internal.h"

namespace uw::vmm {

Result<std::string> LibvirtHypervisor::MigratableXml(std::string_view name) {
  UW_ASSIGN_OR_RETURN(virDomainPtr raw, Lookup(name));
  DomainHandle d(raw);
  char* xml = virDomainGetXMLDesc(d.get(), VIR_DOMAIN_XML_MIGRATABLE | VIR_DOMAIN_XML_SECURE);
  if (!xml) return LibvirtError("reading the domain XML of guest '" + std::string(name) + "'");
  std::string out(xml);
  free(xml);
  return out;
}

Status LibvirtHypervisor::Migrate(std::string_view name, const MigrationRequest& r) {
  UW_ASSIGN_OR_RETURN(virDomainPtr raw, Lookup(name));
  DomainHandle d(raw);
  virTypedParameterPtr params = nullptr;
  int n = 0, max = 0;
  auto fail = [&](const char* what) {
    virTypedParamsFree(params, n);
    return InternalError(std::string("building migration parameters: ") + what);
  };
  if (!r.dest_xml.empty()) {
    if (virTypedParamsAddString(&params, &n, &max, VIR_MIGRATE_PARAM_DEST_XML, r.dest_xml.c_str()) < 0 ||
        virTypedParamsAddString(&params, &n, &max, VIR_MIGRATE_PARAM_PERSIST_XML, r.dest_xml.c_str()) < 0) {
      return fail("dest_xml");
    }
  }
  if (!r.migrate_uri.empty() &&
      virTypedParamsAddString(&params, &n, &max, VIR_MIGRATE_PARAM_URI, r.migrate_uri.c_str()) < 0) {
    return fail("migrate_uri");
  }
  if (r.bandwidth_mib_s > 0 && virTypedParamsAddULLong(&params, &n, &max, VIR_MIGRATE_PARAM_BANDWIDTH,
                                                       static_cast<unsigned long long>(r.bandwidth_mib_s)) < 0) {
    return fail("bandwidth");
  }
  // No VIR_MIGRATE_UNDEFINE_SOURCE: the shut-off source keeps the completed job's statistics until
  // the caller reads them and undefines it (the confirm phase).
  unsigned int flags = VIR_MIGRATE_LIVE | VIR_MIGRATE_PEER2PEER | VIR_MIGRATE_PERSIST_DEST;
  if (r.copy_storage) flags |= VIR_MIGRATE_NON_SHARED_DISK;
  if (r.auto_converge) flags |= VIR_MIGRATE_AUTO_CONVERGE;
  if (r.postcopy) flags |= VIR_MIGRATE_POSTCOPY;
  if (r.downtime_limit_ms > 0) {
    // Set before the job starts; libvirt keeps it for the next migration of this domain.
    if (virDomainMigrateSetMaxDowntime(d.get(), static_cast<unsigned long long>(r.downtime_limit_ms), 0) < 0) {
      spdlog::warn("{}", LibvirtError("setting the downtime limit of '" + std::string(name) + "'").message());
    }
  }
  spdlog::info("migrating guest {} to {} (bandwidth {} MiB/s{}{}{})", name, r.dest_uri, r.bandwidth_mib_s,
               r.copy_storage ? ", copying disks" : "", r.auto_converge ? ", auto-converge" : "",
               r.postcopy ? ", post-copy armed" : "");
  int rc = virDomainMigrateToURI3(d.get(), r.dest_uri.c_str(), params, static_cast<unsigned int>(n), flags);
  virTypedParamsFree(params, n);
  if (rc < 0) return LibvirtError("migrating guest '" + std::string(name) + "' to " + r.dest_uri);
  return Status::Ok();
}

Result<MigrationJob> LibvirtHypervisor::GetMigrationJob(std::string_view name, bool completed) {
  UW_ASSIGN_OR_RETURN(virDomainPtr raw, Lookup(name));
  DomainHandle d(raw);
  int type = VIR_DOMAIN_JOB_NONE;
  virTypedParameterPtr params = nullptr;
  int n = 0;
  if (virDomainGetJobStats(d.get(), &type, &params, &n, completed ? VIR_DOMAIN_JOB_STATS_COMPLETED : 0) < 0) {
    return LibvirtError("reading the migration job of guest '" + std::string(name) + "'");
  }
  MigrationJob job;
  job.active = !completed && (type == VIR_DOMAIN_JOB_BOUNDED || type == VIR_DOMAIN_JOB_UNBOUNDED);
  auto ull = [&](const char* field) -> int64_t {
    unsigned long long v = 0;
    return virTypedParamsGetULLong(params, n, field, &v) == 1 ? static_cast<int64_t>(v) : -1;
  };
  auto or0 = [](int64_t v) { return v < 0 ? 0 : v; };
  // An active job of another kind (a save, a dump) is not a migration.
  int op = 0;
  if (virTypedParamsGetInt(params, n, VIR_DOMAIN_JOB_OPERATION, &op) == 1 && job.active &&
      op != VIR_DOMAIN_JOB_OPERATION_MIGRATION_OUT && op != VIR_DOMAIN_JOB_OPERATION_MIGRATION_IN) {
    job.active = false;
  }
  job.elapsed_ms = or0(ull(VIR_DOMAIN_JOB_TIME_ELAPSED));
  // DOWNTIME is QEMU's expectation while the job runs and the measured figure once it completed.
  (job.active ? job.expected_downtime_ms : job.downtime_ms) = ull(VIR_DOMAIN_JOB_DOWNTIME);
  job.memory_total_bytes = or0(ull(VIR_DOMAIN_JOB_MEMORY_TOTAL));
  job.memory_processed_bytes = or0(ull(VIR_DOMAIN_JOB_MEMORY_PROCESSED));
  job.memory_remaining_bytes = or0(ull(VIR_DOMAIN_JOB_MEMORY_REMAINING));
  job.dirty_rate_pages_s = or0(ull(VIR_DOMAIN_JOB_MEMORY_DIRTY_RATE));
  job.memory_iteration = or0(ull(VIR_DOMAIN_JOB_MEMORY_ITERATION));
  job.disk_total_bytes = or0(ull(VIR_DOMAIN_JOB_DISK_TOTAL));
  job.disk_remaining_bytes = or0(ull(VIR_DOMAIN_JOB_DISK_REMAINING));
  virTypedParamsFree(params, n);
  unsigned long bw = 0;
  if (virDomainMigrateGetMaxSpeed(d.get(), &bw, 0) == 0)
    job.bandwidth_mib_s = static_cast<int64_t>(bw);
  else
    virResetLastError();
  return job;
}

Status LibvirtHypervisor::AbortMigration(std::string_view name) {
  UW_ASSIGN_OR_RETURN(virDomainPtr raw, Lookup(name));
  DomainHandle d(raw);
  if (virDomainAbortJob(d.get()) < 0)
    return LibvirtError("cancelling the migration of guest '" + std::string(name) + "'");
  return Status::Ok();
}

Status LibvirtHypervisor::SetMigrationBandwidth(std::string_view name, double mib_s) {
  if (!(mib_s > 0)) return InvalidArgumentError("migration bandwidth must be positive");
  UW_ASSIGN_OR_RETURN(virDomainPtr raw, Lookup(name));
  DomainHandle d(raw);
  if (virDomainMigrateSetMaxSpeed(d.get(), static_cast<unsigned long>(mib_s), 0) < 0) {
    return LibvirtError("setting the migration bandwidth of guest '" + std::string(name) + "'");
  }
  return Status::Ok();
}

Status LibvirtHypervisor::StartPostCopy(std::string_view name) {
  UW_ASSIGN_OR_RETURN(virDomainPtr raw, Lookup(name));
  DomainHandle d(raw);
  if (virDomainMigrateStartPostCopy(d.get(), 0) < 0) {
    return LibvirtError("switching the migration of guest '" + std::string(name) + "' to post-copy");
  }
  return Status::Ok();
}

Status LibvirtHypervisor::DefineCephSecret(const std::string& uuid, const std::string& usage,
                                           const std::string& value) {
  UW_ASSIGN_OR_RETURN(virConnectPtr conn, Conn());
  const std::string xml = "<secret ephemeral='no' private='yes'><uuid>" + uuid + "</uuid><usage type='ceph'><name>" +
                          usage + "</name></usage></secret>";
  virSecretPtr secret = virSecretDefineXML(conn, xml.c_str(), 0);
  if (secret == nullptr) return LibvirtError("defining the Ceph secret " + uuid + " for " + usage);
  const int r = virSecretSetValue(secret, reinterpret_cast<const unsigned char*>(value.data()), value.size(), 0);
  virSecretFree(secret);
  if (r < 0) return LibvirtError("setting the value of the Ceph secret " + uuid);
  return Status::Ok();
}

}  // namespace uw::vmm
