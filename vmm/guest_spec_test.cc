#include <gtest/gtest.h>

#include <cstdint>

#include "vmm/hypervisor.h"

namespace uw::vmm {
namespace {

TEST(GuestSpecTest, ParsesAFullSpec) {
  Json j = Json::parse(R"({"name": "web1", "kind": "qemu", "vcpus": 1, "max_vcpus": 2, "memory_mib": 256,
    "boot": {"kernel": "/k", "initrd": "/i", "cmdline": "console=ttyS0"},
    "disks": [{"path": "/d.qcow2"}], "nics": [{"type": "ovs", "source": "br0", "vlan": 10}],
    "cpu": {"shares": 512}, "labels": {"tenant": "acme"}})");
  auto s = GuestSpecFromJson(j);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ(s->name, "web1");
  EXPECT_EQ(s->max_vcpus, 2);
  EXPECT_EQ(s->max_memory_mib, 256);
  EXPECT_EQ(s->disks[0].target, "vda");
  EXPECT_EQ(s->disks[0].format, "qcow2");
  EXPECT_EQ(s->nics[0].vlan, 10);
  EXPECT_EQ(s->cpu_shares, 512);
  EXPECT_TRUE(ValidateGuestSpec(*s).ok());
}

TEST(GuestSpecTest, ErrorsNameTheField) {
  auto msg = [](const char* text) { return GuestSpecFromJson(Json::parse(text)).status().message(); };
  EXPECT_EQ(msg(R"({"kind": "qemu"})"), "spec.name: required string is missing");
  EXPECT_EQ(msg(R"({"name": "a", "vcpus": "two"})"), "spec.vcpus: expected a positive integer");
  EXPECT_EQ(msg(R"({"name": "a", "kind": "xen"})"), "spec.kind: guest kind 'xen' is not one of kvm, qemu, lxc");
  EXPECT_EQ(msg(R"({"name": "a", "memroy_mib": 5})"), "spec.memroy_mib: unknown field");
  EXPECT_EQ(msg(R"({"name": "a", "nics": [{"type": "bridge"}]})"), "spec.nics[0].source: a bridge name is required");
  EXPECT_EQ(msg(R"({"name": "a", "disks": [{"path": "/x", "format": "vmdk"}]})"),
            "spec.disks[0].format: expected qcow2 or raw");
}

TEST(GuestSpecTest, ValidationCatchesInconsistencies) {
  GuestSpec s;
  s.name = "a";
  s.kernel = "/k";
  s.vcpus = 3;
  s.max_vcpus = 2;
  EXPECT_EQ(ValidateGuestSpec(s).code(), StatusCode::kInvalidArgument);
  s.max_vcpus = 4;
  s.memory_mib = 512;
  s.max_memory_mib = 256;
  EXPECT_EQ(ValidateGuestSpec(s).code(), StatusCode::kInvalidArgument);
  s.max_memory_mib = 512;
  EXPECT_TRUE(ValidateGuestSpec(s).ok());
  s.kernel.clear();
  EXPECT_NE(ValidateGuestSpec(s).message().find("nothing to boot"), std::string::npos);
  s.kind = GuestKind::kLxc;
  s.vcpus = s.max_vcpus = 1;
  EXPECT_NE(ValidateGuestSpec(s).message().find("lxc.root"), std::string::npos);
  s.lxc_root = "/srv/ct";
  EXPECT_TRUE(ValidateGuestSpec(s).ok());
  s.name = "bad name";
  EXPECT_FALSE(ValidateGuestSpec(s).ok());
}

// Found by vmm_guest_spec_fuzzer: a spec of 2^63-1 MiB validated, and BuildDomainXml's KiB
// figure overflowed int64_t.
TEST(GuestSpecTest, MemoryBeyond64TiBIsRefused) {
  GuestSpec s;
  s.name = "a";
  s.kernel = "/k";
  s.memory_mib = s.max_memory_mib = int64_t{64} << 20;
  EXPECT_TRUE(ValidateGuestSpec(s).ok());
  s.max_memory_mib = INT64_MAX;
  EXPECT_NE(ValidateGuestSpec(s).message().find("max_memory_mib must be at most"), std::string::npos);
  s.memory_mib = INT64_MAX;
  EXPECT_EQ(ValidateGuestSpec(s).code(), StatusCode::kInvalidArgument);
}

// Found by vmm_guest_spec_fuzzer: GuestSpecToJson dropped disks[].size_mib, so a local disk the
// agent was to make read back as a disk with an empty path.
TEST(GuestSpecTest, LocalDiskSizeRoundTrips) {
  auto s = GuestSpecFromJson(Json::parse(R"({"name": "a", "disks": [{"size_mib": 1024}, {"path": "/d"}]})"));
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  Json j = GuestSpecToJson(*s);
  EXPECT_EQ(j["disks"][0]["size_mib"], 1024);
  EXPECT_FALSE(j["disks"][1].contains("size_mib"));
  j.erase("emulated");
  auto again = GuestSpecFromJson(j);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(again->disks[0].size_mib, 1024);
  EXPECT_EQ(again->disks[0].path, "");
}

TEST(GuestSpecTest, ADiskMadeOnAnImageNamesItsVersionAndHasASize) {
  auto s = GuestSpecFromJson(
      Json::parse(R"({"name": "a", "disks": [{"size_mib": 1024, "base_image": "golden-1.2@1764979200123"}]})"));
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ(s->disks[0].base_image, "golden-1.2@1764979200123");
  Json j = GuestSpecToJson(*s);
  EXPECT_EQ(j["disks"][0]["base_image"], "golden-1.2@1764979200123");
  j.erase("emulated");
  auto again = GuestSpecFromJson(j);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(again->disks[0].base_image, "golden-1.2@1764979200123");
  for (const char* bad : {R"({"size_mib": 5, "base_image": "golden"})", R"({"size_mib": 5, "base_image": "../x@1"})",
                          R"({"size_mib": 5, "base_image": "x@"})", R"({"size_mib": 5, "base_image": "@1"})",
                          R"({"size_mib": 5, "base_image": "x@1a"})", R"({"base_image": "x@1"})",
                          R"({"size_mib": 5, "base_image": "x@1", "path": "/d"})",
                          R"({"size_mib": 5, "base_image": "x@1", "format": "raw"})",
                          R"({"size_mib": 5, "base_image": "x@123456789012345678901"})"}) {
    auto r = GuestSpecFromJson(Json{{"name", "a"}, {"disks", Json::array({Json::parse(bad)})}});
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(r.status().message().find("spec.disks[0]"), std::string::npos) << r.status().message();
  }
}

TEST(GuestSpecTest, RbdDisksNamePoolAndImageOnly) {
  auto s = GuestSpecFromJson(Json::parse(R"({"name": "a", "disks": [{"rbd": "rbd/uw-vol-a"}]})"));
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ(s->disks[0].rbd, "rbd/uw-vol-a");
  EXPECT_EQ(s->disks[0].format, "raw");
  EXPECT_EQ(s->disks[0].target, "vda");
  Json j = GuestSpecToJson(*s);
  EXPECT_EQ(j["disks"][0]["rbd"], "rbd/uw-vol-a");
  EXPECT_FALSE(j["disks"][0].contains("path"));
  j.erase("emulated");
  auto again = GuestSpecFromJson(j);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(again->disks[0].rbd, "rbd/uw-vol-a");
  for (const char* bad :
       {R"({"rbd": "noslash"})", R"({"rbd": "rbd/a:conf=/etc/passwd"})", R"({"rbd": "/img"})", R"({"rbd": "rbd/"})",
        R"({"rbd": "rbd/a", "path": "/x"})", R"({"rbd": "rbd/a", "size_mib": 5})",
        R"({"rbd": "rbd/a", "format": "qcow2"})", R"({"rbd": "rbd/a b"})"}) {
    auto r = GuestSpecFromJson(Json{{"name", "a"}, {"disks", Json::array({Json::parse(bad)})}});
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(r.status().message().find("spec.disks[0]"), std::string::npos) << r.status().message();
  }
}

// Issue 12: a label key holding NUL was accepted (202) and could never reach libvirt's XML.
TEST(GuestSpecTest, LabelsAreSmallPrintableKeysAndValues) {
  auto parse = [](const std::string& labels) {
    return GuestSpecFromJson(Json::parse(R"({"name": "g", "labels": )" + labels + "}"));
  };
  EXPECT_TRUE(parse(R"({"app.kubernetes.io/name": "web", "tier": ""})").ok());
  EXPECT_FALSE(parse(R"({"k\u0000": "v"})").ok());
  EXPECT_FALSE(parse(R"({"": "v"})").ok());
  EXPECT_FALSE(parse(R"({"a b": "v"})").ok());
  EXPECT_FALSE(parse(R"({"k": "a\u0000b"})").ok());
  EXPECT_FALSE(parse(R"({"k": "line\nbreak"})").ok());
  EXPECT_FALSE(parse(R"({"k": ")" + std::string(257, 'v') + R"("})").ok());
  Json many = Json::object();
  for (int i = 0; i < 65; ++i) many["k" + std::to_string(i)] = "v";
  EXPECT_FALSE(parse(many.dump()).ok());
  auto err = parse(R"({"k": 5})");
  ASSERT_FALSE(err.ok());
  EXPECT_NE(err.status().message().find("labels.k"), std::string::npos) << err.status().ToString();
}

TEST(GuestSpecTest, APortNicNamesItsPortNetworkAndAddress) {
  const Json port = {{"type", "port"},           {"port", "port-0123456789abcdef"},
                     {"network", "acme:front"},  {"mac", "02:AA:bb:cc:dd:ee"},
                     {"address", "10.0.0.5/24"}, {"gateway", "10.0.0.1"}};
  auto s = GuestSpecFromJson({{"name", "a"}, {"nics", {port}}});
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  const NicSpec& n = s->nics[0];
  EXPECT_EQ(n.type, "port");
  EXPECT_EQ(n.mac, "02:aa:bb:cc:dd:ee");
  EXPECT_EQ(n.device, "uwp0123456789ab");
  EXPECT_EQ(n.address, "10.0.0.5/24");
  const Json back = GuestSpecToJson(*s)["nics"][0];
  EXPECT_EQ(back["port"], "port-0123456789abcdef");
  EXPECT_EQ(back["network"], "acme:front");
  EXPECT_EQ(back["gateway"], "10.0.0.1");
  auto again = GuestSpecFromJson({{"name", "a"}, {"nics", {back}}});  // the NIC as it was given
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(again->nics[0].device, "uwp0123456789ab");
  auto bad = [&](const char* field, const Json& value) {
    Json p = port;
    if (value.is_null()) {
      p.erase(field);
    } else {
      p[field] = value;
    }
    return GuestSpecFromJson({{"name", "a"}, {"nics", {p}}}).status().message();
  };
  EXPECT_EQ(bad("port", "port-xyz"), "spec.nics[0].port: expected a port id (port- and 16 hex digits)");
  EXPECT_EQ(bad("port", "port-0123456789ABCDEF"), "spec.nics[0].port: expected a port id (port- and 16 hex digits)");
  EXPECT_EQ(bad("network", nullptr), "spec.nics[0].network: required string is missing");
  EXPECT_EQ(bad("mac", "01:00:5e:00:00:01").rfind("spec.nics[0].mac: ", 0), 0u) << "multicast";
  for (const char* a :
       {"10.0.0.5", "10.0.0.5/33", "10.0.0.5/7", "10.0.0.5/024", "10.0.0.500/24", "x/24", "10.0.0.5/"}) {
    EXPECT_EQ(bad("address", a), "spec.nics[0].address: expected an IPv4 address and its subnet's prefix, 10.0.0.5/24")
        << a;
  }
  EXPECT_EQ(bad("gateway", "10.0.0"), "spec.nics[0].gateway: expected an IPv4 address");
  EXPECT_EQ(bad("vlan", 5), "spec.nics[0].vlan: a port NIC's bridge and VLAN are its host's to choose");
  EXPECT_EQ(bad("source", "br0"), "spec.nics[0].source: a port NIC's bridge and VLAN are its host's to choose");
  EXPECT_EQ(bad("type", "tap"), "spec.nics[0].type: expected user, bridge, ovs or port");
  EXPECT_TRUE(IsPortId("port-0123456789abcdef"));
  EXPECT_FALSE(IsPortId("port-0123456789abcde"));
}

TEST(GuestSpecTest, KindAndStateNames) {
  EXPECT_EQ(GuestKindName(GuestKind::kLxc), "lxc");
  EXPECT_EQ(*ParseGuestKind("kvm"), GuestKind::kKvm);
  EXPECT_EQ(GuestStateName(GuestState::kShuttingDown), "shutting-down");
}

}  // namespace
}  // namespace uw::vmm
