// uwctl guest (create, list, show, start, stop, delete, resize, migrate) and uwctl migration list.
#include <CLI/CLI.hpp>
#include <charconv>

#include "api/request_parser.h"
#include "cli/commands.h"

namespace uw::cli {
namespace {

struct GuestArgs {
  std::string name;
  // create
  int64_t vcpus = 1, memory = 256;
  std::string image, kind = "qemu", tenant, pool, automation, on_crash, lease_class, restart_priority;
  int64_t lease_term_s = 0, lease_floor_memory = 0, lease_bid = 0;
  bool no_start = false, no_paravirt = false;
  Json disks = Json::array();  // --volume and --disk-image, in the order given
  Json nics = Json::array();   // --nic, in the order given
  // delete
  bool force = false;
  // resize
  int64_t new_vcpus = 0, new_memory = 0;
  // migrate
  std::string to_host;
  bool cold = false;
  double bandwidth = 0;
};

// A --disk-image value IMAGE[:GIB] as a guest disk: a new volume cloned from IMAGE, of GIB GiB
// (default the image's size). Throws CLI::ValidationError (a usage error) for a GIB that is not a
// whole number from 1.
Json ImageDisk(const std::string& value) {
  const size_t colon = value.find(':');
  if (colon == std::string::npos) return {{"image", value}};
  int64_t gib = 0;
  const char* end = value.data() + value.size();
  auto [p, ec] = std::from_chars(value.data() + colon + 1, end, gib);
  if (ec != std::errc() || p != end || gib < 1) {
    throw CLI::ValidationError("--disk-image",
                               "'" + value + "': expected IMAGE or IMAGE:GIB (GIB a whole number from 1)");
  }
  return {{"image", value.substr(0, colon)}, {"size_gib", gib}};
}

// --volume and --disk-image: each value is appended to a.disks as it is parsed, so the disks keep
// the order of the command line (their default targets vda, vdb, ... follow it).
void AddGuestDiskOptions(CLI::App* create, GuestArgs& a) {
  create
      ->add_option_function<std::string>(
          "--volume",
          [&a](const std::string& v) {
            a.disks.push_back({{"volume", v}});
          },
          "a disk on this existing volume (repeatable; the disks keep the order given)")
      ->trigger_on_parse();
  create
      ->add_option_function<std::string>(
          "--disk-image", [&a](const std::string& v) { a.disks.push_back(ImageDisk(v)); },
          "IMAGE[:GIB]: a disk on a new volume GUEST-diskN (N: its index among the disks) cloned from catalogue "
          "image IMAGE, of GIB GiB (default the image's size), deleted with the guest (repeatable)")
      ->trigger_on_parse();
  create
      ->add_option_function<std::string>(
          "--nic",
          [&a](const std::string& v) {
            const size_t eq = v.find('=');
            Json nic = {{"network", v.substr(0, eq)}};
            if (eq != std::string::npos) nic["ip"] = v.substr(eq + 1);
            a.nics.push_back(std::move(nic));
          },
          "NETWORK[=IP]: a NIC on network NETWORK, with a port made for the guest (the lowest free address, or "
          "IP), deleted with it (repeatable; eth0, eth1, ... in the order given)")
      ->trigger_on_parse();
}

void AddGuestCreate(CLI::App* guest, Invocation& inv, GuestArgs& a) {
  auto* create = guest->add_subcommand("create", "create a guest (placed by the manager)");
  create->add_option("name", a.name, "guest name")->required();
  create->add_option("--vcpus", a.vcpus, "virtual CPUs")->check(CLI::PositiveNumber);
  create->add_option("--memory", a.memory, "memory in MiB")->check(CLI::PositiveNumber);
  create->add_option("--image", a.image, "image name known to the agents (e.g. tiny; catalogue images: --disk-image)");
  create->add_option("--kind", a.kind, "kvm | qemu | lxc")->check(CLI::IsMember({"kvm", "qemu", "lxc"}));
  create->add_option("--tenant", a.tenant, "owner tenant (admins and operators)");
  create->add_option("--pool", a.pool, "resource pool");
  create->add_option("--automation", a.automation, "DRS override: default | manual | automatic | disabled");
  create
      ->add_option("--on-crash", a.on_crash, "when it crashes: restart (default; 3 tries in 10 minutes) | keep | stop")
      ->check(CLI::IsMember({"restart", "keep", "stop"}));
  create
      ->add_option("--restart-priority", a.restart_priority,
                   "HA: the order of restarts when its host fails: high | medium (default) | low | disabled")
      ->check(CLI::IsMember({"high", "medium", "low", "disabled"}));
  create->add_flag("--no-start", a.no_start, "define but do not start");
  create->add_option("--lease-class", a.lease_class, "guaranteed (default) | elastic | preemptible")
      ->check(CLI::IsMember({"guaranteed", "elastic", "preemptible"}));
  create->add_option("--lease-term", a.lease_term_s, "the lease's term in seconds (default: open-ended)")
      ->check(CLI::PositiveNumber);
  create
      ->add_option("--lease-floor-memory", a.lease_floor_memory,
                   "elastic: the memory in MiB the lease may be shrunk to (default min(memory, 128))")
      ->check(CLI::PositiveNumber);
  create->add_option("--lease-bid", a.lease_bid, "credits per GiB-hour bid for the lease (the market broker)")
      ->check(CLI::NonNegativeNumber);
  create->add_flag("--no-paravirt", a.no_paravirt,
                   "emulated devices (SATA disk, e1000e NIC, no balloon) instead of virtio (VMs only)");
  AddGuestDiskOptions(create, a);
  inv.AddWait(create);
  create->callback([&inv, &a] {
    Json body = {{"name", a.name}, {"vcpus", a.vcpus}, {"memory_mib", a.memory}, {"kind", a.kind}};
    if (!a.disks.empty()) body["disks"] = a.disks;
    if (!a.nics.empty()) body["nics"] = a.nics;
    if (!a.image.empty()) body["image"] = a.image;
    if (!a.tenant.empty()) body["tenant"] = a.tenant;
    if (!a.pool.empty()) body["pool"] = a.pool;
    if (!a.automation.empty()) body["automation"] = a.automation;
    if (!a.on_crash.empty()) body["on_crash"] = a.on_crash;
    if (!a.restart_priority.empty()) body["restart_priority"] = a.restart_priority;
    if (!a.lease_class.empty()) body["lease_class"] = a.lease_class;
    if (a.lease_term_s > 0) body["lease_term_s"] = a.lease_term_s;
    if (a.lease_floor_memory > 0) body["lease_floor"] = {{"memory_mib", a.lease_floor_memory}};
    if (a.lease_bid > 0) body["lease_bid"] = a.lease_bid;
    if (a.no_start) body["start"] = false;
    if (a.no_paravirt) body["paravirt"] = false;
    AnswerTask(inv, inv.c.Call("POST", "/api/v1/guests", &body));
  });
}

void AddGuestList(CLI::App* guest, Invocation& inv) {
  guest->add_subcommand("list", "list guests")->callback([&inv] {
    AnswerList(inv, inv.c.List("/api/v1/guests", "guests"), "guests",
               {"NAME", "KIND", "STATE", "HOST", "VCPUS", "MEM_MIB", "TENANT", "CPU_USED"}, [](const Json& g) {
                 // kvm/virtio, qemu/emulated (device model), lxc.
                 std::string kind = Str(g["kind"]);
                 if (g.value("devices", "container") != "container") kind += "/" + Str(g["devices"]);
                 return std::vector<std::string>{Str(g["name"]),   kind,
                                                 Str(g["state"]),  Str(g["host"]),
                                                 Str(g["vcpus"]),  Str(g["memory_mib"]),
                                                 Str(g["tenant"]), Str(g["usage"]["cpu_cores"])};
               });
  });
}

// start, stop and delete: each starts a task on the named guest.
void AddGuestPowerCommands(CLI::App* guest, Invocation& inv, GuestArgs& a) {
  for (const char* op : {"start", "stop", "delete"}) {
    auto* cmd = guest->add_subcommand(op, std::string(op) + " a guest");
    cmd->add_option("name", a.name, "guest name")->required();
    if (std::string(op) == "delete") {
      cmd->add_flag("--force", a.force, "power a running guest off first (without it only a stopped guest is deleted)");
    }
    inv.AddWait(cmd);
    cmd->callback([&inv, &a, op = std::string(op)] {
      AnswerTask(inv, op == "delete" ? inv.c.Call("DELETE", "/api/v1/guests/" + a.name + (a.force ? "?force=true" : ""))
                                     : inv.c.Call("POST", "/api/v1/guests/" + a.name + "/" + op));
    });
  }
}

void AddGuestResize(CLI::App* guest, Invocation& inv, GuestArgs& a) {
  auto* resize = guest->add_subcommand("resize", "change vCPUs or memory within the guest's reservation");
  resize->add_option("name", a.name, "guest name")->required();
  resize->add_option("--vcpus", a.new_vcpus, "virtual CPUs");
  resize->add_option("--memory", a.new_memory, "memory in MiB");
  inv.AddWait(resize);
  resize->callback([&inv, &a] {
    Json body = Json::object();
    if (a.new_vcpus > 0) body["vcpus"] = a.new_vcpus;
    if (a.new_memory > 0) body["memory_mib"] = a.new_memory;
    AnswerTask(inv, inv.c.Call("POST", "/api/v1/guests/" + a.name + "/resize", &body));
  });
}

void AddGuestMigrate(CLI::App* guest, Invocation& inv, GuestArgs& a) {
  auto* migrate = guest->add_subcommand("migrate", "move a guest to another host (live; --cold for stop, move, start)");
  migrate->add_option("name", a.name, "guest name")->required();
  migrate->add_option("--to", a.to_host, "destination host")->required();
  migrate->add_flag("--cold", a.cold, "stop, move and start (containers, non-migratable guests)");
  migrate->add_option("--bandwidth", a.bandwidth, "starting bandwidth limit in MiB/s");
  inv.AddWait(migrate);
  migrate->callback([&inv, &a] {
    Json body = {{"host", a.to_host}, {"mode", a.cold ? "cold" : "live"}};
    if (a.bandwidth > 0) body["bandwidth_mib_s"] = a.bandwidth;
    AnswerTask(inv, inv.c.Call("POST", "/api/v1/guests/" + a.name + "/migrate", &body));
  });
}

struct MigrationArgs {
  std::string of_guest;
  int64_t list_limit = 100;
};

}  // namespace

void AddGuestCommands(CLI::App& app, Invocation& inv) {
  GuestArgs& a = inv.Own<GuestArgs>();
  auto* guest = app.add_subcommand("guest", "guests (virtual machines and containers)");
  guest->require_subcommand(1);
  AddGuestCreate(guest, inv, a);
  AddGuestList(guest, inv);
  AddObjectCall(guest, inv,
                {"show", "show a guest and why it is where it is", "name", "guest name", "GET", "/api/v1/guests/"},
                a.name);
  AddGuestPowerCommands(guest, inv, a);
  AddGuestResize(guest, inv, a);
  AddGuestMigrate(guest, inv, a);
}

void AddMigrationCommands(CLI::App& app, Invocation& inv) {
  MigrationArgs& a = inv.Own<MigrationArgs>();
  auto* migration = app.add_subcommand("migration", "live migrations and their figures");
  migration->require_subcommand(1);
  auto* mlist = migration->add_subcommand("list", "recent migrations (phase, time, downtime)");
  mlist->add_option("--guest", a.of_guest, "only this guest's");
  mlist->add_option("--limit", a.list_limit, "newest N (0: all)")->check(CLI::NonNegativeNumber);
  mlist->callback([&inv, &a] {
    AnswerList(inv,
               inv.c.List("/api/v1/migrations" +
                              (a.of_guest.empty() ? std::string() : "?guest=" + api::PercentEncode(a.of_guest)),
                          "migrations", a.list_limit),
               "migrations", {"ID", "GUEST", "FROM", "TO", "MODE", "PHASE", "TOTAL MS", "DOWNTIME MS", "ERROR"},
               [](const Json& m) {
                 return std::vector<std::string>{Str(m["id"]),
                                                 Str(m["guest"]),
                                                 Str(m["source"]),
                                                 Str(m["destination"]),
                                                 Str(m["mode"]),
                                                 Str(m["phase"]),
                                                 Str(m["stats"]["total_ms"]),
                                                 Str(m["stats"]["downtime_ms"]),
                                                 Str(m["error"])};
               });
  });
}

}  // namespace uw::cli
