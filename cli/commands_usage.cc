// uwctl usage (metering's records, as a table, JSON or CSV) and uwctl usage verify (the check that
// they reconcile): manager/metering_service.h.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <sstream>

#include "api/request_parser.h"
#include "cli/commands.h"

namespace uw::cli {
namespace {

struct UsageArgs {
  std::string span = "hour", tenant, guest, from, to;
  int64_t limit = 0;
  bool csv = false;
};

std::string UsagePath(const UsageArgs& a) {
  std::string q = "/api/v1/usage?span=" + api::PercentEncode(a.span);
  for (const auto& [key, value] : {std::pair{"tenant", &a.tenant}, std::pair{"guest", &a.guest},
                                   std::pair{"from", &a.from}, std::pair{"to", &a.to}}) {
    if (!value->empty()) q += std::string("&") + key + "=" + api::PercentEncode(*value);
  }
  return q;
}

// The CSV of every page (one header line), written to out.
int PrintCsv(const Context& c, const UsageArgs& a) {
  std::string after;
  bool first = true;
  int64_t rows = 0;
  do {
    std::string path = UsagePath(a) + "&format=csv&limit=" +
                       std::to_string(a.limit > 0 ? std::min<int64_t>(a.limit - rows, 1000) : 1000);
    if (!after.empty()) path += "&after=" + api::PercentEncode(after);
    auto r = c.Client().Do("GET", path);
    if (!r.ok()) return c.Fail(r.status());
    if (r->status / 100 != 2) return c.Fail(api::StatusFromHttp(r->status, r->body));
    std::string_view body = r->body;
    if (!first) body.remove_prefix(std::min(body.size(), body.find('\n') + 1));  // the header once
    *c.out << body;
    rows += static_cast<int64_t>(std::count(body.begin(), body.end(), '\n')) - (first ? 1 : 0);
    first = false;
    auto next = r->headers.find("x-next-after");
    after = next == r->headers.end() ? "" : next->second;
  } while (!after.empty() && (a.limit == 0 || rows < a.limit));
  return kOk;
}

}  // namespace

void AddUsageCommands(CLI::App& app, Invocation& inv) {
  UsageArgs& a = inv.Own<UsageArgs>();
  auto* usage = app.add_subcommand("usage", "usage records per guest and lease class (metering); verify checks them");
  usage->add_option("--span", a.span, "minute | hour | day")->check(CLI::IsMember({"minute", "hour", "day"}));
  usage->add_option("--tenant", a.tenant, "one tenant's records");
  usage->add_option("--guest", a.guest, "one guest's records");
  usage->add_option("--from", a.from, "start: epoch ms or 2026-12-06T18:00:00Z (default: a span's window back)");
  usage->add_option("--to", a.to, "end, exclusive (default: now)");
  usage->add_option("--limit", a.limit, "records at most (default: all)")->check(CLI::NonNegativeNumber);
  usage->add_flag("--csv", a.csv, "CSV as the API serves it, for billing systems");
  auto* verify = usage->add_subcommand("verify",
                                       "check that hours sum their minutes, days their hours, and no "
                                       "guest-minute is missing or counted twice (exit 1 when not)");
  verify->add_option("--from", a.from, "start of the period checked (default: a day before --to)");
  verify->add_option("--to", a.to, "its end, exclusive (default: now)");
  usage->require_subcommand(0, 1);
  verify->callback([&inv, &a] {
    std::string path = "/api/v1/usage/verify";
    std::string sep = "?";
    for (const auto& [key, value] : {std::pair{"from", &a.from}, std::pair{"to", &a.to}}) {
      if (value->empty()) continue;
      path += sep + key + "=" + api::PercentEncode(*value);
      sep = "&";
    }
    auto r = inv.c.Call("GET", path);
    if (!r.ok()) {
      inv.rc = inv.c.Fail(r.status());
      return;
    }
    if (inv.c.AsJson()) {
      inv.c.PrintJson(*r);
    } else {
      *inv.c.out << ((*r)["ok"] == true ? "ok" : "NOT RECONCILED") << ": " << (*r)["checked"].dump() << "\n";
      for (const Json& p : (*r)["problems"]) *inv.c.out << "  " << Str(p) << "\n";
    }
    inv.rc = (*r)["ok"] == true ? kOk : kFailed;
  });
  usage->callback([&inv, &a, verify] {
    if (verify->parsed()) return;
    if (a.csv) {
      inv.rc = PrintCsv(inv.c, a);
      return;
    }
    AnswerList(inv, inv.c.List(UsagePath(a), "usage", a.limit), "usage",
               {"START", "SPAN", "GUEST", "TENANT", "CLASS", "VCPU_H_GRANTED", "VCPU_H_USED", "GIB_H_GRANTED", "GAP_S"},
               [](const Json& r) {
                 auto hours = [](const Json& v, double per) {
                   std::ostringstream s;
                   s.precision(3);
                   s << std::fixed << v.get<double>() / per;
                   return s.str();
                 };
                 return std::vector<std::string>{Str(r["start"]),
                                                 Str(r["span"]),
                                                 Str(r["guest"]),
                                                 Str(r["tenant"]),
                                                 Str(r["lease_class"]),
                                                 hours(r["vcpu_granted_ms"], 3.6e6),
                                                 hours(r["vcpu_used_ms"], 3.6e6),
                                                 hours(r["memory_granted_mib_s"], 1024.0 * 3600),
                                                 std::to_string(r.value("gap_ms", int64_t{0}) / 1000)};
               });
  });
}

}  // namespace uw::cli
