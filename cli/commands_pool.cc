// uwctl pool: create, list, show, delete resource pools (reservations, limits, shares).
#include <CLI/CLI.hpp>

#include "cli/commands.h"

namespace uw::cli {
namespace {

struct PoolArgs {
  std::string name;
  std::string parent;
  double cpu_res = -1, cpu_limit = -1, mem_res = -1, mem_limit = -1;
  int64_t cpu_shares = 0, mem_shares = 0;
  bool fixed = false;
};

void AddPoolCreate(CLI::App* pool_cmd, Invocation& inv, PoolArgs& a) {
  auto* pcreate = pool_cmd->add_subcommand("create", "create a resource pool");
  pcreate->add_option("name", a.name, "pool name")->required();
  pcreate->add_option("--parent", a.parent, "parent pool (default: the cluster root)");
  pcreate->add_option("--cpu-reservation", a.cpu_res, "CPU cores reserved for the pool")->check(CLI::NonNegativeNumber);
  pcreate->add_option("--cpu-limit", a.cpu_limit, "CPU cores its guests may have (vCPUs) and use")
      ->check(CLI::NonNegativeNumber);
  pcreate->add_option("--cpu-shares", a.cpu_shares, "CPU shares (normal 4000)")->check(CLI::PositiveNumber);
  pcreate->add_option("--memory-reservation", a.mem_res, "memory reserved for the pool, MiB")
      ->check(CLI::NonNegativeNumber);
  pcreate->add_option("--memory-limit", a.mem_limit, "memory its guests may have, MiB")->check(CLI::NonNegativeNumber);
  pcreate->add_option("--memory-shares", a.mem_shares, "memory shares (normal 4000)")->check(CLI::PositiveNumber);
  pcreate->add_flag("--fixed", a.fixed, "not expandable: may not borrow reservation from its parent");
  pcreate->callback([&inv, &a] {
    Json body = {{"name", a.name}};
    if (!a.parent.empty()) body["parent"] = a.parent;
    Json cpu = Json::object(), mem = Json::object();
    if (a.cpu_res >= 0) cpu["reservation_cores"] = a.cpu_res;
    if (a.cpu_limit >= 0) cpu["limit_cores"] = a.cpu_limit;
    if (a.cpu_shares > 0) cpu["shares"] = a.cpu_shares;
    if (a.mem_res >= 0) mem["reservation_mib"] = a.mem_res;
    if (a.mem_limit >= 0) mem["limit_mib"] = a.mem_limit;
    if (a.mem_shares > 0) mem["shares"] = a.mem_shares;
    if (!cpu.empty()) body["cpu"] = cpu;
    if (!mem.empty()) body["memory"] = mem;
    if (a.fixed) body["expandable"] = false;
    Answer(inv, inv.c.Call("POST", "/api/v1/pools", &body));
  });
}

void AddPoolList(CLI::App* pool_cmd, Invocation& inv) {
  pool_cmd->add_subcommand("list", "list resource pools")->callback([&inv] {
    AnswerList(inv, inv.c.List("/api/v1/pools", "pools"), "pools",
               {"NAME", "PARENT", "CPU_RES", "CPU_LIMIT", "CPU_SHARES", "MEM_RES_MIB", "MEM_LIMIT_MIB", "MEM_SHARES"},
               [](const Json& p) {
                 const Json cpu = p.value("cpu", Json::object()), mem = p.value("memory", Json::object());
                 return std::vector<std::string>{Str(p["name"]),
                                                 Str(p.value("parent", Json(nullptr))),
                                                 Str(cpu.value("reservation_cores", Json(0))),
                                                 Str(cpu.value("limit_cores", Json(nullptr))),
                                                 Str(cpu.value("shares", Json(nullptr))),
                                                 Str(mem.value("reservation_mib", Json(0))),
                                                 Str(mem.value("limit_mib", Json(nullptr))),
                                                 Str(mem.value("shares", Json(nullptr)))};
               });
  });
}

}  // namespace

void AddPoolCommands(CLI::App& app, Invocation& inv) {
  PoolArgs& a = inv.Own<PoolArgs>();
  auto* pool_cmd = app.add_subcommand("pool", "resource pools (reservations, limits, shares)");
  pool_cmd->require_subcommand(1);
  AddPoolCreate(pool_cmd, inv, a);
  AddPoolList(pool_cmd, inv);
  AddObjectCall(pool_cmd, inv,
                {"show", "show a resource pool and its guests", "name", "pool name", "GET", "/api/v1/pools/"}, a.name);
  AddObjectCall(pool_cmd, inv,
                {"delete", "delete an empty resource pool", "name", "pool name", "DELETE", "/api/v1/pools/"}, a.name);
}

}  // namespace uw::cli
