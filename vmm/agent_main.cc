// uw-agent: the per-host daemon. Usage: uw-agent --config /etc/underware/agent.json
// SIGTERM or SIGINT stops the agent; guests keep running and are adopted on the next start.
#include <signal.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <string>
#include <vector>

#include "common/log.h"
#include "storage/heartbeat.h"
#include "vmm/agent.h"
#include "vmm/libvirt_driver.h"
#include "vmm/manager_link.h"

namespace {

int Usage() {
  std::fprintf(stderr, "usage: uw-agent --config FILE\n");
  return 2;
}

// A daemon keeps none of its starter's descriptors besides stdin, stdout and stderr: an inherited
// lock (flock(1) around a test-bed session that started the agent) would otherwise stay held for
// as long as the agent runs, and every later session would wait for it for ever.
void CloseInheritedDescriptors() {
  std::vector<int> fds;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/proc/self/fd", ec)) {
    try {
      int fd = std::stoi(e.path().filename().string());
      if (fd > 2) fds.push_back(fd);
    } catch (...) {
    }
  }
  for (int fd : fds) close(fd);  // one of them was the directory's own, already closed: EBADF
}

}  // namespace

namespace {

int Main(int argc, char** argv) {
  CloseInheritedDescriptors();
  std::string config_path;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--config" && i + 1 < argc) {
      config_path = argv[++i];
    } else if (a.rfind("--config=", 0) == 0) {
      config_path = a.substr(9);
    } else if (a == "--help" || a == "-h") {
      Usage();
      return 0;
    } else {
      std::fprintf(stderr, "uw-agent: unknown argument '%s'\n", a.c_str());
      return Usage();
    }
  }
  if (config_path.empty()) return Usage();
  auto config = uw::vmm::LoadAgentConfig(config_path);
  if (!config.ok()) {
    std::fprintf(stderr, "uw-agent: %s\n", config.status().ToString().c_str());
    return 2;
  }
  if (auto s = uw::InitLogging("uw-agent", config->log_level, config->log_file); !s.ok()) {
    std::fprintf(stderr, "uw-agent: %s\n", s.ToString().c_str());
    return 2;
  }
  // Block the stop signals in every thread; main waits for them below.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  uw::vmm::KvmSupport kvm = uw::vmm::DetectKvm(config->sys_root);
  if (!kvm.usable) spdlog::warn("hardware KVM is not usable here: {}", kvm.reason);

  auto& loop = uw::vmm::LibvirtEventLoop::Instance();
  if (auto s = loop.Start(); !s.ok()) {
    spdlog::error("{}", s.ToString());
    return 1;
  }
  auto vm = uw::vmm::LibvirtHypervisor::Open(config->libvirt_uri);
  if (!vm.ok()) {
    spdlog::error("{}", vm.status().ToString());
    return 1;
  }
  std::unique_ptr<uw::vmm::LibvirtHypervisor> ct;
  if (!config->lxc_uri.empty()) {
    auto c = uw::vmm::LibvirtHypervisor::Open(config->lxc_uri);
    if (!c.ok()) {
      spdlog::error("{}", c.status().ToString());
      return 1;
    }
    ct = std::move(*c);
  }
  uw::vmm::LibvirtHypervisor* vm_raw = vm->get();
  uw::vmm::LibvirtHypervisor* ct_raw = ct.get();
  uw::vmm::Agent agent(*config, std::move(*vm), std::move(ct), kvm);
  auto on_event = [&agent](const uw::vmm::LifecycleEvent& e) {
    spdlog::info("event: guest {} {} ({})", e.guest, e.event, e.detail);
    agent.RecordEvent(e);
  };
  for (auto* h : {vm_raw, ct_raw}) {
    if (!h) continue;
    if (auto s = h->WatchLifecycle(on_event); !s.ok()) spdlog::warn("{}", s.ToString());
  }
  if (auto s = agent.Start(); !s.ok()) {
    spdlog::error("cannot start: {}", s.ToString());
    return 1;
  }
  std::unique_ptr<uw::vmm::ManagerLink> link;
  if (!config->manager_url.empty()) {
    uw::vmm::ManagerLinkOptions lo;
    lo.manager_url = config->manager_url;
    lo.join_token = config->join_token;
    lo.host_name = config->host_name;
    lo.agent_url = !config->advertise_url.empty()
                       ? config->advertise_url
                       : "http://" + config->listen_address + ":" + std::to_string(agent.port());
    lo.agent_token = config->token;
    lo.heartbeat_interval_ms = config->heartbeat_interval_ms;
    lo.samples_path = config->state_dir + "/samples.log";
    link = std::make_unique<uw::vmm::ManagerLink>(lo, uw::vmm::RouterSource(agent.router(), config->token));
    link->Start();
  }
  // HA's second path to this host (storage/heartbeat.h): beats in the guests' pool while it runs.
  std::unique_ptr<uw::storage::HeartbeatWriter> storage_beat;
  if (config->ceph && config->ceph->storage_heartbeat) {
    uw::storage::RbdConfig rc;
    rc.config_file = config->ceph->conf;
    rc.user = config->ceph->user;
    rc.keyring = config->ceph->keyring;
    rc.pool = config->ceph->pool;
    storage_beat = std::make_unique<uw::storage::HeartbeatWriter>(
        rc, config->host_name, std::chrono::milliseconds(config->heartbeat_interval_ms));
    storage_beat->Start();
  }
  int sig = 0;
  sigwait(&stop_signals, &sig);
  spdlog::info("received {}; stopping (guests keep running)", strsignal(sig));
  if (storage_beat) storage_beat->Stop();
  if (link) link->Stop();
  agent.Stop();
  loop.Stop();
  return 0;
}

}  // namespace

// Anything thrown past Main (allocation failure, a library's exception) is reported, not a crash
// with an unexplained abort.
int main(int argc, char** argv) {
  try {
    return Main(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: %s\n", "uw-agent", e.what());
    return 1;
  }
}
