// Golden-file tests: GuestSpec -> domain XML. Regenerate with UW_UPDATE_GOLDEN=1 and review the diff.
#include "vmm/domain_xml.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

namespace uw::vmm {
namespace {

std::string GoldenPath(const std::string& name) {
  const char* src = std::getenv("UW_SOURCE_DIR");
  return std::string(src ? src : ".") + "/vmm/testdata/" + name;
}

void ExpectGolden(const std::string& name, const std::string& actual) {
  const std::string path = GoldenPath(name);
  if (std::getenv("UW_UPDATE_GOLDEN")) {
    std::ofstream(path) << actual;
    GTEST_SKIP() << "rewrote " << path;
  }
  std::ifstream in(path);
  ASSERT_TRUE(in) << "missing golden file " << path << " (run with UW_UPDATE_GOLDEN=1)";
  std::stringstream ss;
  ss << in.rdbuf();
  EXPECT_EQ(ss.str(), actual) << "domain XML differs from " << path;
}

GuestSpec TinyQemu() {
  GuestSpec s;
  s.name = "tiny1";
  s.uuid = "5b3f1c2e-8d4a-4f6b-9c1d-2e3f4a5b6c7d";
  s.kind = GuestKind::kQemu;
  s.vcpus = 1;
  s.max_vcpus = 2;
  s.memory_mib = 192;
  s.max_memory_mib = 256;
  s.kernel = "/var/lib/underware/images/tiny/vmlinux";
  s.initrd = "/var/lib/underware/images/tiny/initrd.img";
  s.cmdline = "console=ttyS0 panic=-1 quiet";
  s.console_log = "/var/lib/underware/agent/console/tiny1.log";
  s.channels = {{"org.underware.guest.0", "/var/lib/underware/agent/channels/tiny1.sock"}};
  s.nics = {{"user", "", "52:54:00:12:34:56", 0}};
  s.cpu_shares = 512;
  s.labels = {{"tenant", "acme"}};
  return s;
}

TEST(DomainXmlTest, EmulatedParavirtGuest) { ExpectGolden("qemu_tiny.xml", BuildDomainXml(TinyQemu())); }

TEST(DomainXmlTest, FullVirtualizationWithDisksAndOvs) {
  GuestSpec s = TinyQemu();
  s.name = "db1";
  s.kind = GuestKind::kKvm;
  s.vcpus = s.max_vcpus = 4;
  s.memory_mib = s.max_memory_mib = 4096;
  s.kernel.clear();
  s.initrd.clear();
  s.cmdline.clear();
  s.disks = {{"/var/lib/underware/disks/db1.qcow2", "qcow2", "vda", false}, {"/dev/vg0/db1-data", "raw", "vdb", false}};
  s.nics = {{"ovs", "br-tenant", "", 42}};
  s.cpu_quota_us = 50000;
  s.cpu_period_us = 100000;
  ExpectGolden("kvm_disks_ovs.xml", BuildDomainXml(s));
}

TEST(DomainXmlTest, RbdDiskIsANetworkDiskWithTheCephSecret) {
  GuestSpec s = TinyQemu();
  DiskSpec d;
  d.rbd = "rbd/uw-vol-web";
  d.format = "raw";
  d.target = "vda";
  d.rbd_user = "uw";
  d.rbd_secret_uuid = "5d3a1c9e-0000-4000-8000-000000000001";
  d.rbd_config_file = "/etc/ceph/ceph.conf";
  s.disks = {d};
  ExpectGolden("qemu_rbd_disk.xml", BuildDomainXml(s));
  auto back = ParseDomainXml(BuildDomainXml(s));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  ASSERT_EQ(back->disks.size(), 1u);
  EXPECT_EQ(back->disks[0].rbd, "rbd/uw-vol-web");
  EXPECT_EQ(back->disks[0].rbd_user, "uw");
  EXPECT_EQ(back->disks[0].rbd_secret_uuid, d.rbd_secret_uuid);
  EXPECT_EQ(back->disks[0].rbd_config_file, "/etc/ceph/ceph.conf");
  EXPECT_EQ(back->disks[0].path, "");
  EXPECT_EQ(back->disks[0].target, "vda");
}

TEST(DomainXmlTest, KvmRunningEmulatedHasNoHostCpu) {
  GuestSpec s = TinyQemu();
  s.kind = GuestKind::kKvm;
  s.emulated = true;
  std::string xml = BuildDomainXml(s);
  EXPECT_NE(xml.find("<domain type=\"qemu\">"), std::string::npos);
  EXPECT_EQ(xml.find("host-passthrough"), std::string::npos);
  EXPECT_NE(xml.find("emulated=\"yes\""), std::string::npos);
}

TEST(DomainXmlTest, NonParavirtUsesEmulatedDevices) {
  GuestSpec s = TinyQemu();
  s.paravirt = false;
  s.disks = {{"/d.img", "raw", "sda", true}};
  ExpectGolden("qemu_emulated_devices.xml", BuildDomainXml(s));
}

TEST(DomainXmlTest, Container) {
  GuestSpec s;
  s.name = "ct1";
  s.kind = GuestKind::kLxc;
  s.memory_mib = s.max_memory_mib = 128;
  s.lxc_root = "/var/lib/underware/images/tiny/lxc-rootfs";
  s.lxc_init = "/bin/sh";
  s.lxc_init_args = {"-c", "echo ready; sleep 1000"};
  s.cpu_shares = 2048;
  ExpectGolden("lxc.xml", BuildDomainXml(s));
}

TEST(DomainXmlTest, RoundTripsThroughParse) {
  for (GuestSpec s : {TinyQemu()}) {
    auto back = ParseDomainXml(BuildDomainXml(s));
    ASSERT_TRUE(back.ok()) << back.status().ToString();
    EXPECT_EQ(back->name, s.name);
    EXPECT_EQ(back->uuid, s.uuid);
    EXPECT_EQ(back->kind, s.kind);
    EXPECT_EQ(back->vcpus, 1);
    EXPECT_EQ(back->max_vcpus, 2);
    EXPECT_EQ(back->memory_mib, 192);
    EXPECT_EQ(back->max_memory_mib, 256);
    EXPECT_EQ(back->kernel, s.kernel);
    EXPECT_EQ(back->cmdline, s.cmdline);
    EXPECT_EQ(back->console_log, s.console_log);
    ASSERT_EQ(back->channels.size(), 1u);
    EXPECT_EQ(back->channels[0].socket_path, s.channels[0].socket_path);
    EXPECT_EQ(back->cpu_shares, 512);
    ASSERT_EQ(back->labels.size(), 1u);
    EXPECT_EQ(back->labels[0].second, "acme");
    EXPECT_EQ(back->nics[0].mac, "52:54:00:12:34:56");
  }
  GuestSpec ct;
  ct.name = "ct";
  ct.kind = GuestKind::kLxc;
  ct.lxc_root = "/r";
  ct.lxc_init_args = {"-c", "x"};
  auto back = ParseDomainXml(BuildDomainXml(ct));
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->kind, GuestKind::kLxc);
  EXPECT_EQ(back->lxc_root, "/r");
  EXPECT_EQ(back->lxc_init_args, ct.lxc_init_args);
}

TEST(DomainXmlTest, APortNicIsTheAgentsTapWithoutOffloadsAndItsMetadataComesBack) {
  GuestSpec s = TinyQemu();
  NicSpec port;
  port.type = "port";
  port.source = "uw-int";
  port.mac = "02:00:00:00:00:05";
  port.port = "port-0123456789abcdef";
  port.network = "acme:front";
  port.address = "10.0.0.5/24";
  port.gateway = "10.0.0.1";
  port.device = "uwp0123456789ab";
  s.nics = {port};
  ExpectGolden("qemu_port_nic.xml", BuildDomainXml(s));
  auto back = ParseDomainXml(BuildDomainXml(s));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  ASSERT_EQ(back->nics.size(), 1u);
  const NicSpec& n = back->nics[0];
  EXPECT_EQ(n.type, "port");
  EXPECT_EQ(n.mac, port.mac);
  EXPECT_EQ(n.port, port.port);
  EXPECT_EQ(n.network, port.network);
  EXPECT_EQ(n.address, port.address);
  EXPECT_EQ(n.gateway, port.gateway);
  EXPECT_EQ(n.device, port.device);
  EXPECT_EQ(n.source, "uw-int");
  // An ethernet interface the metadata does not describe is not ours: left out of the spec.
  std::string xml = BuildDomainXml(s);
  xml.replace(xml.find("dev=\"uwp0123456789ab\""), 21, "dev=\"vnet7\"");
  auto other = ParseDomainXml(xml);
  ASSERT_TRUE(other.ok());
  EXPECT_TRUE(other->nics.empty());
}

TEST(DomainXmlTest, MetadataSurvivesLibvirtRenamingThePrefix) {
  // libvirt re-serializes our metadata with its own prefix choice.
  std::string xml = R"(<domain type='qemu'><name>a</name><memory unit='KiB'>262144</memory>
    <metadata><ns0:guest xmlns:ns0="https://underware.dev/xmlns/guest/1" kind="kvm" emulated="yes">
    <ns0:label key="k" value="v"/></ns0:guest></metadata><os><type>hvm</type></os><devices/></domain>)";
  auto s = ParseDomainXml(xml);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->kind, GuestKind::kKvm);
  EXPECT_TRUE(s->emulated);
  ASSERT_EQ(s->labels.size(), 1u);
}

TEST(DomainXmlTest, RejectsGarbage) {
  EXPECT_EQ(ParseDomainXml("<nope").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseDomainXml("<network/>").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseDomainXml("<domain><memory>lots</memory></domain>").status().code(), StatusCode::kInvalidArgument);
}

// Live migration moves the files of a guest from the source's state directory to the
// destination's: only values that are paths under the directory change.
TEST(DomainXmlTest, MoveDomainPathsRewritesOnlyPathsUnderTheStateDirectory) {
  GuestSpec spec = TinyQemu();
  spec.console_log = "/var/lib/uw/a/console/g.log";
  spec.channels = {{"org.underware.guest.0", "/var/lib/uw/a/channels/g.sock"}};
  spec.disks = {{"/var/lib/uw/a/disks/g-vda.qcow2", "qcow2", "vda"}, {"/srv/shared/a/disk.raw", "raw", "vdb"}};
  spec.labels = {{"note", "kept in /var/lib/uw/a/"}};
  auto moved = MoveDomainPaths(BuildDomainXml(spec), "/var/lib/uw/a", "/var/lib/uw/bb");
  ASSERT_TRUE(moved.ok()) << moved.status().ToString();
  auto back = ParseDomainXml(*moved);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->console_log, "/var/lib/uw/bb/console/g.log");
  ASSERT_EQ(back->channels.size(), 1u);
  EXPECT_EQ(back->channels[0].socket_path, "/var/lib/uw/bb/channels/g.sock");
  ASSERT_EQ(back->disks.size(), 2u);
  EXPECT_EQ(back->disks[0].path, "/var/lib/uw/bb/disks/g-vda.qcow2");
  EXPECT_EQ(back->disks[1].path, "/srv/shared/a/disk.raw");
  EXPECT_EQ(back->kernel, spec.kernel);
  ASSERT_EQ(back->labels.size(), 1u);
  EXPECT_EQ(back->labels[0].second, "kept in /var/lib/uw/a/");  // not a path under it
  // A sibling directory that shares the prefix is not under it.
  auto sibling = MoveDomainPaths(BuildDomainXml(spec), "/var/lib/uw/a/dis", "/x");
  ASSERT_TRUE(sibling.ok());
  EXPECT_EQ(ParseDomainXml(*sibling)->disks[0].path, "/var/lib/uw/a/disks/g-vda.qcow2");
  EXPECT_EQ(MoveDomainPaths("<domain", "/a", "/b").status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace uw::vmm
