#include "storage/storage.h"

#include <gtest/gtest.h>

#include "storage/internal.h"

namespace uw::storage {
namespace {

TEST(StorageNameTest, AcceptsPlainNamesAndRefusesPathsAndOddCharacters) {
  for (const char* ok : {"debian-12", "a", "vol.1", "x_y", "0abc"}) EXPECT_TRUE(ValidateName("volume", ok).ok()) << ok;
  for (const char* bad : {"", "../etc", "a/b", "Upper", "-lead", ".hidden", "sp ace", "x:y", "a\nb"}) {
    Status s = ValidateName("volume", bad);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(s.message().find("volume name"), std::string::npos) << s.message();
  }
  EXPECT_EQ(ValidateName("image", std::string(64, 'a')).code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(ValidateName("image", std::string(63, 'a')).ok());
}

TEST(DiskXmlTest, LocalFileDisk) {
  DiskSource d;
  d.type = "file";
  d.format = "qcow2";
  d.path = "/var/lib/uw/volumes/v1.qcow2";
  EXPECT_EQ(DiskXml(d, "vdb"),
            "<disk type=\"file\" device=\"disk\">\n"
            "  <driver name=\"qemu\" type=\"qcow2\" />\n"
            "  <source file=\"/var/lib/uw/volumes/v1.qcow2\" />\n"
            "  <target dev=\"vdb\" bus=\"virtio\" />\n"
            "</disk>\n");
}

TEST(DiskXmlTest, RbdDiskWithCephxSecretAndMonitors) {
  DiskSource d;
  d.type = "network";
  d.format = "raw";
  d.protocol = "rbd";
  d.name = "rbd/uw-vol-v1";
  d.hosts = {"10.77.0.254:16789"};
  d.config_file = "/etc/ceph/ceph.conf";
  d.auth_user = "uw";
  d.secret_uuid = "3e2c6f0a-1111-2222-3333-444455556666";
  EXPECT_EQ(DiskXml(d, "vda"),
            "<disk type=\"network\" device=\"disk\">\n"
            "  <driver name=\"qemu\" type=\"raw\" cache=\"none\" />\n"
            "  <auth username=\"uw\">\n"
            "    <secret type=\"ceph\" uuid=\"3e2c6f0a-1111-2222-3333-444455556666\" />\n"
            "  </auth>\n"
            "  <source protocol=\"rbd\" name=\"rbd/uw-vol-v1\">\n"
            "    <host name=\"10.77.0.254\" port=\"16789\" />\n"
            "    <config file=\"/etc/ceph/ceph.conf\" />\n"
            "  </source>\n"
            "  <target dev=\"vda\" bus=\"virtio\" />\n"
            "</disk>\n");
}

TEST(ToolOutputTest, ParsesQemuImgInfoAndItsErrorText) {
  auto info = internal::ParseToolImageInfo(
      R"({"virtual-size": 67108864, "filename": "v.qcow2", "format": "qcow2", "actual-size": 200704,
          "backing-filename": "/d/images/base.qcow2",
          "snapshots": [{"name": "s1", "id": "1"}, {"name": "s2", "id": "2"}]})",
      "volume 'v'");
  ASSERT_TRUE(info.ok()) << info.status().ToString();
  EXPECT_EQ(info->format, "qcow2");
  EXPECT_EQ(info->virtual_bytes, 67108864);
  EXPECT_EQ(info->actual_bytes, 200704);
  EXPECT_EQ(info->backing_file, "/d/images/base.qcow2");
  EXPECT_EQ(info->snapshots, (std::vector<std::string>{"s1", "s2"}));
  EXPECT_EQ(internal::ParseToolImageInfo("not json", "volume 'v'").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(internal::OneLine("qemu-img: Could not open 'x': Failed to get shared \"write\" lock\n\nIs another "
                              "process using the image [x]?\n  \n"),
            "Could not open 'x': Failed to get shared \"write\" lock Is another process using the image [x]?");
}

TEST(ToolOutputTest, ToolFailuresMapToWhatTheCallerShouldDo) {
  auto missing =
      internal::RunTool({"sh", "-c", "echo \"qemu-img: Could not open 'x': No such file or directory\" >&2; exit 1"},
                        std::chrono::seconds(5), "volume 'x'");
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound) << missing.status().ToString();
  EXPECT_EQ(missing.status().message(), "volume 'x': Could not open 'x': No such file or directory");
  auto locked = internal::RunTool({"sh", "-c", "echo 'qemu-img: Failed to get shared \"write\" lock' >&2; exit 1"},
                                  std::chrono::seconds(5), "v");
  EXPECT_EQ(locked.status().code(), StatusCode::kFailedPrecondition);
  auto slow = internal::RunTool({"sleep", "30"}, std::chrono::milliseconds(100), "v");
  EXPECT_EQ(slow.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(slow.status().message().find("did not finish within 100 ms"), std::string::npos);
}

}  // namespace
}  // namespace uw::storage
