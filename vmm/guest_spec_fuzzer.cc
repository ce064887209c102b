// libFuzzer target for the agent's guest spec (issue 12): the JSON a client posts to create a guest,
// as uw-agent (and the manager, before it accepts a create) reads it. Build with -DUW_FUZZ=ON and
// clang; docs/fuzzing.md.
//
// The input is text handed to ParseJson, then GuestSpecFromJson and ValidateGuestSpec (with and
// without an image named), then BuildDomainXml. Invariants checked (a failure aborts, which
// libFuzzer reports with the input):
//   - nothing throws (errors are Status values: no exceptions across components);
//   - a field error names the field: its message starts with the "spec" path;
//   - a spec that parses round-trips: GuestSpecFromJson(GuestSpecToJson(s)) equals s, field by
//     field, and validates the same way;
//   - a spec that validates builds domain XML that reads back (ParseDomainXml) with the same name,
//     kind, vCPUs, memory and CPU tuning, and, when its strings are plain printable text, the same
//     boot, disks, NICs, container and labels.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "common/json.h"
#include "vmm/domain_xml.h"
#include "vmm/hypervisor.h"

namespace {

using uw::Json;
using uw::vmm::GuestSpec;

#define FUZZ_CHECK(cond)                                                          \
  do {                                                                            \
    if (!(cond)) {                                                                \
      __builtin_fprintf(stderr, "check failed: %s (line %d)\n", #cond, __LINE__); \
      std::abort();                                                               \
    }                                                                             \
  } while (0)

bool SameDisks(const GuestSpec& a, const GuestSpec& b, bool with_size) {
  if (a.disks.size() != b.disks.size()) return false;
  for (size_t i = 0; i < a.disks.size(); ++i) {
    const auto& x = a.disks[i];
    const auto& y = b.disks[i];
    if (x.path != y.path || x.format != y.format || x.target != y.target || x.read_only != y.read_only) {
      return false;
    }
    if (with_size && (x.size_mib != y.size_mib || x.base_image != y.base_image)) return false;
  }
  return true;
}

bool SameNics(const GuestSpec& a, const GuestSpec& b) {
  if (a.nics.size() != b.nics.size()) return false;
  for (size_t i = 0; i < a.nics.size(); ++i) {
    const auto& x = a.nics[i];
    const auto& y = b.nics[i];
    if (x.type != y.type || x.source != y.source || x.mac != y.mac || x.vlan != y.vlan) return false;
  }
  return true;
}

// The fields a client sets through the agent API (GuestSpecFromJson's vocabulary).
bool SameSpec(const GuestSpec& a, const GuestSpec& b) {
  return a.name == b.name && a.uuid == b.uuid && a.kind == b.kind && a.paravirt == b.paravirt && a.vcpus == b.vcpus &&
         a.max_vcpus == b.max_vcpus && a.memory_mib == b.memory_mib && a.max_memory_mib == b.max_memory_mib &&
         a.kernel == b.kernel && a.initrd == b.initrd && a.cmdline == b.cmdline &&
         SameDisks(a, b, /*with_size=*/true) && SameNics(a, b) && a.cpu_shares == b.cpu_shares &&
         a.cpu_quota_us == b.cpu_quota_us && a.cpu_period_us == b.cpu_period_us &&
         (a.kind != uw::vmm::GuestKind::kLxc ||
          (a.lxc_root == b.lxc_root && a.lxc_init == b.lxc_init && a.lxc_init_args == b.lxc_init_args)) &&
         a.labels == b.labels;
}

// Printable ASCII without leading or trailing blanks: text that XML carries unchanged.
bool Plain(std::string_view s) {
  if (!s.empty() && (s.front() == ' ' || s.back() == ' ')) return false;
  for (char c : s) {
    if (c < 0x20 || c > 0x7e) return false;
  }
  return true;
}

bool AllPlain(const GuestSpec& s) {
  bool plain =
      Plain(s.uuid) && Plain(s.kernel) && Plain(s.initrd) && Plain(s.cmdline) && Plain(s.lxc_root) && Plain(s.lxc_init);
  for (const auto& d : s.disks) plain = plain && Plain(d.path) && Plain(d.target) && !d.path.empty();
  for (const auto& n : s.nics) plain = plain && Plain(n.source) && Plain(n.mac);
  for (const auto& a : s.lxc_init_args) plain = plain && Plain(a);
  for (const auto& [k, v] : s.labels) plain = plain && Plain(k) && Plain(v);
  return plain;
}

void CheckDomainXml(const GuestSpec& spec) {
  const std::string xml = uw::vmm::BuildDomainXml(spec);
  auto back = uw::vmm::ParseDomainXml(xml);
  FUZZ_CHECK(back.ok());
  FUZZ_CHECK(back->name == spec.name);
  FUZZ_CHECK(back->kind == spec.kind);
  FUZZ_CHECK(back->vcpus == spec.vcpus);
  FUZZ_CHECK(back->max_vcpus == spec.max_vcpus);
  FUZZ_CHECK(back->memory_mib == spec.memory_mib);
  FUZZ_CHECK(back->max_memory_mib == spec.max_memory_mib);
  FUZZ_CHECK(back->cpu_shares == spec.cpu_shares);
  FUZZ_CHECK(back->cpu_period_us == spec.cpu_period_us);
  FUZZ_CHECK(back->cpu_quota_us == spec.cpu_quota_us);
  if (!AllPlain(spec)) return;
  FUZZ_CHECK(back->uuid == spec.uuid);
  FUZZ_CHECK(back->paravirt == spec.paravirt);
  FUZZ_CHECK(back->labels == spec.labels);
  if (spec.kind == uw::vmm::GuestKind::kLxc) {
    FUZZ_CHECK(back->lxc_root == spec.lxc_root);
    FUZZ_CHECK(back->lxc_init == spec.lxc_init);
    FUZZ_CHECK(back->lxc_init_args == spec.lxc_init_args);
  } else {
    FUZZ_CHECK(back->kernel == spec.kernel);
    FUZZ_CHECK(back->initrd == spec.initrd);
    FUZZ_CHECK(back->cmdline == spec.cmdline);
    FUZZ_CHECK(SameDisks(*back, spec, /*with_size=*/false));
    FUZZ_CHECK(SameNics(*back, spec));
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto json = uw::ParseJson(text, "request body");
  if (!json.ok()) {
    FUZZ_CHECK(json.status().code() == uw::StatusCode::kInvalidArgument);
    return 0;
  }
  auto spec = uw::vmm::GuestSpecFromJson(*json, "spec");
  if (!spec.ok()) {
    FUZZ_CHECK(spec.status().code() == uw::StatusCode::kInvalidArgument);
    FUZZ_CHECK(spec.status().message().rfind("spec", 0) == 0);
    return 0;
  }
  const uw::Status valid = uw::vmm::ValidateGuestSpec(*spec);
  const uw::Status valid_with_image = uw::vmm::ValidateGuestSpec(*spec, /*image_named=*/true);
  FUZZ_CHECK(valid.ok() || valid.code() == uw::StatusCode::kInvalidArgument);
  FUZZ_CHECK(!valid.ok() || valid_with_image.ok());  // naming an image only relaxes the checks

  // Round trip through the agent's own JSON. GuestSpecToJson also reports "emulated", which the
  // agent sets and a client may not.
  Json written = uw::vmm::GuestSpecToJson(*spec);
  written.erase("emulated");
  auto reread = uw::vmm::GuestSpecFromJson(written, "spec");
  if (!reread.ok()) {
    __builtin_fprintf(stderr, "%s\n%s\n", reread.status().ToString().c_str(), written.dump().c_str());
  }
  FUZZ_CHECK(reread.ok());
  FUZZ_CHECK(SameSpec(*spec, *reread));
  FUZZ_CHECK(uw::vmm::ValidateGuestSpec(*reread).ok() == valid.ok());

  if (valid.ok()) CheckDomainXml(*spec);
  return 0;
}
