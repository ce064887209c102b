// LibvirtHypervisor: containers (lxc://). Whether a container's init runs, and running a command
// inside a container: a forked child joins its cgroups and namespaces and forks the command.
#include <fcntl.h>
#include <libvirt/libvirt-lxc.h>
#include <libvirt/virterror.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "vmm/domain_xml.h"
#include "vmm/libvirt_driver.h"
#include "vmm/libvirt_internal.h"

namespace uw::vmm {
namespace {

constexpr size_t kMaxExecOutput = 1u << 20;
// The exit code of the child when it could not get into the container.
constexpr int kExecSetupFailed = 125;

void CloseAll(const std::vector<int>& fds) {
  for (int fd : fds) close(fd);
}

// The cgroup.procs files of the container's cgroups: those of its libvirt_lxc process (whose pid
// is the domain id), so that a command is accounted and limited with the container.
Result<std::vector<std::string>> ContainerProcsFiles(virDomainPtr dom, std::string_view name) {
  const std::string lxc_pid = std::to_string(virDomainGetID(dom));
  std::stringstream cgs, mis;
  cgs << std::ifstream("/proc/" + lxc_pid + "/cgroup").rdbuf();
  mis << std::ifstream("/proc/self/mountinfo").rdbuf();
  const std::string proc_cgroup = cgs.str();
  if (proc_cgroup.empty()) {
    return InternalError("cannot read the cgroups of container '" + std::string(name) + "' (process " + lxc_pid + ")");
  }
  return CgroupProcsFiles(proc_cgroup, mis.str());
}

// The forked child: waits at the gate until the parent put it into the container's cgroups,
// enters the namespaces and runs the command in a grandchild (the pid namespace applies to
// children only). Only async-signal-safe calls here.
[[noreturn]] void RunInContainer(const int* ns, int n_ns, int out, int gate, char* const* args, char* const* envp) {
  dup2(out, 1);
  dup2(out, 2);
  int devnull = open("/dev/null", O_RDONLY);
  if (devnull >= 0) dup2(devnull, 0);
  char go = 0;
  if (read(gate, &go, 1) != 1) _exit(kExecSetupFailed);
  for (int i = 0; i < n_ns; ++i) {
    // EINVAL means we are in that namespace already (the user namespace of a container without
    // one): harmless, as libvirt's own virProcessSetNamespaces treats it.
    if (setns(ns[i], 0) < 0 && errno != EINVAL) {
      // Report which namespace and errno by hand.
      char msg[] = "uw-agent: setns #N failed: errno NNN\n";
      msg[17] = static_cast<char>('0' + i % 10);
      int e = errno;
      msg[33] = static_cast<char>('0' + e / 100 % 10);
      msg[34] = static_cast<char>('0' + e / 10 % 10);
      msg[35] = static_cast<char>('0' + e % 10);
      (void)!write(2, msg, sizeof msg - 1);
      _exit(kExecSetupFailed);
    }
  }
  if (chdir("/") < 0) _exit(kExecSetupFailed);
  pid_t inner = fork();
  if (inner == 0) {
    execve(args[0], args, envp);
    _exit(127);
  }
  int status = 0;
  if (inner < 0 || waitpid(inner, &status, 0) < 0) _exit(kExecSetupFailed);
  _exit(WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
}

// Writes `pid` into each cgroup.procs file; the first failure ("" when none).
std::string JoinCgroups(pid_t pid, const std::vector<std::string>& procs_files) {
  const std::string pid_text = std::to_string(pid);
  for (const auto& file : procs_files) {
    int fd = open(file.c_str(), O_WRONLY | O_CLOEXEC);
    std::string error;
    if (fd < 0 || write(fd, pid_text.data(), pid_text.size()) < 0) error = file + ": " + std::strerror(errno);
    if (fd >= 0) close(fd);
    if (!error.empty()) return error;
  }
  return "";
}

// Reads the child's output until it closes it or `deadline` passes (then kills it), and reaps it.
// kDeadlineExceeded on timeout.
Result<ExecResult> CollectOutput(pid_t pid, int out, Duration deadline, Clock& clock, std::string_view name) {
  ExecResult result;
  char buf[4096];
  bool timed_out = false;
  while (true) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock.Monotonic()).count();
    if (left <= 0) {
      timed_out = true;
      break;
    }
    pollfd p{out, POLLIN, 0};
    int r = poll(&p, 1, static_cast<int>(left));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) continue;
    ssize_t got = read(out, buf, sizeof buf);
    if (got <= 0) break;
    if (result.output.size() < kMaxExecOutput) result.output.append(buf, static_cast<size_t>(got));
  }
  close(out);
  if (timed_out) kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  if (timed_out) return DeadlineExceededError("command in container '" + std::string(name) + "' timed out");
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  if (result.exit_code == kExecSetupFailed && result.output.rfind("uw-agent: setns", 0) == 0) {
    return InternalError("could not enter the namespaces of container '" + std::string(name) + "': " + result.output);
  }
  return result;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Container init

bool InitCmdlineMatches(std::string_view cmdline, std::string_view init) {
  if (init.empty()) return false;
  std::vector<std::string_view> argv;
  for (size_t start = 0; start < cmdline.size() && argv.size() < 2;) {
    size_t end = cmdline.find('\0', start);
    if (end == std::string_view::npos) end = cmdline.size();
    argv.push_back(cmdline.substr(start, end - start));
    start = end + 1;
  }
  // The init itself, or the interpreter of an init script ("#!/bin/sh" makes argv
  // "/bin/sh /sbin/uw-container-init").
  return (!argv.empty() && argv[0] == init) || (argv.size() > 1 && argv[1] == init);
}

Result<bool> LibvirtHypervisor::ContainerInitRunning(std::string_view name) {
  UW_ASSIGN_OR_RETURN(virDomainPtr raw, Lookup(name));
  DomainHandle d(raw);
  if (virDomainIsActive(d.get()) != 1) return false;
  UW_ASSIGN_OR_RETURN(pid_t init, ContainerInitPid(d.get(), name));
  return init > 0;
}

bool LibvirtHypervisor::SignalContainerInit(virDomainPtr dom, std::string_view name, int signal) {
  auto init = ContainerInitPid(dom, name);
  if (!init.ok() || *init <= 0) return false;
  if (kill(*init, signal) != 0) {
    spdlog::warn("signalling the init (pid {}) of container '{}': {}", *init, name, std::strerror(errno));
    return false;
  }
  spdlog::info("container '{}': libvirtd does not know its init yet; sent signal {} to pid {} itself", name, signal,
               *init);
  return true;
}

bool LibvirtHypervisor::ReapEndedContainer(virDomainPtr dom, std::string_view name) {
  const int id = virDomainGetID(dom);
  if (id <= 0 || kill(id, 0) == 0 || errno != ESRCH) return false;
  const Duration grace_end = clock_.Monotonic() + std::chrono::seconds(1);
  while (clock_.Monotonic() < grace_end) {
    if (virDomainIsActive(dom) != 1) return true;  // libvirtd noticed by itself
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  spdlog::warn(
      "container '{}': its controller (pid {}) has exited but libvirtd still calls it running (it lost "
      "its monitor connection); destroying the stale domain",
      name, id);
  if (virDomainDestroy(dom) < 0 && virDomainIsActive(dom) == 1) {
    spdlog::warn("{}", LibvirtError("destroying ended container '" + std::string(name) + "'").message());
    return false;
  }
  virResetLastError();
  return true;
}

Result<pid_t> LibvirtHypervisor::ContainerInitPid(virDomainPtr dom, std::string_view name) {
  char* xml = virDomainGetXMLDesc(dom, 0);
  if (!xml) return LibvirtError("reading guest '" + std::string(name) + "'");
  auto spec = ParseDomainXml(xml);
  free(xml);
  if (!spec.ok()) return spec.status();
  if (spec->kind != GuestKind::kLxc)
    return InvalidArgumentError("guest '" + std::string(name) + "' is not a container");
  // The domain id of a container is the pid of its libvirt_lxc controller; the container's
  // init is the controller's child (a clone in new namespaces that execs the init).
  const int id = virDomainGetID(dom);
  if (id <= 0) return 0;
  const std::string controller = std::to_string(id);
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/proc", ec)) {
    const std::string pid = e.path().filename().string();
    if (pid.empty() || pid.find_first_not_of("0123456789") != std::string::npos) continue;
    const std::string stat = ReadSmallFile("/proc/" + pid + "/stat");
    // pid (comm) state ppid ...; comm may hold spaces and parentheses: parse after the last ')'.
    size_t close = stat.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream rest(stat.substr(close + 1));
    std::string state, ppid;
    rest >> state >> ppid;
    if (ppid != controller) continue;
    if (InitCmdlineMatches(ReadSmallFile("/proc/" + pid + "/cmdline"), spec->lxc_init)) {
      return static_cast<pid_t>(std::stol(pid));
    }
  }
  return 0;
}

// ---------------------------------------------------------------------------------------------
// Container exec

Result<std::vector<int>> LibvirtHypervisor::ContainerNamespaces(virDomainPtr dom, std::string_view name) {
  int* fds = nullptr;
  int nfds = virDomainLxcOpenNamespace(dom, &fds, 0);
  if (nfds >= 0) {
    std::vector<int> out(fds, fds + nfds);
    free(fds);
    return out;
  }
  // libvirtd learns the init's pid from an event its libvirt_lxc controller sends to its first
  // monitor client only; when that connection is lost at start-up (seen under load with libvirt
  // 11.3: "Init pid is not yet available" for the container's whole life while its init runs),
  // libvirtd never learns it. The namespaces are the init's: open them from /proc, as libvirt
  // itself does once it knows the pid.
  Status s = LibvirtError("entering container '" + std::string(name) + "'");
  if (s.code() != StatusCode::kFailedPrecondition && s.code() != StatusCode::kInternal) return s;
  UW_ASSIGN_OR_RETURN(pid_t init, ContainerInitPid(dom, name));
  if (init <= 0) {
    return FailedPreconditionError("container '" + std::string(name) + "' has no running init yet (" + s.message() +
                                   ")");
  }
  std::vector<int> opened;
  for (const char* ns : {"user", "ipc", "uts", "net", "pid", "mnt"}) {
    const std::string path = "/proc/" + std::to_string(init) + "/ns/" + ns;
    int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
      opened.push_back(fd);
    } else if (errno != ENOENT) {
      Status err =
          InternalError("entering container '" + std::string(name) + "': " + path + ": " + std::strerror(errno));
      CloseAll(opened);
      return err;
    }
  }
  return opened;
}

Result<ExecResult> LibvirtHypervisor::ExecInContainer(std::string_view name, const std::vector<std::string>& argv,
                                                      Duration timeout) {
  if (argv.empty()) return InvalidArgumentError("exec: empty command");
  UW_ASSIGN_OR_RETURN(virDomainPtr raw, Lookup(name));
  DomainHandle d(raw);
  if (virDomainIsActive(d.get()) != 1) {
    return FailedPreconditionError("guest '" + std::string(name) + "' is not running");
  }
  UW_ASSIGN_OR_RETURN(std::vector<int> ns, ContainerNamespaces(d.get(), name));
  auto procs_files = ContainerProcsFiles(d.get(), name);
  if (!procs_files.ok()) {
    CloseAll(ns);
    return procs_files.status();
  }
  int pipefd[2], gate[2];
  if (pipe2(pipefd, O_CLOEXEC) < 0) {
    CloseAll(ns);
    return InternalError(std::string("pipe: ") + std::strerror(errno));
  }
  if (pipe2(gate, O_CLOEXEC) < 0) {
    CloseAll({pipefd[0], pipefd[1]});
    CloseAll(ns);
    return InternalError(std::string("pipe: ") + std::strerror(errno));
  }
  // Everything the child needs is prepared before fork: it may only make async-signal-safe calls.
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  char env_path[] = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
  char* envp[] = {env_path, nullptr};
  pid_t pid = fork();
  if (pid == 0) {
    close(gate[1]);
    RunInContainer(ns.data(), static_cast<int>(ns.size()), pipefd[1], gate[0], args.data(), envp);
  }
  close(pipefd[1]);
  close(gate[0]);
  CloseAll(ns);
  if (pid < 0) {
    CloseAll({pipefd[0], gate[1]});
    return InternalError(std::string("fork: ") + std::strerror(errno));
  }
  const std::string join_error = JoinCgroups(pid, *procs_files);
  if (join_error.empty()) (void)!write(gate[1], "1", 1);
  close(gate[1]);  // without the byte the child exits before entering the container
  if (!join_error.empty()) {
    close(pipefd[0]);
    waitpid(pid, nullptr, 0);
    return InternalError("could not put the command into the cgroups of container '" + std::string(name) +
                         "': " + join_error);
  }
  return CollectOutput(pid, pipefd[0], clock_.Monotonic() + timeout, clock_, name);
}

}  // namespace uw::vmm
