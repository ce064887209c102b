// Billing in the manager (billing_service.h).
#include "manager/billing_service.h"

#include <algorithm>
#include <cstdio>
#include <map>

#include "common/id.h"
#include "common/utc_time.h"
#include "manager/internal.h"
#include "manager/metering_service.h"

namespace uw::manager::internal {
namespace {

using metering::kHourMs;
using metering::kMinuteMs;
using metering::Meter;

// An invoice whose period begins and ends on the hour is priced from hourly records; any other
// (whole minutes, a guest's last part-hour) from minute records, kept usage_minute_retention_h.
int64_t InvoiceSpanMs(int64_t from_ms, int64_t to_ms) {
  return from_ms % kHourMs == 0 && to_ms % kHourMs == 0 ? kHourMs : kMinuteMs;
}

std::string Rfc3339(int64_t ms) { return FormatRfc3339(TimePoint(std::chrono::milliseconds(ms))); }

bool SeesAllBilling(const Principal& p) { return p.role != Role::kTenant; }

Status NeedOperator(const Principal& p, std::string_view what) {
  if (p.IsOperator()) return Status::Ok();
  return PermissionDeniedError(std::string(what) + " needs an admin or operator token");
}

// The prices of a plan as stored and shown: [{"meter", "lease_class", "tiers": [...]}].
Result<std::vector<metering::Price>> PricesOf(const Json& prices) {
  std::vector<metering::Price> out;
  for (const Json& pj : prices) {
    metering::Price price;
    UW_ASSIGN_OR_RETURN(price.meter, metering::ParseMeter(pj.value("meter", "")));
    UW_ASSIGN_OR_RETURN(price.lease_class, lease::ParseLeaseClass(pj.value("lease_class", "")));
    for (const Json& t : pj.value("tiers", Json::array())) {
      price.tiers.push_back({t.value("up_to", int64_t{0}), t.value("price_micros", int64_t{0})});
    }
    out.push_back(std::move(price));
  }
  return out;
}

}  // namespace

int64_t InvoiceRecord::Balance() const {
  int64_t b = invoice.total_minor;
  for (const Adjustment& a : adjustments) b += a.kind == "credit" ? -a.amount_minor : a.amount_minor;
  return b;
}

Result<int64_t> ParseTime(const Json& v, const std::string& field) {
  if (v.is_number_integer() && v.get<int64_t>() >= 0) return v.get<int64_t>();
  if (v.is_string()) return ParseUtcMillis(v.get<std::string>(), field);
  return InvalidArgumentError(field + ": expected epoch milliseconds or a UTC time like 2026-12-06T18:00:00Z");
}

Result<metering::PricePlan> ParsePricePlan(const Json& body, const std::string& name) {
  UW_RETURN_IF_ERROR(ValidateName(name, "price plan name"));
  UW_ASSIGN_OR_RETURN(JsonView v, JsonView::Of(body, ""));
  UW_RETURN_IF_ERROR(v.RejectUnknown({"name", "currency", "prices"}));
  metering::PricePlan plan;
  plan.name = name;
  UW_ASSIGN_OR_RETURN(std::string body_name, v.String("name", name));
  if (body_name != name) return v.FieldError("name", "'" + body_name + "' is not the plan's name in the path");
  UW_ASSIGN_OR_RETURN(plan.currency, v.String("currency"));
  UW_ASSIGN_OR_RETURN(std::vector<JsonView> prices, v.Objects("prices"));
  if (prices.size() > 2 * metering::kMeters * 4) return v.FieldError("prices", "too many prices");
  for (const JsonView& pv : prices) {
    UW_RETURN_IF_ERROR(pv.RejectUnknown({"meter", "lease_class", "tiers"}));
    metering::Price price;
    UW_ASSIGN_OR_RETURN(std::string meter, pv.String("meter"));
    auto m = metering::ParseMeter(meter);
    if (!m.ok()) return pv.FieldError("meter", m.status().message());
    price.meter = *m;
    UW_ASSIGN_OR_RETURN(std::string cls, pv.String("lease_class"));
    auto c = lease::ParseLeaseClass(cls);
    if (!c.ok()) return pv.FieldError("lease_class", c.status().message());
    price.lease_class = *c;
    UW_ASSIGN_OR_RETURN(std::vector<JsonView> tiers, pv.Objects("tiers"));
    if (tiers.empty() || tiers.size() > 16) return pv.FieldError("tiers", "expected 1 to 16 tiers");
    for (const JsonView& tv : tiers) {
      UW_RETURN_IF_ERROR(tv.RejectUnknown({"up_to", "price_micros"}));
      metering::Tier t;
      UW_ASSIGN_OR_RETURN(t.up_to, tv.NonNegativeInt("up_to", 0));
      UW_ASSIGN_OR_RETURN(t.price_micros, tv.Int("price_micros"));
      if (t.price_micros < 0 || t.price_micros > kMaxMoney) {
        return tv.FieldError("price_micros", "expected a whole number of millionths of a minor unit, 0 to 10^15");
      }
      if (t.up_to > kMaxMoney) return tv.FieldError("up_to", "at most 10^15 billing units");
      price.tiers.push_back(t);
    }
    plan.prices.push_back(std::move(price));
  }
  UW_RETURN_IF_ERROR(metering::ValidatePlan(plan));
  return plan;
}

Json PricesJson(const metering::PricePlan& plan) {
  Json prices = Json::array();
  for (const metering::Price& price : plan.prices) {
    Json tiers = Json::array();
    for (const metering::Tier& t : price.tiers) {
      Json tj = {{"price_micros", t.price_micros}};
      if (t.up_to > 0) tj["up_to"] = t.up_to;
      tiers.push_back(tj);
    }
    prices.push_back({{"meter", metering::MeterName(price.meter)},
                      {"lease_class", lease::LeaseClassName(price.lease_class)},
                      {"unit", metering::BillingUnitName(price.meter)},
                      {"tiers", tiers}});
  }
  return prices;
}

Json PlanRecordJson(const PlanRecord& r) {
  return {{"name", r.plan.name},  {"currency", r.plan.currency},      {"prices", PricesJson(r.plan)},
          {"version", r.version}, {"updated", Rfc3339(r.updated_ms)}, {"tenants", r.tenants}};
}

Result<InvoiceRequest> ParseInvoiceRequest(const Json& body) {
  UW_ASSIGN_OR_RETURN(JsonView v, JsonView::Of(body, ""));
  UW_RETURN_IF_ERROR(v.RejectUnknown({"tenant", "from", "to"}));
  InvoiceRequest r;
  UW_ASSIGN_OR_RETURN(r.tenant, v.String("tenant"));
  UW_RETURN_IF_ERROR(ValidateName(r.tenant, "tenant"));
  for (const char* key : {"from", "to"}) {
    if (!v.Has(key)) return v.FieldError(key, "required time is missing");
    UW_ASSIGN_OR_RETURN(int64_t at, ParseTime(body.at(key), key));
    (std::string_view(key) == "from" ? r.from_ms : r.to_ms) = at;
  }
  if (r.to_ms <= r.from_ms) return v.FieldError("to", "the period ends at or before its start (from)");
  for (auto [key, at] : {std::pair{"from", r.from_ms}, std::pair{"to", r.to_ms}}) {
    if (at % kMinuteMs != 0)
      return v.FieldError(key, "an invoice covers whole minutes: " + Rfc3339(at) + " is not on the minute");
  }
  if (r.to_ms - r.from_ms > kMaxInvoiceDays * metering::kDayMs) {
    return v.FieldError("to", "an invoice covers at most " + std::to_string(kMaxInvoiceDays) + " days");
  }
  return r;
}

Result<AdjustmentRequest> ParseAdjustment(const Json& body) {
  UW_ASSIGN_OR_RETURN(JsonView v, JsonView::Of(body, ""));
  UW_RETURN_IF_ERROR(v.RejectUnknown({"kind", "amount_minor", "reason"}));
  AdjustmentRequest a;
  UW_ASSIGN_OR_RETURN(a.kind, v.String("kind"));
  if (a.kind != "credit" && a.kind != "adjustment") return v.FieldError("kind", "expected credit or adjustment");
  UW_ASSIGN_OR_RETURN(a.amount_minor, v.Int("amount_minor"));
  if (a.kind == "credit" && (a.amount_minor <= 0 || a.amount_minor > kMaxMoney)) {
    return v.FieldError("amount_minor", "a credit is a whole number of minor units, 1 to 10^15");
  }
  if (a.kind == "adjustment" && (a.amount_minor == 0 || a.amount_minor > kMaxMoney || a.amount_minor < -kMaxMoney)) {
    return v.FieldError("amount_minor", "an adjustment is a non-zero whole number of minor units, -10^15 to 10^15");
  }
  UW_ASSIGN_OR_RETURN(a.reason, v.String("reason"));
  if (a.reason.empty() || a.reason.size() > 1000) return v.FieldError("reason", "expected 1 to 1000 characters");
  return a;
}

Json InvoiceJson(const InvoiceRecord& r) {
  Json lines = Json::array();
  const std::string usage = std::string("/api/v1/usage?span=") +
                            (InvoiceSpanMs(r.from_ms, r.to_ms) == kHourMs ? "hour" : "minute") + "&tenant=" + r.tenant +
                            "&from=" + std::to_string(r.from_ms) + "&to=" + std::to_string(r.to_ms);
  for (size_t i = 0; i < r.invoice.lines.size(); ++i) {
    const metering::InvoiceLine& l = r.invoice.lines[i];
    lines.push_back({{"meter", metering::MeterName(l.meter)},
                     {"lease_class", lease::LeaseClassName(l.lease_class)},
                     {"tier", l.tier},
                     {"quantity", l.quantity},
                     {"unit", metering::BillingUnitName(l.meter)},
                     {"units_per_billing_unit", metering::BillingUnit(l.meter)},
                     {"price_micros", l.price_micros},
                     {"amount_minor", l.amount_minor},
                     {"records", i < r.line_records.size() ? r.line_records[i] : 0}});
  }
  Json adjustments = Json::array();
  for (const Adjustment& a : r.adjustments) {
    adjustments.push_back({{"id", a.id},
                           {"kind", a.kind},
                           {"amount_minor", a.amount_minor},
                           {"reason", a.reason},
                           {"created", Rfc3339(a.created_ms)},
                           {"created_by", a.created_by}});
  }
  return {{"id", r.id},
          {"tenant", r.tenant},
          {"from", Rfc3339(r.from_ms)},
          {"to", Rfc3339(r.to_ms)},
          {"from_ms", r.from_ms},
          {"to_ms", r.to_ms},
          {"plan",
           {{"name", r.plan},
            {"version", r.plan_version},
            {"prices", Json::parse(r.plan_json.empty() ? "[]" : r.plan_json, nullptr, false)}}},
          {"currency", r.invoice.currency},
          {"minor_digits", metering::MinorDigits(r.invoice.currency).value_or(0)},
          {"lines", lines},
          {"total_minor", r.invoice.total_minor},
          {"adjustments", adjustments},
          {"balance_minor", r.Balance()},
          {"records", r.records},
          {"gap_ms", r.gap_ms},
          {"usage", usage},
          {"issued", Rfc3339(r.issued_ms)},
          {"issued_by", r.issued_by}};
}

namespace {
void AppendInvoiceCsv(const InvoiceRecord& r, std::string& out) {
  const std::string head =
      r.id + "," + r.tenant + "," + Rfc3339(r.from_ms) + "," + Rfc3339(r.to_ms) + "," + r.invoice.currency + ",";
  for (size_t i = 0; i < r.invoice.lines.size(); ++i) {
    const metering::InvoiceLine& l = r.invoice.lines[i];
    out += head + "line," + std::string(metering::MeterName(l.meter)) + "," +
           std::string(lease::LeaseClassName(l.lease_class)) + "," + std::to_string(l.tier) + "," +
           std::to_string(l.quantity) + "," + std::string(metering::BillingUnitName(l.meter)) + "," +
           std::to_string(l.price_micros) + "," + std::to_string(l.amount_minor) + "," +
           std::to_string(i < r.line_records.size() ? r.line_records[i] : 0) + ",\n";
  }
  out += head + "total,,,,,,," + std::to_string(r.invoice.total_minor) + "," + std::to_string(r.records) + ",\n";
  for (const Adjustment& a : r.adjustments) {
    std::string reason = "\"";
    for (char c : a.reason) reason += c == '"' ? std::string("\"\"") : std::string(1, c);
    out += head + a.kind + ",,,,,,," + std::to_string(a.kind == "credit" ? -a.amount_minor : a.amount_minor) + ",," +
           reason + "\"\n";
  }
  out += head + "balance,,,,,,," + std::to_string(r.Balance()) + ",,\n";
}
}  // namespace

std::string InvoiceCsv(const std::vector<InvoiceRecord>& invoices) {
  std::string out =
      "invoice,tenant,from,to,currency,kind,meter,lease_class,tier,quantity,unit,price_micros,"
      "amount_minor,records,reason\n";
  for (const InvoiceRecord& r : invoices) AppendInvoiceCsv(r, out);
  return out;
}

// --- plans ---

Result<PlanRecord> BillingService::ReadPlan(const std::string& name) {
  UW_ASSIGN_OR_RETURN(SqlRow row, store_.QueryOne("SELECT name, version, currency, prices, updated_ms FROM "
                                                  "price_plans WHERE name = ?",
                                                  {name}, "price plan '" + name + "'"));
  PlanRecord r;
  r.plan.name = row.Str("name");
  r.plan.currency = row.Str("currency");
  UW_ASSIGN_OR_RETURN(Json prices, ParseJson(row.Str("prices"), "price plan " + name));
  UW_ASSIGN_OR_RETURN(r.plan.prices, PricesOf(prices));
  r.version = row.Int("version");
  r.updated_ms = row.Int("updated_ms");
  UW_ASSIGN_OR_RETURN(auto tenants,
                      store_.Query("SELECT tenant FROM tenant_plans WHERE plan = ? ORDER BY tenant", {name}));
  for (const SqlRow& t : tenants) r.tenants.push_back(t.Str("tenant"));
  return r;
}

Result<PlanRecord> BillingService::PutPlan(const Principal& p, const metering::PricePlan& plan) {
  UW_RETURN_IF_ERROR(NeedOperator(p, "changing a price plan"));
  UW_RETURN_IF_ERROR(metering::ValidatePlan(plan));
  UW_RETURN_IF_ERROR(store_.Transact([&]() -> Status {
    return store_.Exec(
        "INSERT INTO price_plans(name, version, currency, prices, updated_ms) VALUES (?, 1, ?, ?, ?) ON "
        "CONFLICT(name) DO UPDATE SET version = version + 1, currency = excluded.currency, prices = excluded.prices, "
        "updated_ms = excluded.updated_ms",
        {plan.name, plan.currency, PricesJson(plan).dump(), ToUnixMillis(clock_.Now())});
  }));
  return ReadPlan(plan.name);
}

Result<std::vector<PlanRecord>> BillingService::ListPlans(const Principal& p) {
  UW_ASSIGN_OR_RETURN(auto rows,
                      SeesAllBilling(p)
                          ? store_.Query("SELECT name FROM price_plans ORDER BY name")
                          : store_.Query("SELECT plan AS name FROM tenant_plans WHERE tenant = ?", {p.tenant}));
  std::vector<PlanRecord> out;
  for (const SqlRow& r : rows) {
    UW_ASSIGN_OR_RETURN(PlanRecord plan, ReadPlan(r.Str("name")));
    if (!SeesAllBilling(p)) plan.tenants = {p.tenant};  // not who else is billed by it
    out.push_back(std::move(plan));
  }
  return out;
}

Result<PlanRecord> BillingService::GetPlan(const Principal& p, const std::string& name) {
  if (!SeesAllBilling(p)) {
    UW_ASSIGN_OR_RETURN(auto own,
                        store_.Query("SELECT 1 FROM tenant_plans WHERE tenant = ? AND plan = ?", {p.tenant, name}));
    if (own.empty()) return NotFoundError("price plan '" + name + "' not found");
  }
  UW_ASSIGN_OR_RETURN(PlanRecord plan, ReadPlan(name));
  if (!SeesAllBilling(p)) plan.tenants = {p.tenant};
  return plan;
}

Status BillingService::DeletePlan(const Principal& p, const std::string& name) {
  UW_RETURN_IF_ERROR(NeedOperator(p, "deleting a price plan"));
  return store_.Transact([&]() -> Status {
    UW_ASSIGN_OR_RETURN(SqlRow row, store_.QueryOne("SELECT name FROM price_plans WHERE name = ?", {name},
                                                    "price plan '" + name + "'"));
    (void)row;
    UW_ASSIGN_OR_RETURN(auto users, store_.Query("SELECT tenant FROM tenant_plans WHERE plan = ? ORDER BY tenant "
                                                 "LIMIT 3",
                                                 {name}));
    if (!users.empty()) {
      return FailedPreconditionError("price plan '" + name + "' bills tenant " + users[0].Str("tenant") +
                                     "; give the tenant another plan first (PUT /api/v1/tenant-plans/" +
                                     users[0].Str("tenant") + ")");
    }
    return store_.Exec("DELETE FROM price_plans WHERE name = ?", {name});
  });
}

Result<std::vector<std::pair<std::string, std::string>>> BillingService::ListTenantPlans(const Principal& p) {
  UW_ASSIGN_OR_RETURN(auto rows,
                      SeesAllBilling(p)
                          ? store_.Query("SELECT tenant, plan FROM tenant_plans ORDER BY tenant")
                          : store_.Query("SELECT tenant, plan FROM tenant_plans WHERE tenant = ?", {p.tenant}));
  std::vector<std::pair<std::string, std::string>> out;
  for (const SqlRow& r : rows) out.emplace_back(r.Str("tenant"), r.Str("plan"));
  return out;
}

Status BillingService::SetTenantPlan(const Principal& p, const std::string& tenant, const std::string& plan) {
  UW_RETURN_IF_ERROR(NeedOperator(p, "choosing a tenant's price plan"));
  UW_RETURN_IF_ERROR(ValidateName(tenant, "tenant"));
  if (plan.empty()) return store_.Exec("DELETE FROM tenant_plans WHERE tenant = ?", {tenant});
  return store_.Transact([&]() -> Status {
    UW_ASSIGN_OR_RETURN(auto known, store_.Query("SELECT 1 FROM price_plans WHERE name = ?", {plan}));
    if (known.empty()) return InvalidArgumentError("plan: no price plan is named '" + plan + "'");
    return store_.Exec(
        "INSERT INTO tenant_plans(tenant, plan, updated_ms) VALUES (?, ?, ?) ON CONFLICT(tenant) DO UPDATE SET "
        "plan = excluded.plan, updated_ms = excluded.updated_ms",
        {tenant, plan, ToUnixMillis(clock_.Now())});
  });
}

// --- invoices ---

Result<InvoiceRecord> BillingService::ReadInvoice(const std::string& id) {
  UW_ASSIGN_OR_RETURN(SqlRow row, store_.QueryOne("SELECT * FROM invoices WHERE id = ?", {id}, "invoice '" + id + "'"));
  InvoiceRecord r;
  r.id = row.Str("id");
  r.tenant = row.Str("tenant");
  r.from_ms = row.Int("from_ms");
  r.to_ms = row.Int("to_ms");
  r.plan = row.Str("plan");
  r.plan_version = row.Int("plan_version");
  r.plan_json = row.Str("plan_json");
  r.invoice.currency = row.Str("currency");
  r.invoice.total_minor = row.Int("total_minor");
  r.records = row.Int("records");
  r.gap_ms = row.Int("gap_ms");
  r.issued_ms = row.Int("issued_ms");
  r.issued_by = row.Str("issued_by");
  UW_ASSIGN_OR_RETURN(auto lines, store_.Query("SELECT * FROM invoice_lines WHERE invoice = ? ORDER BY n", {id}));
  for (const SqlRow& l : lines) {
    metering::InvoiceLine line;
    UW_ASSIGN_OR_RETURN(line.meter, metering::ParseMeter(l.Str("meter")));
    UW_ASSIGN_OR_RETURN(line.lease_class, lease::ParseLeaseClass(l.Str("lease_class")));
    line.tier = static_cast<size_t>(l.Int("tier"));
    line.quantity = l.Int("quantity");
    line.price_micros = l.Int("price_micros");
    line.amount_minor = l.Int("amount_minor");
    r.invoice.lines.push_back(line);
    r.line_records.push_back(l.Int("records"));
  }
  UW_ASSIGN_OR_RETURN(
      auto adjustments,
      store_.Query("SELECT * FROM invoice_adjustments WHERE invoice = ? ORDER BY created_ms, id", {id}));
  for (const SqlRow& a : adjustments) {
    r.adjustments.push_back(
        {a.Str("id"), a.Str("kind"), a.Int("amount_minor"), a.Str("reason"), a.Int("created_ms"), a.Str("created_by")});
  }
  return r;
}

Result<InvoiceRecord> BillingService::CreateInvoice(const Principal& p, const InvoiceRequest& r) {
  UW_RETURN_IF_ERROR(NeedOperator(p, "issuing an invoice"));
  const int64_t now = ToUnixMillis(clock_.Now());
  const int64_t span = InvoiceSpanMs(r.from_ms, r.to_ms);
  const bool hourly = span == kHourMs;
  const int64_t kept = MeteringService(store_, clock_, config_).KeptFrom(span);
  if (r.from_ms < kept) {
    return InvalidArgumentError(
        "from: " +
        (hourly ? "hourly usage is kept for " + std::to_string(config_.usage_retention_days) + " days"
                : "a period not on the hour is priced from minute records, kept for " +
                      std::to_string(config_.usage_minute_retention_h) + " hours") +
        "; this invoice may start from " + Rfc3339(kept) + " on");
  }
  std::string id;
  UW_RETURN_IF_ERROR(store_.Transact([&]() -> Status {
    UW_ASSIGN_OR_RETURN(auto assigned, store_.Query("SELECT plan FROM tenant_plans WHERE tenant = ?", {r.tenant}));
    if (assigned.empty()) {
      return FailedPreconditionError("tenant '" + r.tenant + "' is billed by no price plan; choose one first (PUT " +
                                     "/api/v1/tenant-plans/" + r.tenant + ")");
    }
    const char* watermark = hourly ? "hours_through" : "minutes_through";
    UW_ASSIGN_OR_RETURN(auto through, store_.Query("SELECT value FROM metering_state WHERE key = ?", {watermark}));
    if (through.empty() || through[0].Int("value") < r.to_ms) {
      return FailedPreconditionError(
          "to: " + Rfc3339(r.to_ms) + " is not billable yet: usage is recorded " +
          (hourly ? "and rolled up to the hour" : "by the minute") + " through " +
          (through.empty() ? std::string("nothing yet") : Rfc3339(through[0].Int("value"))) +
          (hourly ? " (an hour is rolled up a few seconds after it closes)"
                  : " (a minute is recorded once its hosts delivered their samples, at most 30 s after it ends)"));
    }
    UW_ASSIGN_OR_RETURN(auto overlap, store_.Query("SELECT id, from_ms, to_ms FROM invoices WHERE tenant = ? AND "
                                                   "from_ms < ? AND to_ms > ? ORDER BY from_ms LIMIT 1",
                                                   {r.tenant, r.to_ms, r.from_ms}));
    if (!overlap.empty()) {
      return AlreadyExistsError("the period overlaps invoice " + overlap[0].Str("id") + " of tenant '" + r.tenant +
                                "' (" + Rfc3339(overlap[0].Int("from_ms")) + " to " + Rfc3339(overlap[0].Int("to_ms")) +
                                "); issued invoices never change");
    }
    UW_ASSIGN_OR_RETURN(PlanRecord plan, ReadPlan(assigned[0].Str("plan")));
    UW_ASSIGN_OR_RETURN(std::vector<ClassUsage> usage, SumUsage(store_, r.tenant, span, r.from_ms, r.to_ms));
    std::vector<metering::Record> sums;
    std::map<lease::LeaseClass, int64_t> by_class;
    int64_t records = 0, gap_ms = 0;
    for (const ClassUsage& u : usage) {
      sums.push_back(u.sum);
      by_class[u.sum.lease_class] = u.records;
      records += u.records;
      gap_ms += u.gap_ms;
    }
    UW_ASSIGN_OR_RETURN(metering::Invoice invoice, metering::PriceUsage(plan.plan, sums));
    UW_RETURN_IF_ERROR(metering::CheckInvoice(invoice));
    UW_ASSIGN_OR_RETURN(SqlRow seq, store_.QueryOne("SELECT COALESCE(MAX(seq), 0) + 1 AS n FROM invoices", {}, "seq"));
    char buf[32];
    std::snprintf(buf, sizeof buf, "inv-%08lld", static_cast<long long>(seq.Int("n")));
    id = buf;
    UW_RETURN_IF_ERROR(store_.Exec(
        "INSERT INTO invoices(id, seq, tenant, from_ms, to_ms, plan, plan_version, plan_json, currency, "
        "total_minor, records, gap_ms, issued_ms, issued_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        {id, seq.Int("n"), r.tenant, r.from_ms, r.to_ms, plan.plan.name, plan.version, PricesJson(plan.plan).dump(),
         invoice.currency, invoice.total_minor, records, gap_ms, now, p.token_id}));
    for (size_t i = 0; i < invoice.lines.size(); ++i) {
      const metering::InvoiceLine& l = invoice.lines[i];
      UW_RETURN_IF_ERROR(store_.Exec(
          "INSERT INTO invoice_lines(invoice, n, meter, lease_class, tier, quantity, price_micros, amount_minor, "
          "records) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
          {id, static_cast<int64_t>(i), std::string(metering::MeterName(l.meter)),
           std::string(lease::LeaseClassName(l.lease_class)), static_cast<int64_t>(l.tier), l.quantity, l.price_micros,
           l.amount_minor, by_class[l.lease_class]}));
    }
    return Status::Ok();
  }));
  return ReadInvoice(id);
}

Result<Page<InvoiceRecord>> BillingService::ListInvoices(const Principal& p, const std::string& tenant,
                                                         const PageQuery& page) {
  SqlFilter scope;
  if (p.role == Role::kTenant) {
    if (!tenant.empty() && tenant != p.tenant) return PermissionDeniedError("a tenant reads only its own invoices");
    scope.And("tenant = ?", {p.tenant});
  } else if (!tenant.empty()) {
    scope.And("tenant = ?", {tenant});
  }
  UW_ASSIGN_OR_RETURN(RowPage rows, PageByKey(store_, "SELECT id FROM invoices", "invoices", "id", "id", scope, page));
  Page<InvoiceRecord> out;
  out.total = rows.total;
  out.next = rows.next;
  for (const SqlRow& row : rows.rows) {
    UW_ASSIGN_OR_RETURN(InvoiceRecord r, ReadInvoice(row.Str("id")));
    out.items.push_back(std::move(r));
  }
  return out;
}

Result<InvoiceRecord> BillingService::GetInvoice(const Principal& p, const std::string& id) {
  auto r = ReadInvoice(id);
  // Another tenant's invoice is as unknown as one never issued.
  if (r.ok() && p.role == Role::kTenant && r->tenant != p.tenant) {
    return NotFoundError("invoice '" + id + "' not found");
  }
  return r;
}

Result<InvoiceRecord> BillingService::Adjust(const Principal& p, const std::string& id, const AdjustmentRequest& a) {
  UW_RETURN_IF_ERROR(NeedOperator(p, "crediting or adjusting an invoice"));
  UW_RETURN_IF_ERROR(store_.Transact([&]() -> Status {
    UW_ASSIGN_OR_RETURN(SqlRow row,
                        store_.QueryOne("SELECT id FROM invoices WHERE id = ?", {id}, "invoice '" + id + "'"));
    (void)row;
    return store_.Exec(
        "INSERT INTO invoice_adjustments(id, invoice, kind, amount_minor, reason, created_ms, created_by) VALUES "
        "(?, ?, ?, ?, ?, ?, ?)",
        {NewId("adj"), id, a.kind, a.amount_minor, a.reason, ToUnixMillis(clock_.Now()), p.token_id});
  }));
  return ReadInvoice(id);
}

Result<int64_t> BillingService::CheckInvoices(int64_t from_ms, int64_t to_ms, Json& problems) {
  UW_ASSIGN_OR_RETURN(auto rows, store_.Query("SELECT id, tenant, from_ms, to_ms FROM invoices WHERE from_ms >= ? AND "
                                              "from_ms < ? ORDER BY tenant, from_ms",
                                              {from_ms, to_ms}));
  for (size_t i = 0; i < rows.size(); ++i) {
    const std::string id = rows[i].Str("id");
    UW_ASSIGN_OR_RETURN(InvoiceRecord r, ReadInvoice(id));
    if (Status s = metering::CheckInvoice(r.invoice); !s.ok()) problems.push_back("invoice " + id + ": " + s.message());
    if (i > 0 && rows[i - 1].Str("tenant") == r.tenant && rows[i - 1].Int("to_ms") > r.from_ms) {
      problems.push_back("invoice " + id + " overlaps invoice " + rows[i - 1].Str("id") + " of tenant " + r.tenant);
    }
  }
  return static_cast<int64_t>(rows.size());
}

}  // namespace uw::manager::internal
