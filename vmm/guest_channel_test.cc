#include "vmm/guest_channel.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <functional>
#include <thread>

#include "common/base64.h"

namespace uw::vmm {
namespace {

// Plays the guest's side of the channel: answers each line with `reply(id, command)`.
class FakeGuest {
 public:
  explicit FakeGuest(std::function<std::string(const std::string&, const std::string&)> reply)
      : reply_(std::move(reply)) {
    path_ = (std::filesystem::temp_directory_path() /
             ("uw-chan-" + std::to_string(getpid()) + "-" + std::to_string(counter_++) + ".sock"))
                .string();
    listen_fd_ = socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strcpy(addr.sun_path, path_.c_str());
    unlink(path_.c_str());
    EXPECT_EQ(bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    EXPECT_EQ(listen(listen_fd_, 1), 0);
    thread_ = std::thread([this] {
      int fd = accept(listen_fd_, nullptr, nullptr);
      if (fd < 0) return;
      std::string buf;
      char c;
      while (read(fd, &c, 1) == 1) {
        if (c != '\n') {
          buf.push_back(c);
          continue;
        }
        auto sp = buf.find(' ');
        std::string out = reply_(buf.substr(0, sp), buf.substr(sp + 1));
        buf.clear();
        if (out == "CLOSE") break;
        if (!out.empty() && write(fd, out.data(), out.size()) < 0) break;
      }
      close(fd);
    });
  }
  ~FakeGuest() {
    shutdown(listen_fd_, SHUT_RDWR);
    close(listen_fd_);
    thread_.join();
    unlink(path_.c_str());
  }
  const std::string& path() const { return path_; }

 private:
  static inline int counter_ = 0;
  std::function<std::string(const std::string&, const std::string&)> reply_;
  std::string path_;
  int listen_fd_ = -1;
  std::thread thread_;
};

TEST(GuestChannelTest, RoundTrip) {
  FakeGuest guest([](const std::string& id, const std::string& cmd) {
    if (cmd == "memtotal") return id + " 0 " + Base64Encode("250000\n") + "\n";
    return id + " 127 " + Base64Encode("sh: " + cmd + ": not found\n") + "\n";
  });
  GuestChannel ch(guest.path());
  auto r = ch.Call("memtotal", std::chrono::seconds(5));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->exit_code, 0);
  EXPECT_EQ(r->output, "250000\n");
  r = ch.Call("frobnicate", std::chrono::seconds(5));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->exit_code, 127);
  EXPECT_EQ(r->output, "sh: frobnicate: not found\n");
}

TEST(GuestChannelTest, SkipsStaleRepliesAndTimesOut) {
  int calls = 0;
  FakeGuest guest([&calls](const std::string& id, const std::string& cmd) -> std::string {
    ++calls;
    if (cmd == "slow") return "";  // never answers
    // Also answer the earlier, timed-out request late: the channel must skip it.
    return "1 0 " + Base64Encode("late") + "\n" + id + " 0 " + Base64Encode("fresh") + "\n";
  });
  GuestChannel ch(guest.path());
  auto r = ch.Call("slow", std::chrono::milliseconds(100));
  EXPECT_EQ(r.status().code(), StatusCode::kDeadlineExceeded);
  r = ch.Call("fast", std::chrono::seconds(5));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->output, "fresh");
}

TEST(GuestChannelTest, ErrorsAreClear) {
  GuestChannel missing("/nonexistent/uw.sock");
  EXPECT_EQ(missing.Call("ping", std::chrono::seconds(1)).status().code(), StatusCode::kUnavailable);
  FakeGuest guest([](const std::string&, const std::string&) { return std::string("CLOSE"); });
  GuestChannel ch(guest.path());
  EXPECT_EQ(ch.Call("a\nb", std::chrono::seconds(1)).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ch.Call("ping", std::chrono::seconds(5)).status().code(), StatusCode::kUnavailable);
}

}  // namespace
}  // namespace uw::vmm
