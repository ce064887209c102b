// uwctl price-plan (list, show, set, delete, assign) and uwctl invoice (create, list, show, credit,
// adjust): billing, manager/billing_service.h.
#include <CLI/CLI.hpp>
#include <fstream>
#include <iostream>
#include <sstream>

#include "api/request_parser.h"
#include "cli/commands.h"

namespace uw::cli {
namespace {

struct BillingArgs {
  std::string name, file, tenant, plan, from, to, id, reason;
  int64_t amount = 0, limit = 0;
  bool csv = false;
};

// A plan's JSON from --file (a path, or "-" for standard input).
Result<Json> ReadPlanFile(const std::string& file) {
  std::stringstream text;
  if (file == "-") {
    text << std::cin.rdbuf();
  } else {
    std::ifstream in(file);
    if (!in) return InvalidArgumentError("--file: cannot read " + file);
    text << in.rdbuf();
  }
  Json j = Json::parse(text.str(), nullptr, false);
  if (j.is_discarded()) return InvalidArgumentError("--file: " + file + " is not JSON");
  return j;
}

// An amount of money in minor units with its currency's point: 1234 USD (2 digits) is "12.34".
std::string Money(const Json& amount, const Json& digits) {
  const int64_t v = amount.get<int64_t>();
  const int d = digits.is_number_integer() ? digits.get<int>() : 0;
  if (d == 0) return std::to_string(v);
  int64_t scale = 1;
  for (int i = 0; i < d; ++i) scale *= 10;
  const int64_t whole = (v < 0 ? -v : v) / scale, part = (v < 0 ? -v : v) % scale;
  std::string frac = std::to_string(part);
  frac.insert(0, static_cast<size_t>(d) - frac.size(), '0');
  return (v < 0 ? "-" : "") + std::to_string(whole) + "." + frac;
}

// Prints an invoice: its head, then its lines and adjustments as a table (or JSON with -o json).
void PrintInvoice(Invocation& inv, const Result<Json>& r) {
  if (!r.ok()) {
    inv.rc = inv.c.Fail(r.status());
    return;
  }
  if (inv.c.AsJson()) {
    inv.c.PrintJson(*r);
    return;
  }
  const Json& j = *r;
  const Json& digits = j["minor_digits"];
  const std::string cur = Str(j["currency"]);
  std::ostream& out = *inv.c.out;
  out << "invoice " << Str(j["id"]) << " for " << Str(j["tenant"]) << ", " << Str(j["from"]) << " to " << Str(j["to"])
      << " (plan " << Str(j["plan"]["name"]) << " v" << Str(j["plan"]["version"]) << ", " << Str(j["records"])
      << " hour records)\n";
  for (const Json& l : j["lines"]) {
    const double units = l["quantity"].get<double>() / l["units_per_billing_unit"].get<double>();
    std::ostringstream q;
    q.precision(3);
    q << std::fixed << units;
    out << "  " << Str(l["meter"]) << " " << Str(l["lease_class"]) << " tier " << Str(l["tier"]) << ": " << q.str()
        << " " << Str(l["unit"]) << "  " << Money(l["amount_minor"], digits) << " " << cur << "\n";
  }
  out << "  total " << Money(j["total_minor"], digits) << " " << cur << "\n";
  for (const Json& a : j["adjustments"]) {
    const int64_t signed_amount =
        a["kind"] == "credit" ? -a["amount_minor"].get<int64_t>() : a["amount_minor"].get<int64_t>();
    out << "  " << Str(a["kind"]) << " " << Money(Json(signed_amount), digits) << " " << cur << " (" << Str(a["reason"])
        << ")\n";
  }
  out << "  balance " << Money(j["balance_minor"], digits) << " " << cur << "\n";
  inv.rc = kOk;
}

// The CSV the API serves for `path`, as is.
int PrintCsv(const Context& c, const std::string& path) {
  auto r = c.Client().Do("GET", path + (path.find('?') == std::string::npos ? "?" : "&") + "format=csv");
  if (!r.ok()) return c.Fail(r.status());
  if (r->status / 100 != 2) return c.Fail(api::StatusFromHttp(r->status, r->body));
  *c.out << r->body;
  return kOk;
}

void AddPlanCommands(CLI::App& app, Invocation& inv, BillingArgs& a) {
  auto* plan = app.add_subcommand("price-plan", "price plans and the plan each tenant is billed by");
  plan->require_subcommand(1);
  auto* list = plan->add_subcommand("list", "price plans (a tenant sees its own)");
  list->callback([&inv] {
    AnswerList(inv, inv.c.Call("GET", "/api/v1/price-plans"), "price_plans",
               {"NAME", "CURRENCY", "VERSION", "PRICES", "TENANTS"}, [](const Json& p) {
                 std::string tenants;
                 for (const Json& t : p["tenants"]) tenants += (tenants.empty() ? "" : ",") + Str(t);
                 return std::vector<std::string>{Str(p["name"]), Str(p["currency"]), Str(p["version"]),
                                                 std::to_string(p["prices"].size()), tenants.empty() ? "-" : tenants};
               });
  });
  AddObjectCall(plan, inv, {"show", "a price plan", "name", "plan name", "GET", "/api/v1/price-plans/"}, a.name);
  auto* set = plan->add_subcommand("set", "create a plan or replace its prices (issued invoices keep theirs)");
  set->add_option("name", a.name, "plan name")->required();
  set->add_option("-f,--file", a.file,
                  "the plan as JSON: {\"currency\": \"USD\", \"prices\": [{\"meter\", \"lease_class\", \"tiers\": "
                  "[{\"up_to\", \"price_micros\"}]}]} (\"-\": standard input)")
      ->required();
  set->callback([&inv, &a] {
    auto body = ReadPlanFile(a.file);
    if (!body.ok()) {
      inv.rc = inv.c.Fail(body.status());
      return;
    }
    Answer(inv, inv.c.Call("PUT", "/api/v1/price-plans/" + api::PercentEncode(a.name), &*body));
  });
  AddObjectCall(
      plan, inv,
      {"delete", "delete a plan no tenant is billed by", "name", "plan name", "DELETE", "/api/v1/price-plans/"},
      a.name);
  auto* assign = plan->add_subcommand("assign", "bill a tenant by a plan from now on (\"none\": stop billing it)");
  assign->add_option("tenant", a.tenant, "tenant")->required();
  assign->add_option("plan", a.plan, "plan name, or none")->required();
  assign->callback([&inv, &a] {
    Json body = {{"plan", a.plan == "none" ? Json(nullptr) : Json(a.plan)}};
    Answer(inv, inv.c.Call("PUT", "/api/v1/tenant-plans/" + api::PercentEncode(a.tenant), &body));
  });
}

void AddInvoiceCommands(CLI::App& app, Invocation& inv, BillingArgs& a) {
  auto* invoice = app.add_subcommand("invoice", "invoices per tenant per period, with credits and adjustments");
  invoice->require_subcommand(1);
  auto* create = invoice->add_subcommand(
      "create",
      "issue an invoice for a tenant's usage in [from, to) (whole hours, or whole minutes kept as minute records)");
  create->add_option("--tenant", a.tenant, "tenant")->required();
  create->add_option("--from", a.from, "start: epoch ms or 2026-12-01T00:00:00Z")->required();
  create->add_option("--to", a.to, "end, exclusive")->required();
  create->callback([&inv, &a] {
    Json body = {{"tenant", a.tenant}, {"from", a.from}, {"to", a.to}};
    PrintInvoice(inv, inv.c.Call("POST", "/api/v1/invoices", &body));
  });
  auto* list = invoice->add_subcommand("list", "invoices (a tenant sees its own)");
  list->add_option("--tenant", a.tenant, "one tenant's invoices");
  list->add_option("--limit", a.limit, "invoices at most (default: all)")->check(CLI::NonNegativeNumber);
  list->add_flag("--csv", a.csv, "every line of every invoice as CSV (one page of 100)");
  list->callback([&inv, &a] {
    const std::string path = "/api/v1/invoices" + (a.tenant.empty() ? "" : "?tenant=" + api::PercentEncode(a.tenant));
    if (a.csv) {
      inv.rc = PrintCsv(inv.c, path);
      return;
    }
    AnswerList(inv, inv.c.List(path, "invoices", a.limit), "invoices",
               {"ID", "TENANT", "FROM", "TO", "TOTAL", "BALANCE", "CURRENCY"}, [](const Json& j) {
                 return std::vector<std::string>{Str(j["id"]),
                                                 Str(j["tenant"]),
                                                 Str(j["from"]),
                                                 Str(j["to"]),
                                                 Money(j["total_minor"], j["minor_digits"]),
                                                 Money(j["balance_minor"], j["minor_digits"]),
                                                 Str(j["currency"])};
               });
  });
  auto* show = invoice->add_subcommand("show", "an invoice: its lines, adjustments and balance");
  show->add_option("id", a.id, "invoice id")->required();
  show->add_flag("--csv", a.csv, "as CSV");
  show->callback([&inv, &a] {
    const std::string path = "/api/v1/invoices/" + api::PercentEncode(a.id);
    if (a.csv) {
      inv.rc = PrintCsv(inv.c, path);
      return;
    }
    PrintInvoice(inv, inv.c.Call("GET", path));
  });
  for (const char* kind : {"credit", "adjust"}) {
    const bool credit = std::string_view(kind) == "credit";
    auto* cmd = invoice->add_subcommand(
        kind, credit ? "credit an invoice (lowers its balance)" : "adjust an invoice's balance by a signed amount");
    cmd->add_option("id", a.id, "invoice id")->required();
    cmd->add_option("--amount", a.amount, "minor units (cents for USD)")->required();
    cmd->add_option("--reason", a.reason, "why, kept with the record")->required();
    cmd->callback([&inv, &a, credit] {
      Json body = {{"kind", credit ? "credit" : "adjustment"}, {"amount_minor", a.amount}, {"reason", a.reason}};
      PrintInvoice(inv, inv.c.Call("POST", "/api/v1/invoices/" + api::PercentEncode(a.id) + "/adjustments", &body));
    });
  }
}

}  // namespace

void AddBillingCommands(CLI::App& app, Invocation& inv) {
  BillingArgs& a = inv.Own<BillingArgs>();
  AddPlanCommands(app, inv, a);
  AddInvoiceCommands(app, inv, a);
}

}  // namespace uw::cli
