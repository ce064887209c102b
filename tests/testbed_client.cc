#include "tests/testbed_client.h"

#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

namespace uw::testing {

Result<Testbed> Testbed::Load() {
  const char* env = std::getenv("UW_TESTBED_DIR");
  Testbed t;
  t.dir = env && *env ? env : "/var/tmp/uw-testbed";
  const std::string path = t.dir + "/testbed.json";
  auto j = LoadJsonFile(path);
  if (!j.ok()) {
    return FailedPreconditionError(j.status().message() +
                                   " (is the test bed up? scripts/testbed up 2 --agent build/vmm/uw-agent)");
  }
  UW_ASSIGN_OR_RETURN(JsonView root, JsonView::Of(*j, path));
  UW_ASSIGN_OR_RETURN(auto hosts, root.Objects("hosts"));
  for (const auto& h : hosts) {
    TestbedHost host;
    UW_ASSIGN_OR_RETURN(host.name, h.String("name"));
    UW_ASSIGN_OR_RETURN(host.address, h.String("address"));
    UW_ASSIGN_OR_RETURN(host.libvirt_uri, h.String("libvirt_uri"));
    UW_ASSIGN_OR_RETURN(host.lxc_uri, h.String("lxc_uri", ""));
    UW_ASSIGN_OR_RETURN(host.agent_url, h.String("agent_url", ""));
    UW_ASSIGN_OR_RETURN(host.agent_token, h.String("agent_token", ""));
    UW_ASSIGN_OR_RETURN(host.dir, h.String("dir", ""));
    UW_ASSIGN_OR_RETURN(host.ovsdb, h.String("ovsdb", ""));
    t.hosts.push_back(host);
  }
  t.guest = (*j)["guest"];
  t.ceph = j->value("ceph", Json());
  return t;
}

api::HttpClient Testbed::Agent(size_t i) const {
  api::ClientOptions o;
  o.base_url = hosts.at(i).agent_url;
  o.bearer_token = hosts.at(i).agent_token;
  o.timeout_ms = 120'000;
  return api::HttpClient(o);
}

CommandResult RunCommand(const std::string& command) {
  CommandResult r;
  FILE* p = popen(command.c_str(), "r");
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.output.append(buf, n);
  int status = pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

Status StopAgent(const Testbed& bed, size_t i, int signal) {
  std::ifstream pidfile(bed.hosts.at(i).dir + "/agent.pid");
  pid_t pid = 0;
  if (!(pidfile >> pid)) return NotFoundError("no agent.pid in " + bed.hosts.at(i).dir);
  if (kill(pid, signal) != 0) return InternalError("cannot signal agent pid " + std::to_string(pid));
  if (!WaitFor([pid] { return kill(pid, 0) != 0; }, std::chrono::seconds(20))) {
    return DeadlineExceededError("agent of " + bed.hosts.at(i).name + " did not exit on signal " +
                                 std::to_string(signal));
  }
  return Status::Ok();
}

Status RestartAgents(Testbed& bed) {
  const char* src = std::getenv("UW_SOURCE_DIR");
  const char* bin = std::getenv("UW_AGENT_BIN");
  if (!src || !bin) return FailedPreconditionError("UW_SOURCE_DIR and UW_AGENT_BIN must be set (ctest does)");
  // The same test bed again: `up` without --ceph would stop its Ceph.
  const std::string ceph = bed.ceph.is_object() ? " --ceph " + bed.ceph.value("store", "memstore") : "";
  auto up = RunCommand(std::string(src) + "/scripts/testbed up " + std::to_string(bed.hosts.size()) + " --agent " +
                       bin + ceph + " 2>&1");
  if (up.exit_code != 0) return InternalError("scripts/testbed up failed: " + up.output);
  UW_ASSIGN_OR_RETURN(bed, Testbed::Load());
  return Status::Ok();
}

// ---------------------------------------------------------------------------------------------
// TickWatcher

TickWatcher::TickWatcher(std::vector<std::string> files, std::string tag)
    : files_(std::move(files)), prefix_("UW-TICK " + tag + " "), thread_([this] { Run(); }) {}

void TickWatcher::Stop() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
}

size_t TickWatcher::Seen(size_t i) {
  std::lock_guard l(mu_);
  return i < per_file_.size() ? per_file_[i] : 0;
}

int64_t TickWatcher::Missing() {
  std::lock_guard l(mu_);
  if (first_.empty()) return 0;
  return first_.rbegin()->first - first_.begin()->first + 1 - static_cast<int64_t>(first_.size());
}

double TickWatcher::MaxGapMs() {
  std::lock_guard l(mu_);
  double gap = 0;
  for (auto it = first_.begin(); it != first_.end(); ++it) {
    auto next = std::next(it);
    if (next == first_.end() || next->first != it->first + 1) continue;
    gap = std::max(gap, std::chrono::duration<double, std::milli>(next->second - it->second).count());
  }
  return gap;
}

void TickWatcher::Run() {
  sched_param sp{};
  sp.sched_priority = 10;
  realtime_ = pthread_setschedparam(pthread_self(), SCHED_FIFO, &sp) == 0;
  struct Tail {
    ino_t inode = 0;
    off_t offset = 0;
    std::string partial;
  };
  std::vector<Tail> tails(files_.size());
  {
    std::lock_guard l(mu_);
    per_file_.assign(files_.size(), 0);
  }
  std::vector<char> buf(65536);
  while (!stop_) {
    for (size_t i = 0; i < files_.size(); ++i) {
      struct stat st;
      if (stat(files_[i].c_str(), &st) != 0) continue;
      Tail& t = tails[i];
      if (st.st_ino != t.inode || st.st_size < t.offset) t = Tail{st.st_ino, 0, ""};
      if (st.st_size == t.offset) continue;
      int fd = open(files_[i].c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0) continue;
      ssize_t n;
      while ((n = pread(fd, buf.data(), buf.size(), t.offset)) > 0) {
        t.offset += n;
        t.partial.append(buf.data(), static_cast<size_t>(n));
      }
      close(fd);
      const auto now = std::chrono::steady_clock::now();
      size_t start = 0, end;
      std::lock_guard l(mu_);
      while ((end = t.partial.find('\n', start)) != std::string::npos) {
        std::string_view line(t.partial.data() + start, end - start);
        start = end + 1;
        size_t at = line.find(prefix_);
        if (at == std::string_view::npos) continue;
        int64_t v = std::atoll(std::string(line.substr(at + prefix_.size())).c_str());
        if (first_.emplace(v, now).second) ++per_file_[i];
      }
      t.partial.erase(0, start);
    }
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
}

// ---------------------------------------------------------------------------------------------
// Ping-pong live migration stress

std::string ConsoleLogOf(const Testbed& bed, size_t i, const std::string& guest) {
  return bed.hosts.at(i).dir + "/agent-state/console/" + guest + ".log";
}

Json PingPongMoveToJson(const PingPongMove& m) {
  return {{"move", m.number},
          {"from", m.from},
          {"to", m.to},
          {"total_ms", m.total_ms},
          {"downtime_ms", m.downtime_ms},
          {"guest_pause_ms", m.guest_pause_ms},
          {"answered", m.answered},
          {"panicked", m.panicked}};
}

namespace {

std::string Tail(const std::string& path, size_t bytes) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string all = ss.str();
  return all.size() > bytes ? all.substr(all.size() - bytes) : all;
}

bool ShowsPanic(const std::string& console) {
  for (const char* marker : {"Kernel panic", "BUG:", "Oops:", "general protection fault", "soft lockup"}) {
    if (console.find(marker) != std::string::npos) return true;
  }
  return false;
}

// Runs `command` in the guest through host `i`'s agent, retrying while the channel reconnects.
Result<Json> GuestExec(const Testbed& bed, size_t i, const std::string& guest, const std::string& command,
                       std::chrono::seconds patience) {
  Json body = {{"command", command}, {"timeout_s", 20}};
  const auto deadline = std::chrono::steady_clock::now() + patience;
  while (true) {
    auto r = bed.Agent(i).Call("POST", "/api/v1/guests/" + guest + "/exec", &body);
    if (r.ok() || std::chrono::steady_clock::now() >= deadline) return r;
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
}

}  // namespace

Result<std::vector<PingPongMove>> RunPingPong(const Testbed& bed, const std::string& guest, int moves, int dirty_mib,
                                              const std::function<void(const PingPongMove&)>& each) {
  if (bed.hosts.size() < 2) return FailedPreconditionError("the ping-pong run needs two test-bed hosts");
  const std::string gpath = "/api/v1/guests/" + guest;
  UW_ASSIGN_OR_RETURN(Json info, bed.Agent(0).Call("GET", gpath));
  const int64_t memory_mib = info.value("max_memory_mib", int64_t{256});
  const int64_t vcpus = info.value("max_vcpus", int64_t{1});
  // Load: one CPU spinning, `dirty_mib` MiB of tmpfs rewritten from /dev/urandom for ever, and the
  // console ticking (the guest-side pause).
  const std::string dirty =
      "(while true; do dd if=/dev/urandom of=/tmp/uw-dirty bs=1M count=" + std::to_string(dirty_mib) +
      " 2>/dev/null; done) >/dev/null 2>&1 &";
  for (const std::string& c : {std::string("burn 100000"), dirty, std::string("tick 100000 pingpong")}) {
    UW_ASSIGN_OR_RETURN(Json r, GuestExec(bed, 0, guest, c, std::chrono::seconds(60)));
    if (r.value("exit_code", -1) != 0) return InternalError("guest command '" + c + "' failed: " + r.dump());
  }
  std::vector<PingPongMove> out;
  size_t from = 0;
  for (int n = 1; n <= moves; ++n) {
    const size_t to = 1 - from;
    PingPongMove m;
    m.number = n;
    m.from = bed.hosts[from].name;
    m.to = bed.hosts[to].name;
    TickWatcher ticks({ConsoleLogOf(bed, from, guest), ConsoleLogOf(bed, to, guest)}, "pingpong");
    WaitFor([&] { return ticks.Seen(0) >= 50; }, std::chrono::seconds(30));
    Json prep = {{"guest", guest}, {"kind", info.value("kind", "qemu")}, {"memory_mib", memory_mib}, {"vcpus", vcpus}};
    UW_ASSIGN_OR_RETURN(Json dest, bed.Agent(to).Call("POST", "/api/v1/migrations/prepare", &prep));
    Json body = {{"destination",
                  {{"host", dest["host"]}, {"migration_uri", dest["migration_uri"]}, {"state_dir", dest["state_dir"]}}},
                 {"bandwidth_mib_s", 1024},
                 {"auto_converge", true}};
    UW_ASSIGN_OR_RETURN(Json started, bed.Agent(from).Call("POST", gpath + "/migrate", &body));
    Json st;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(300);
    while (true) {
      UW_ASSIGN_OR_RETURN(st, bed.Agent(from).Call("GET", gpath + "/migration"));
      if (st.value("state", "") != "running") break;
      if (std::chrono::steady_clock::now() >= deadline) {
        return DeadlineExceededError("move " + std::to_string(n) + " did not finish in 300 s: " + st.dump());
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    if (st.value("state", "") != "completed") {
      return InternalError("move " + std::to_string(n) + " " + m.from + " -> " + m.to + " ended " + st.dump());
    }
    const Json job = st.value("job", Json::object());
    m.total_ms = job.value("elapsed_ms", 0.0);
    m.downtime_ms = job.value("downtime_ms", 0.0);
    auto alive = GuestExec(bed, to, guest, "echo alive-" + std::to_string(n), std::chrono::seconds(90));
    m.answered = alive.ok() && alive->value("output", "") == "alive-" + std::to_string(n) + "\n";
    WaitFor([&] { return ticks.Seen(1) >= 50; }, std::chrono::seconds(m.answered ? 30 : 1));
    ticks.Stop();
    m.guest_pause_ms = ticks.MaxGapMs();
    const std::string console = Tail(ConsoleLogOf(bed, to, guest), 1 << 20);
    m.panicked = ShowsPanic(console);
    if (!m.answered || m.panicked) {
      std::string tail = console.size() > 3072 ? console.substr(console.size() - 3072) : console;
      // The ticks drown the interesting lines: keep the others.
      std::string kept, line;
      std::istringstream lines(tail);
      while (std::getline(lines, line)) {
        if (line.find("UW-TICK") == std::string::npos) kept += line + "\n";
      }
      m.console_tail = kept;
      if (!alive.ok()) m.console_tail += "[exec: " + alive.status().ToString() + "]\n";
    }
    out.push_back(m);
    if (each) each(m);
    if (!m.answered || m.panicked) break;
    from = to;
  }
  return out;
}

}  // namespace uw::testing
