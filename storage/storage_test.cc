#include "storage/storage.h"

#include <gtest/gtest.h>

#include "storage/heartbeat.h"
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

// The manager's reading of storage heartbeats (timeout 5 s, reads every second).
TEST(HeartbeatWatchTest, LiveWhileTheValueChangesStoppedWhenItStandsForTheTimeout) {
  HeartbeatWatch w(5000);
  EXPECT_EQ(w.State("h1", 0), BeatState::kUnknown) << "nothing read yet";
  w.Observe({{"h1", "a-1"}, {"h2", "b-1"}}, 1000);
  EXPECT_EQ(w.State("h1", 1000), BeatState::kUnknown) << "one value says nothing about change";
  EXPECT_EQ(w.State("h3", 1000), BeatState::kUnknown) << "a host that never beat";
  w.Observe({{"h1", "a-2"}, {"h2", "b-1"}}, 2000);
  EXPECT_EQ(w.State("h1", 2000), BeatState::kLive);
  EXPECT_EQ(w.Value("h1"), "a-2");
  for (int64_t t = 3000; t <= 6000; t += 1000) w.Observe({{"h1", "a-" + std::to_string(t)}, {"h2", "b-1"}}, t);
  EXPECT_EQ(w.State("h1", 6000), BeatState::kLive);
  EXPECT_EQ(w.State("h2", 6000), BeatState::kStopped) << "unchanged since it was first seen at 1 s";
  EXPECT_EQ(w.UnchangedMs("h2", 6000), 5000);
  // h1 stops: stopped once its last value stood for the timeout, judged at good reads only.
  for (int64_t t = 7000; t <= 10000; t += 1000) w.Observe({{"h1", "a-6000"}, {"h2", "b-1"}}, t);
  EXPECT_EQ(w.State("h1", 10000), BeatState::kLive) << "4 s without a change";
  w.Observe({{"h1", "a-6000"}}, 11000);
  EXPECT_EQ(w.State("h1", 11000), BeatState::kStopped);
  EXPECT_EQ(w.State("h2", 11000), BeatState::kStopped) << "a host missing from a read keeps what was seen";
  // The manager's own reads fail: nothing is known once the last good read is the timeout old.
  EXPECT_EQ(w.State("h1", 15999), BeatState::kStopped);
  EXPECT_EQ(w.State("h1", 16000), BeatState::kUnknown);
  // A read after such a gap starts every host afresh (changes meanwhile have no time).
  w.Observe({{"h1", "a-9"}}, 30000);
  EXPECT_EQ(w.State("h1", 30000), BeatState::kUnknown);
  w.Observe({{"h1", "a-10"}}, 31000);
  EXPECT_EQ(w.State("h1", 31000), BeatState::kLive);
  EXPECT_EQ(BeatStateName(BeatState::kStopped), "stopped");
}

}  // namespace
}  // namespace uw::storage
