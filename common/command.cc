#include "common/command.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <map>

extern char** environ;

namespace uw {
namespace {

constexpr size_t kMaxOutput = size_t{64} * 1024;

// Both ends of a pipe, closed when this goes out of scope.
struct Pipe {
  std::array<int, 2> fd{-1, -1};
  Pipe() = default;
  Pipe(const Pipe&) = delete;
  Pipe& operator=(const Pipe&) = delete;
  ~Pipe() {
    for (int f : fd) {
      if (f >= 0) close(f);
    }
  }
  bool Open() { return pipe2(fd.data(), O_CLOEXEC) == 0; }
  void CloseWriteEnd() {
    close(fd[1]);
    fd[1] = -1;
  }
};

std::vector<std::string> Environment(const std::vector<std::pair<std::string, std::string>>& extra) {
  std::map<std::string, std::string> vars;
  for (char** e = environ; e && *e; ++e) {
    std::string_view kv(*e);
    const size_t eq = kv.find('=');
    if (eq != std::string_view::npos) vars[std::string(kv.substr(0, eq))] = std::string(kv.substr(eq + 1));
  }
  for (const auto& [k, v] : extra) vars[k] = v;
  std::vector<std::string> out;
  out.reserve(vars.size());
  for (const auto& [k, v] : vars) out.push_back(k + "=" + v);
  return out;
}

// Reads what is ready on the open descriptors of `fds` into `bufs` until both are closed or the
// deadline passes; false on the deadline.
bool Drain(std::array<int, 2> fds, std::array<std::string*, 2> bufs, std::chrono::steady_clock::time_point deadline) {
  std::array<pollfd, 2> p{};
  for (;;) {
    nfds_t n = 0;
    std::array<int, 2> which{};
    for (int i = 0; i < 2; ++i) {
      if (fds[i] < 0) continue;
      p[n] = {fds[i], POLLIN, 0};
      which[n++] = i;
    }
    if (n == 0) return true;
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    const int r = poll(p.data(), n, static_cast<int>(left.count()));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return r == 0 ? false : true;
    for (nfds_t k = 0; k < n; ++k) {
      if (!(p[k].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      std::array<char, 4096> chunk{};
      const ssize_t got = read(p[k].fd, chunk.data(), chunk.size());
      if (got > 0) {
        std::string& b = *bufs[which[k]];
        b.append(chunk.data(), std::min(static_cast<size_t>(got), kMaxOutput - std::min(kMaxOutput, b.size())));
      } else if (got == 0 || errno != EINTR) {
        fds[which[k]] = -1;
      }
    }
  }
}

}  // namespace

Result<CommandResult> RunCommand(const std::vector<std::string>& argv,
                                 const std::vector<std::pair<std::string, std::string>>& env,
                                 std::chrono::milliseconds timeout) {
  if (argv.empty() || argv[0].empty()) return InvalidArgumentError("no command to run");
  Pipe out, err;
  if (!out.Open() || !err.Open()) return UnavailableError(std::string("pipe: ") + std::strerror(errno));
  std::vector<std::string> vars = Environment(env);
  std::vector<char*> cargv, cenv;
  for (const auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
  cargv.push_back(nullptr);
  for (auto& v : vars) cenv.push_back(v.data());
  cenv.push_back(nullptr);

  posix_spawn_file_actions_t fa;
  posix_spawnattr_t attr;
  posix_spawn_file_actions_init(&fa);
  posix_spawnattr_init(&attr);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&fa, out.fd[1], 1);
  posix_spawn_file_actions_adddup2(&fa, err.fd[1], 2);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  posix_spawnattr_setpgroup(&attr, 0);
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &all);
  pid_t pid = -1;
  const int rc = posix_spawnp(&pid, cargv[0], &fa, &attr, cargv.data(), cenv.data());
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) return UnavailableError("cannot run " + argv[0] + ": " + std::strerror(rc));
  out.CloseWriteEnd();
  err.CloseWriteEnd();

  CommandResult result;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  bool in_time = Drain({out.fd[0], err.fd[0]}, {&result.out, &result.err}, deadline);
  int wstatus = 0;
  // A program may close its output and go on running: it still has until the deadline to exit.
  while (in_time) {
    const pid_t w = waitpid(pid, &wstatus, WNOHANG);
    if (w == pid || (w < 0 && errno != EINTR)) break;
    if (std::chrono::steady_clock::now() >= deadline) {
      in_time = false;
      break;
    }
    usleep(5000);
  }
  if (!in_time) {
    kill(-pid, SIGKILL);
    while (waitpid(pid, &wstatus, 0) < 0 && errno == EINTR) {
    }
  }
  if (!in_time) {
    return DeadlineExceededError(argv[0] + " did not finish within " + std::to_string(timeout.count()) + " ms");
  }
  result.exit_code = WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : -1;
  return result;
}

}  // namespace uw
