// uwctl lease (list, show, extend, release, reclaim, repossessions) and uwctl notice (list, show,
// reply): a guest's resource leases, the notices that reclaim them and what was repossessed.
#include <CLI/CLI.hpp>

#include "api/request_parser.h"
#include "cli/commands.h"

namespace uw::cli {
namespace {

struct LeaseArgs {
  std::string id;
  std::string of_guest;
  int64_t list_limit = 100;
  // extend, reclaim and a counter reply: -1 is "not given"
  int64_t term_s = -1, vcpus = -1, memory = -1;
  // reclaim
  std::string action = "shrink", reason;
  int64_t notice_s = -1;
  bool urgent = false;
  // notice reply
  std::string reply;
  int64_t delay_s = -1;
  // extend --bid; budget set
  int64_t bid = -1, per_hour = -1;
  std::string tenant;
};

// "?guest=NAME" for --guest, or "".
std::string GuestQuery(const LeaseArgs& a) {
  return a.of_guest.empty() ? std::string() : "?guest=" + api::PercentEncode(a.of_guest);
}

// A field of {"vcpus", "memory_mib"} before and after a change: "4 -> 2", or "4" when it stays.
std::string Change(const Json& before, const Json& after, const char* field) {
  std::string b = Str(before.value(field, Json(nullptr))), a = Str(after.value(field, Json(nullptr)));
  return a == b ? b : b + " -> " + a;
}

// --guest and --limit of a list subcommand.
void AddListOptions(CLI::App* cmd, LeaseArgs& a) {
  cmd->add_option("--guest", a.of_guest, "only this guest's");
  cmd->add_option("--limit", a.list_limit, "newest N (0: all)")->check(CLI::NonNegativeNumber);
}

void AddLeaseList(CLI::App* lease, Invocation& inv, LeaseArgs& a) {
  auto* list = lease->add_subcommand("list", "leases, newest first");
  AddListOptions(list, a);
  list->callback([&inv, &a] {
    AnswerList(inv, inv.c.List("/api/v1/leases" + GuestQuery(a), "leases", a.list_limit), "leases",
               {"ID", "GUEST", "TENANT", "CLASS", "STATE", "VCPUS", "MEM_MIB", "FLOOR", "TERM_END_MS"},
               [](const Json& l) {
                 const Json granted = l.value("granted", Json::object()), floor = l.value("floor", Json::object());
                 return std::vector<std::string>{
                     Str(l["id"]),
                     Str(l["guest"]),
                     Str(l["tenant"]),
                     Str(l["class"]),
                     Str(l["state"]),
                     Str(granted.value("vcpus", Json(nullptr))),
                     Str(granted.value("memory_mib", Json(nullptr))),
                     Str(floor.value("vcpus", Json(nullptr))) + "/" + Str(floor.value("memory_mib", Json(nullptr))),
                     Str(l.value("term_end_ms", Json(nullptr)))};
               });
  });
}

void AddLeaseExtend(CLI::App* lease, Invocation& inv, LeaseArgs& a) {
  auto* extend = lease->add_subcommand(
      "extend", "renew a lease's term and/or change its amount from the term end (at least one option)");
  extend->add_option("id", a.id, "lease id")->required();
  extend->add_option("--term-s", a.term_s, "a new term in seconds (from the current term end; from now if open-ended)")
      ->check(CLI::PositiveNumber);
  extend->add_option("--vcpus", a.vcpus, "virtual CPUs granted from the term end")->check(CLI::NonNegativeNumber);
  extend->add_option("--memory-mib", a.memory, "memory in MiB granted from the term end")
      ->check(CLI::NonNegativeNumber);
  extend->add_option("--bid", a.bid, "credits per GiB-hour bid for it from now (the market broker; within the budget)")
      ->check(CLI::NonNegativeNumber);
  extend->callback([&inv, &a] {
    Json body = Json::object();
    if (a.term_s >= 0) body["term_s"] = a.term_s;
    if (a.vcpus >= 0) body["vcpus"] = a.vcpus;
    if (a.memory >= 0) body["memory_mib"] = a.memory;
    if (a.bid >= 0) body["bid"] = a.bid;
    if (body.empty())
      return void(inv.rc = inv.c.Fail(InvalidArgumentError("give --term-s, --vcpus, --memory-mib and/or --bid")));
    Answer(inv, inv.c.Call("POST", "/api/v1/leases/" + a.id + "/extend", &body));
  });
}

void AddLeaseReclaim(CLI::App* lease, Invocation& inv, LeaseArgs& a) {
  auto* reclaim =
      lease->add_subcommand("reclaim", "send the guest a notice that takes resources back (shrink, stop or evict)");
  reclaim->add_option("id", a.id, "lease id")->required();
  reclaim->add_option("--action", a.action, "shrink (default) | stop | evict")
      ->check(CLI::IsMember({"shrink", "stop", "evict"}));
  reclaim->add_option("--vcpus", a.vcpus, "virtual CPUs after a shrink")->check(CLI::NonNegativeNumber);
  reclaim->add_option("--memory-mib", a.memory, "memory in MiB after a shrink")->check(CLI::NonNegativeNumber);
  reclaim->add_option("--notice-s", a.notice_s, "seconds of notice the guest gets (default 30)")
      ->check(CLI::Range(0, 86400));
  reclaim->add_option("--reason", a.reason, "why (at most 256 characters)");
  reclaim->add_flag("--urgent", a.urgent, "act at once (a guaranteed lease is reclaimed only when urgent)");
  reclaim->callback([&inv, &a] {
    Json body = {{"action", a.action}};
    if (a.vcpus >= 0) body["vcpus"] = a.vcpus;
    if (a.memory >= 0) body["memory_mib"] = a.memory;
    if (a.notice_s >= 0) body["notice_s"] = a.notice_s;
    if (!a.reason.empty()) body["reason"] = a.reason;
    if (a.urgent) body["urgent"] = true;
    Answer(inv, inv.c.Call("POST", "/api/v1/leases/" + a.id + "/reclaim", &body));
  });
}

void AddLeaseRepossessions(CLI::App* lease, Invocation& inv, LeaseArgs& a) {
  auto* repos = lease->add_subcommand("repossessions", "resources taken back from guests, newest first");
  AddListOptions(repos, a);
  repos->callback([&inv, &a] {
    AnswerList(inv, inv.c.List("/api/v1/repossessions" + GuestQuery(a), "repossessions", a.list_limit), "repossessions",
               {"NOTICE", "LEASE", "GUEST", "ACTION", "VCPUS", "MEM_MIB", "AT_MS", "URGENT", "ANSWER", "REASON"},
               [](const Json& r) {
                 const Json before = r.value("before", Json::object()), after = r.value("after", Json::object());
                 return std::vector<std::string>{Str(r["notice"]),
                                                 Str(r["lease"]),
                                                 Str(r["guest"]),
                                                 Str(r["action"]),
                                                 Change(before, after, "vcpus"),
                                                 Change(before, after, "memory_mib"),
                                                 Str(r["at_ms"]),
                                                 Str(r["urgent"]),
                                                 Str(r.value("answer", Json(nullptr))),
                                                 Str(r["reason"])};
               });
  });
}

void AddNoticeList(CLI::App* notice, Invocation& inv, LeaseArgs& a) {
  auto* list = notice->add_subcommand("list", "notices sent to guests, newest first");
  AddListOptions(list, a);
  list->callback([&inv, &a] {
    AnswerList(inv, inv.c.List("/api/v1/notices" + GuestQuery(a), "notices", a.list_limit), "notices",
               {"ID", "LEASE", "GUEST", "ACTION", "VCPUS", "MEM_MIB", "STATE", "URGENT", "DEADLINE_MS", "DELIVERY"},
               [](const Json& n) {
                 const Json before = n.value("before", Json::object()), after = n.value("after", Json::object());
                 const Json delivery = n.value("delivery", Json::object());
                 return std::vector<std::string>{Str(n["id"]),
                                                 Str(n["lease"]),
                                                 Str(n["guest"]),
                                                 Str(n["action"]),
                                                 Change(before, after, "vcpus"),
                                                 Change(before, after, "memory_mib"),
                                                 Str(n["state"]),
                                                 Str(n["urgent"]),
                                                 Str(n["deadline_ms"]),
                                                 Str(delivery.value("state", Json(nullptr)))};
               });
  });
}

void AddNoticeReply(CLI::App* notice, Invocation& inv, LeaseArgs& a) {
  auto* reply = notice->add_subcommand(
      "reply", "answer a notice for its guest: ack, release, or counter with --vcpus/--memory-mib/--delay-s");
  reply->add_option("id", a.id, "notice id")->required();
  reply->add_option("reply", a.reply, "ack | release | counter")
      ->required()
      ->check(CLI::IsMember({"ack", "release", "counter"}));
  reply->add_option("--vcpus", a.vcpus, "counter: virtual CPUs after the shrink (a smaller one)")
      ->check(CLI::NonNegativeNumber);
  reply->add_option("--memory-mib", a.memory, "counter: memory in MiB after the shrink (a smaller one)")
      ->check(CLI::NonNegativeNumber);
  reply->add_option("--delay-s", a.delay_s, "counter: act this many seconds later (by the deadline)")
      ->check(CLI::Range(0, 86400));
  reply->callback([&inv, &a] {
    Json body = {{"reply", a.reply}};
    if (a.vcpus >= 0) body["vcpus"] = a.vcpus;
    if (a.memory >= 0) body["memory_mib"] = a.memory;
    if (a.delay_s >= 0) body["delay_s"] = a.delay_s;
    Answer(inv, inv.c.Call("POST", "/api/v1/notices/" + a.id + "/reply", &body));
  });
}

}  // namespace

void AddLeaseCommands(CLI::App& app, Invocation& inv) {
  LeaseArgs& a = inv.Own<LeaseArgs>();
  auto* lease = app.add_subcommand("lease", "guests' resource leases (terms, floors, reclaims)");
  lease->require_subcommand(1);
  AddLeaseList(lease, inv, a);
  AddObjectCall(lease, inv, {"show", "show a lease and its history", "id", "lease id", "GET", "/api/v1/leases/"}, a.id);
  AddLeaseExtend(lease, inv, a);
  auto* release = lease->add_subcommand("release", "give a lease back: it closes and its guest is stopped");
  release->add_option("id", a.id, "lease id")->required();
  release->callback([&inv, &a] { Answer(inv, inv.c.Call("POST", "/api/v1/leases/" + a.id + "/release")); });
  AddLeaseReclaim(lease, inv, a);
  AddLeaseRepossessions(lease, inv, a);
}

void AddNoticeCommands(CLI::App& app, Invocation& inv) {
  LeaseArgs& a = inv.Own<LeaseArgs>();
  auto* notice = app.add_subcommand("notice", "notices that reclaim a guest's leased resources, and their replies");
  notice->require_subcommand(1);
  AddNoticeList(notice, inv, a);
  AddObjectCall(notice, inv,
                {"show", "show a notice, its reply and its delivery", "id", "notice id", "GET", "/api/v1/notices/"},
                a.id);
  AddNoticeReply(notice, inv, a);
}

void AddBudgetCommands(CLI::App& app, Invocation& inv) {
  LeaseArgs& a = inv.Own<LeaseArgs>();
  auto* budget = app.add_subcommand("budget", "tenants' budgets for the market broker (credits per hour)");
  budget->require_subcommand(1);
  auto* list = budget->add_subcommand("list", "budgets, and what the tenants' lease bids cost per hour now");
  list->callback([&inv] {
    AnswerList(inv, inv.c.List("/api/v1/budgets", "budgets", 0), "budgets", {"TENANT", "PER_HOUR", "COMMITTED"},
               [](const Json& b) {
                 return std::vector<std::string>{Str(b["tenant"]), Str(b["per_hour"]), Str(b["committed"])};
               });
  });
  auto* set = budget->add_subcommand("set", "set the most a tenant's lease bids may cost per hour (operators)");
  set->add_option("tenant", a.tenant, "tenant")->required();
  set->add_option("per_hour", a.per_hour, "credits per hour")->required()->check(CLI::NonNegativeNumber);
  set->callback([&inv, &a] {
    Json body = {{"per_hour", a.per_hour}};
    Answer(inv, inv.c.Call("PUT", "/api/v1/budgets/" + api::PercentEncode(a.tenant), &body));
  });
}

}  // namespace uw::cli
