#include "tests/testbed_client.h"

#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>

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

}  // namespace uw::testing
