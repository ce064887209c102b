#include "tests/testbed_client.h"

#include <signal.h>
#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>

namespace uw::testing {

Result<Testbed> Testbed::Load() {
  const char* env = std::getenv("UW_TESTBED_DIR");
  Testbed t;
  t.dir = env && *env ? env : "/var/tmp/uw-testbed";
  const std::string path = t.dir + "/testbed.json";
  auto j = LoadJsonFile(path);
  if (!j.ok()) {
    return FailedPreconditionError(j.status().message() + " (is the test bed up? scripts/testbed up 2 --agent build/vmm/uw-agent)");
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
    t.hosts.push_back(host);
  }
  t.guest = (*j)["guest"];
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
    return DeadlineExceededError("agent of " + bed.hosts.at(i).name + " did not exit on signal " + std::to_string(signal));
  }
  return Status::Ok();
}

Status RestartAgents(Testbed& bed) {
  const char* src = std::getenv("UW_SOURCE_DIR");
  const char* bin = std::getenv("UW_AGENT_BIN");
  if (!src || !bin) return FailedPreconditionError("UW_SOURCE_DIR and UW_AGENT_BIN must be set (ctest does)");
  auto up = RunCommand(std::string(src) + "/scripts/testbed up " + std::to_string(bed.hosts.size()) + " --agent " +
                       bin + " 2>&1");
  if (up.exit_code != 0) return InternalError("scripts/testbed up failed: " + up.output);
  UW_ASSIGN_OR_RETURN(bed, Testbed::Load());
  return Status::Ok();
}

}  // namespace uw::testing
