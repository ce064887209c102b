// Billing in the manager (issue 18): price plans, the plan each tenant is billed by, invoices per
// tenant per period priced from metering's hourly records (metering::PriceUsage), and credits and
// adjustments as records of their own.
//
//   PUT price plan ──▶ price_plans (version + 1 on each change)      tenant_plans: tenant ─▶ plan
//   POST invoice {tenant, from, to} ──▶ hour (or minute) records of the tenant ──PriceUsage(its plan)──▶ invoice
//                                        + lines (each naming the records it was priced from)
//   POST adjustment ──▶ invoice_adjustments (a credit or a signed adjustment; the balance moves)
//
// An issued invoice keeps the prices it was issued at (its lines and a copy of the plan) and never
// changes: the store's triggers refuse an UPDATE or DELETE of invoices, lines and adjustments.
// Invoices of one tenant never overlap; one is issued only for whole hours that are rolled up, or
// whole minutes that are recorded (a period not on the hour, priced from minute records).
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "common/clock.h"
#include "common/json.h"
#include "common/status.h"
#include "manager/auth.h"
#include "manager/manager.h"
#include "manager/metering.h"
#include "manager/store.h"

namespace uw::manager::internal {

struct PlanRecord {
  metering::PricePlan plan;
  int64_t version = 0;
  int64_t updated_ms = 0;
  std::vector<std::string> tenants;  // billed by it, sorted
};

struct Adjustment {
  std::string id;
  std::string kind;  // "credit" (lowers the balance by amount) or "adjustment" (adds amount, signed)
  int64_t amount_minor = 0;
  std::string reason;
  int64_t created_ms = 0;
  std::string created_by;  // the token's id
};

struct InvoiceRecord {
  std::string id;  // inv-00000001
  std::string tenant;
  int64_t from_ms = 0, to_ms = 0;
  std::string plan;
  int64_t plan_version = 0;
  std::string plan_json;  // the plan's prices as they were when issued (JSON text)
  metering::Invoice invoice;
  std::vector<int64_t> line_records;  // per line: the hour records of its class it was priced from
  int64_t records = 0;                // hour records priced
  int64_t gap_ms = 0;                 // of those records' time, without samples
  int64_t issued_ms = 0;
  std::string issued_by;
  std::vector<Adjustment> adjustments;
  int64_t Balance() const;  // the total, less credits, plus adjustments
};

struct InvoiceRequest {
  std::string tenant;
  int64_t from_ms = 0, to_ms = 0;
};

struct AdjustmentRequest {
  std::string kind;
  int64_t amount_minor = 0;
  std::string reason;
};

// The largest amount of money or price a request may carry (minor units or micros): sums of a
// year of lines stay far from int64's limit.
inline constexpr int64_t kMaxMoney = 1'000'000'000'000'000;  // 1e15
inline constexpr int64_t kMaxInvoiceDays = 366;

class BillingService {
 public:
  BillingService(Store& store, Clock& clock, const ManagerConfig& config)
      : store_(store), clock_(clock), config_(config) {}

  // Creates the plan or replaces its prices (its version goes up); issued invoices keep theirs.
  Result<PlanRecord> PutPlan(const Principal& p, const metering::PricePlan& plan);
  // Every plan for operators, read-only and billing-reader tokens; a tenant's own plan only.
  Result<std::vector<PlanRecord>> ListPlans(const Principal& p);
  Result<PlanRecord> GetPlan(const Principal& p, const std::string& name);
  // kFailedPrecondition while a tenant is billed by it.
  Status DeletePlan(const Principal& p, const std::string& name);
  // (tenant, plan) pairs, sorted by tenant; a tenant sees its own.
  Result<std::vector<std::pair<std::string, std::string>>> ListTenantPlans(const Principal& p);
  // Bills `tenant` by `plan` from now on ("" stops billing it).
  Status SetTenantPlan(const Principal& p, const std::string& tenant, const std::string& plan);

  Result<InvoiceRecord> CreateInvoice(const Principal& p, const InvoiceRequest& r);
  Result<Page<InvoiceRecord>> ListInvoices(const Principal& p, const std::string& tenant, const PageQuery& page);
  // kNotFound for an unknown invoice and for another tenant's.
  Result<InvoiceRecord> GetInvoice(const Principal& p, const std::string& id);
  Result<InvoiceRecord> Adjust(const Principal& p, const std::string& id, const AdjustmentRequest& a);

  // Problems with the invoices issued for periods that start in [from, to): a total that is not
  // the sum of its lines, a line not its quantity at its price (metering::CheckInvoice), or two
  // invoices of a tenant that overlap. Appends to `problems`; returns how many were checked.
  Result<int64_t> CheckInvoices(int64_t from_ms, int64_t to_ms, Json& problems);

 private:
  Result<PlanRecord> ReadPlan(const std::string& name);
  Result<InvoiceRecord> ReadInvoice(const std::string& id);

  Store& store_;
  Clock& clock_;
  const ManagerConfig& config_;
};

// JSON of plans and invoices, and their parsing. ParsePricePlan takes {"currency", "prices":
// [{"meter", "lease_class", "tiers": [{"up_to", "price_micros"}]}]} with the name from the path
// (a "name" in the body must be the same) and checks it (metering::ValidatePlan).
Result<metering::PricePlan> ParsePricePlan(const Json& body, const std::string& name);
Json PricesJson(const metering::PricePlan& plan);
Json PlanRecordJson(const PlanRecord& r);
Result<InvoiceRequest> ParseInvoiceRequest(const Json& body);
Result<AdjustmentRequest> ParseAdjustment(const Json& body);
Json InvoiceJson(const InvoiceRecord& r);
// Invoices as CSV: one header, then each invoice's lines, total, adjustments and balance.
std::string InvoiceCsv(const std::vector<InvoiceRecord>& invoices);
// A time in a body: epoch milliseconds, or a string ParseUtcMillis reads.
Result<int64_t> ParseTime(const Json& v, const std::string& field);

}  // namespace uw::manager::internal
