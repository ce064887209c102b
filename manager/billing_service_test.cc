// Billing in the manager on in-memory agents and a FakeClock: price plans, tenants' plans,
// invoices priced from the hourly records, prices kept by issued invoices, credits and
// adjustments, who reads what, and bad input.
#include "manager/billing_service.h"

#include <gtest/gtest.h>

#include "manager/metering_test_fixture.h"

namespace uw::manager {
namespace {

using metering::kHourMs;
using metering::kMinuteMs;

class BillingTest : public testing::MeteringFixture {
 protected:
  // A plan that prices granted vCPU-hours: 60 cents for elastic ones (a cent a vCPU-minute), a
  // dollar twenty for guaranteed ones.
  static Json Plan(int64_t elastic_micros = 60'000'000) {
    return {
        {"currency", "USD"},
        {"prices",
         {{{"meter", "vcpu_granted"}, {"lease_class", "elastic"}, {"tiers", {{{"price_micros", elastic_micros}}}}},
          {{"meter", "vcpu_granted"}, {"lease_class", "guaranteed"}, {"tiers", {{{"price_micros", 120'000'000}}}}}}}};
  }
  int Send(const std::string& method, const std::string& path, const Json& body, const std::string& token,
           Json* out = nullptr) {
    const std::string text = body.dump();
    auto r =
        Client(token).Do(method, path, body.is_null() ? std::string() : text, {{"Content-Type", "application/json"}});
    if (!r.ok()) return -1;
    if (out) *out = Json::parse(r->body, nullptr, false);
    return r->status;
  }
  // Two tenants' guests metered from the first whole minute through the end of its hour.
  struct Hour {
    int64_t start = 0, end = 0, minutes = 0;
  };
  Hour MeterAnHour(const std::string& acme, const std::string& beta) {
    AddHost("h1");
    Create("web", {{"lease_class", "elastic"}, {"vcpus", 2}}, acme);
    Create("db", Json::object(), beta);
    Pass();
    const int64_t m =
        (*manager_->store().Query("SELECT value FROM metering_state WHERE key = 'minutes_through'"))[0].Int("value");
    Hour h{m / kHourMs * kHourMs, (m / kHourMs + 1) * kHourMs, 0};
    h.minutes = (h.end - m) / kMinuteMs;
    AdvanceTo(h.end + 6'000);
    Pass();
    Pass();
    return h;
  }
};

TEST_F(BillingTest, AnInvoiceIsTheTenantsHoursAtItsPlansPricesAndKeepsThem) {
  StartManager();
  const std::string acme = TenantToken("acme"), beta = TenantToken("beta");
  const Hour h = MeterAnHour(acme, beta);
  ASSERT_GT(h.minutes, 0);
  Json plan;
  ASSERT_EQ(Send("PUT", "/api/v1/price-plans/std", Plan(), testing::kAdmin, &plan), 200) << plan.dump();
  EXPECT_EQ(plan["version"], 1);
  EXPECT_EQ(plan["prices"][0]["unit"], "vCPU-hour");
  const Json period = {{"tenant", "acme"}, {"from", h.start}, {"to", h.end}};
  Json err;
  // Without a plan the tenant cannot be invoiced.
  EXPECT_EQ(Send("POST", "/api/v1/invoices", period, testing::kAdmin, &err), 409) << err.dump();
  EXPECT_NE(err.dump().find("billed by no price plan"), std::string::npos) << err.dump();
  ASSERT_EQ(Send("PUT", "/api/v1/tenant-plans/acme", {{"plan", "std"}}, testing::kAdmin), 200);
  ASSERT_EQ(Send("PUT", "/api/v1/tenant-plans/beta", {{"plan", "std"}}, testing::kAdmin), 200);

  Json inv;
  ASSERT_EQ(Send("POST", "/api/v1/invoices", period, testing::kAdmin, &inv), 201) << inv.dump();
  EXPECT_EQ(inv["id"], "inv-00000001");
  EXPECT_EQ(inv["currency"], "USD");
  EXPECT_EQ(inv["minor_digits"], 2);
  EXPECT_EQ(inv["records"], 1);  // web's one hour record
  ASSERT_EQ(inv["lines"].size(), 1u) << inv.dump();
  const Json& line = inv["lines"][0];
  EXPECT_EQ(line["meter"], "vcpu_granted");
  EXPECT_EQ(line["lease_class"], "elastic");
  EXPECT_EQ(line["quantity"], h.minutes * 2 * kMinuteMs);  // two vCPUs for every metered minute
  EXPECT_EQ(line["amount_minor"], h.minutes * 2);          // a cent a vCPU-minute
  EXPECT_EQ(line["records"], 1);
  EXPECT_EQ(inv["total_minor"], h.minutes * 2);
  EXPECT_EQ(inv["balance_minor"], h.minutes * 2);
  EXPECT_EQ(inv["plan"]["version"], 1);

  // The plan changes: the issued invoice keeps its prices, the next invoice has the new ones.
  ASSERT_EQ(Send("PUT", "/api/v1/price-plans/std", Plan(120'000'000), testing::kAdmin, &plan), 200);
  EXPECT_EQ(plan["version"], 2);
  Json again;
  ASSERT_EQ(Send("GET", "/api/v1/invoices/inv-00000001", nullptr, testing::kAdmin, &again), 200);
  EXPECT_EQ(again, inv);
  Json beta_inv;
  ASSERT_EQ(Send("POST", "/api/v1/invoices", {{"tenant", "beta"}, {"from", h.start}, {"to", h.end}}, testing::kAdmin,
                 &beta_inv),
            201);
  EXPECT_EQ(beta_inv["plan"]["version"], 2);
  EXPECT_EQ(beta_inv["lines"][0]["lease_class"], "guaranteed");
  EXPECT_EQ(beta_inv["total_minor"], h.minutes * 2);  // one vCPU at two cents a minute

  // A period that overlaps an issued invoice, or is not rolled up yet: 409, and nothing issued.
  EXPECT_EQ(Send("POST", "/api/v1/invoices", period, testing::kAdmin, &err), 409);
  EXPECT_NE(err.dump().find("overlaps invoice inv-00000001"), std::string::npos) << err.dump();
  EXPECT_EQ(Send("POST", "/api/v1/invoices", {{"tenant", "acme"}, {"from", h.end}, {"to", h.end + kHourMs}},
                 testing::kAdmin, &err),
            409);
  EXPECT_NE(err.dump().find("is not billable yet"), std::string::npos) << err.dump();
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM invoices"), 2);

  // Credits and adjustments are records of their own: the lines and the total stay as issued.
  Json adjusted;
  ASSERT_EQ(Send("POST", "/api/v1/invoices/inv-00000001/adjustments",
                 {{"kind", "credit"}, {"amount_minor", 5}, {"reason", "outage on 12-06"}}, testing::kAdmin, &adjusted),
            201)
      << adjusted.dump();
  ASSERT_EQ(Send("POST", "/api/v1/invoices/inv-00000001/adjustments",
                 {{"kind", "adjustment"}, {"amount_minor", -2}, {"reason", "rounding \"agreed\""}}, testing::kAdmin,
                 &adjusted),
            201);
  EXPECT_EQ(adjusted["total_minor"], h.minutes * 2);
  EXPECT_EQ(adjusted["lines"], inv["lines"]);
  EXPECT_EQ(adjusted["balance_minor"], h.minutes * 2 - 7);
  ASSERT_EQ(adjusted["adjustments"].size(), 2u);
  // The store itself refuses to change what was issued.
  EXPECT_FALSE(manager_->store().Exec("UPDATE invoices SET total_minor = 0").ok());
  EXPECT_FALSE(manager_->store().Exec("DELETE FROM invoice_lines").ok());
  EXPECT_FALSE(manager_->store().Exec("UPDATE invoice_adjustments SET amount_minor = 1").ok());
  // CSV: lines, total, adjustments and balance.
  auto csv = Client().Do("GET", "/api/v1/invoices/inv-00000001?format=csv");
  ASSERT_TRUE(csv.ok());
  EXPECT_EQ(csv->headers["content-type"], "text/csv; charset=utf-8");
  EXPECT_NE(csv->body.find(",USD,line,vcpu_granted,elastic,0," + std::to_string(h.minutes * 2 * kMinuteMs) +
                           ",vCPU-hour,60000000," + std::to_string(h.minutes * 2) + ",1,\n"),
            std::string::npos)
      << csv->body;
  EXPECT_NE(csv->body.find(",credit,,,,,,,-5,,\"outage on 12-06\"\n"), std::string::npos) << csv->body;
  EXPECT_NE(csv->body.find(",adjustment,,,,,,,-2,,\"rounding \"\"agreed\"\"\"\n"), std::string::npos) << csv->body;
  EXPECT_NE(csv->body.find(",balance,,,,,,," + std::to_string(h.minutes * 2 - 7) + ",,\n"), std::string::npos);

  // The reconciliation check covers invoices too.
  auto verify = Client().Call("GET", "/api/v1/usage/verify?from=" + std::to_string(h.start));
  ASSERT_TRUE(verify.ok()) << verify.status().ToString();
  EXPECT_EQ((*verify)["ok"], true) << verify->dump();
  EXPECT_EQ((*verify)["checked"]["invoices"], 2);

  // A plan that bills a tenant is not deleted; unused, it is.
  EXPECT_EQ(Send("DELETE", "/api/v1/price-plans/std", nullptr, testing::kAdmin, &err), 409);
  EXPECT_NE(err.dump().find("bills tenant acme"), std::string::npos) << err.dump();
  ASSERT_EQ(Send("PUT", "/api/v1/price-plans/other", Plan(), testing::kAdmin), 200);
  EXPECT_EQ(Send("DELETE", "/api/v1/price-plans/other", nullptr, testing::kAdmin), 200);
  EXPECT_EQ(Send("GET", "/api/v1/price-plans/other", nullptr, testing::kAdmin), 404);

  // A period not on the hour is priced from minute records, once its minutes are recorded.
  const Json minutes = {{"tenant", "acme"}, {"from", h.end}, {"to", h.end + 2 * kMinuteMs}};
  EXPECT_EQ(Send("POST", "/api/v1/invoices", minutes, testing::kAdmin, &err), 409);
  EXPECT_NE(err.dump().find("recorded by the minute through"), std::string::npos) << err.dump();
  AdvanceTo(h.end + 2 * kMinuteMs + 6'000);
  Pass();
  Json by_minute;
  ASSERT_EQ(Send("POST", "/api/v1/invoices", minutes, testing::kAdmin, &by_minute), 201) << by_minute.dump();
  EXPECT_EQ(by_minute["records"], 2);  // web's two minute records
  ASSERT_EQ(by_minute["lines"].size(), 1u) << by_minute.dump();
  EXPECT_EQ(by_minute["lines"][0]["quantity"], 2 * 2 * kMinuteMs);
  EXPECT_EQ(by_minute["lines"][0]["records"], 2);
  EXPECT_EQ(by_minute["total_minor"], 2 * 2 * 2);  // plan version 2: two cents a vCPU-minute
  EXPECT_NE(by_minute["usage"].get<std::string>().find("span=minute"), std::string::npos) << by_minute.dump();
}

TEST_F(BillingTest, TenantsReadTheirOwnBillingReadersEveryonesAndNothingElse) {
  StartManager();
  const std::string acme = TenantToken("acme"), beta = TenantToken("beta");
  const std::string billing = RoleToken("billing-reader");
  const Hour h = MeterAnHour(acme, beta);
  ASSERT_EQ(Send("PUT", "/api/v1/price-plans/std", Plan(), testing::kAdmin), 200);
  ASSERT_EQ(Send("PUT", "/api/v1/price-plans/gold", Plan(1), testing::kAdmin), 200);
  ASSERT_EQ(Send("PUT", "/api/v1/tenant-plans/acme", {{"plan", "std"}}, testing::kAdmin), 200);
  ASSERT_EQ(Send("PUT", "/api/v1/tenant-plans/beta", {{"plan", "gold"}}, testing::kAdmin), 200);
  for (const char* t : {"acme", "beta"}) {
    ASSERT_EQ(Send("POST", "/api/v1/invoices", {{"tenant", t}, {"from", h.start}, {"to", h.end}}, testing::kAdmin),
              201);
  }
  Json list;
  ASSERT_EQ(Send("GET", "/api/v1/invoices", nullptr, acme, &list), 200);
  ASSERT_EQ(list["invoices"].size(), 1u) << list.dump();
  EXPECT_EQ(list["invoices"][0]["tenant"], "acme");
  EXPECT_EQ(Send("GET", "/api/v1/invoices?tenant=beta", nullptr, acme), 403);
  EXPECT_EQ(Send("GET", "/api/v1/invoices/inv-00000002", nullptr, acme), 404);  // beta's: as unknown as none
  EXPECT_EQ(Send("GET", "/api/v1/invoices/inv-00000001", nullptr, acme), 200);
  ASSERT_EQ(Send("GET", "/api/v1/price-plans", nullptr, acme, &list), 200);
  ASSERT_EQ(list["price_plans"].size(), 1u);  // its own plan, not who else it bills
  EXPECT_EQ(list["price_plans"][0]["name"], "std");
  EXPECT_EQ(list["price_plans"][0]["tenants"], Json::array({"acme"}));
  EXPECT_EQ(Send("GET", "/api/v1/price-plans/gold", nullptr, acme), 404);
  EXPECT_EQ(Send("POST", "/api/v1/invoices", {{"tenant", "acme"}, {"from", h.start}, {"to", h.end}}, acme), 403);
  // A billing reader reads every invoice, plan and tenant's plan, and changes nothing.
  ASSERT_EQ(Send("GET", "/api/v1/invoices?limit=1", nullptr, billing, &list), 200);
  EXPECT_EQ(list["total"], 2);
  ASSERT_TRUE(list["next"].is_string());
  ASSERT_EQ(Send("GET", "/api/v1/invoices?limit=1&after=" + list["next"].get<std::string>(), nullptr, billing, &list),
            200);
  EXPECT_EQ(list["invoices"][0]["tenant"], "beta");
  ASSERT_EQ(Send("GET", "/api/v1/tenant-plans", nullptr, billing, &list), 200);
  EXPECT_EQ(list["tenant_plans"].size(), 2u);
  EXPECT_EQ(Send("GET", "/api/v1/price-plans/gold", nullptr, billing), 200);
  EXPECT_EQ(Send("PUT", "/api/v1/price-plans/std", Plan(), billing), 403);
  EXPECT_EQ(Send("POST", "/api/v1/invoices/inv-00000001/adjustments",
                 {{"kind", "credit"}, {"amount_minor", 1}, {"reason", "x"}}, billing),
            403);
  // ... and nothing but usage, plans and invoices.
  EXPECT_EQ(Send("GET", "/api/v1/guests", nullptr, billing), 403);
  EXPECT_EQ(Send("GET", "/api/v1/hosts", nullptr, billing), 403);
  auto csv = Client(billing).Do("GET", "/api/v1/invoices?format=csv");
  ASSERT_TRUE(csv.ok());
  EXPECT_EQ(std::count(csv->body.begin(), csv->body.end(), '\n'), 1 + 2 * 3);  // header; line, total, balance each
}

TEST_F(BillingTest, BadPlansAndPeriodsAreClear4xxsAndNothingIsIssued) {
  StartManager();
  const std::string acme = TenantToken("acme"), beta = TenantToken("beta");
  const Hour h = MeterAnHour(acme, beta);
  auto with_price = [](Json price) {
    return Json{
        {"currency", "USD"},
        {"prices", {{{"meter", "vcpu_used"}, {"lease_class", "elastic"}, {"tiers", {{{"price_micros", price}}}}}}}};
  };
  const std::vector<std::pair<Json, std::string>> bad_plans = {
      {with_price(-1), "price_micros"},
      {with_price(2.5), "price_micros"},
      {with_price("10"), "price_micros"},
      {{{"currency", "XQZ"}, {"prices", Json::array()}}, "currency"},
      {{{"currency", "USD"}, {"prices", {{{"meter", "joules"}, {"lease_class", "elastic"}, {"tiers", Json::array()}}}}},
       "meter"},
      {{{"currency", "USD"}, {"prices", Json::array()}, {"discount", 5}}, "discount"},
      {{{"name", "other"}, {"currency", "USD"}, {"prices", Json::array()}}, "name"},
      {{{"currency", "USD"},
        {"prices",
         {{{"meter", "vcpu_used"},
           {"lease_class", "elastic"},
           {"tiers", {{{"up_to", 10}, {"price_micros", 2}}, {{"up_to", 5}, {"price_micros", 1}}}}}}}},
       "tiers"},
  };
  for (const auto& [body, field] : bad_plans) {
    Json err;
    EXPECT_EQ(Send("PUT", "/api/v1/price-plans/p1", body, testing::kAdmin, &err), 400) << body.dump();
    EXPECT_NE(err.dump().find(field), std::string::npos) << body.dump() << " -> " << err.dump();
  }
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM price_plans"), 0);
  ASSERT_EQ(Send("PUT", "/api/v1/price-plans/std", Plan(), testing::kAdmin), 200);
  Json err;
  EXPECT_EQ(Send("PUT", "/api/v1/tenant-plans/acme", {{"plan", "nope"}}, testing::kAdmin, &err), 400);
  EXPECT_NE(err.dump().find("no price plan is named 'nope'"), std::string::npos) << err.dump();
  EXPECT_EQ(Send("PUT", "/api/v1/tenant-plans/bad%20name", {{"plan", "std"}}, testing::kAdmin), 400);
  ASSERT_EQ(Send("PUT", "/api/v1/tenant-plans/acme", {{"plan", "std"}}, testing::kAdmin), 200);
  const std::vector<std::pair<Json, std::string>> bad_periods = {
      {{{"tenant", "acme"}, {"from", h.end}, {"to", h.start}}, "ends at or before its start"},
      {{{"tenant", "acme"}, {"from", h.start + 1}, {"to", h.end}}, "not on the minute"},
      {{{"tenant", "acme"}, {"from", h.start - 49 * kHourMs + kMinuteMs}, {"to", h.start - 48 * kHourMs}},
       "minute records, kept for 48 hours"},
      {{{"tenant", "acme"}, {"from", "yesterday"}, {"to", h.end}}, "from"},
      {{{"tenant", "acme"}, {"to", h.end}}, "from"},
      {{{"tenant", "acme"}, {"from", 0}, {"to", 400LL * 86'400'000}}, "at most 366 days"},
      {{{"tenant", "acme"}, {"from", h.start - 401LL * 86'400'000}, {"to", h.start - 400LL * 86'400'000}},
       "kept for 400 days"},
      {{{"tenant", "Acme Corp"}, {"from", h.start}, {"to", h.end}}, "tenant"},
      {{{"tenant", "acme"}, {"from", h.start}, {"to", h.end}, {"total", 0}}, "total"},
  };
  for (const auto& [body, words] : bad_periods) {
    EXPECT_EQ(Send("POST", "/api/v1/invoices", body, testing::kAdmin, &err), 400) << body.dump();
    EXPECT_NE(err.dump().find(words), std::string::npos) << body.dump() << " -> " << err.dump();
  }
  auto malformed = Client().Do("POST", "/api/v1/invoices", "{\"tenant\": ", {{"Content-Type", "application/json"}});
  ASSERT_TRUE(malformed.ok());
  EXPECT_EQ(malformed->status, 400);
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM invoices"), 0);
  // Adjustments that are not whole, positive credits or non-zero adjustments with a reason.
  ASSERT_EQ(Send("POST", "/api/v1/invoices", {{"tenant", "acme"}, {"from", h.start}, {"to", h.end}}, testing::kAdmin),
            201);
  for (const Json& body : {Json{{"kind", "credit"}, {"amount_minor", 0}, {"reason", "x"}},
                           Json{{"kind", "credit"}, {"amount_minor", -3}, {"reason", "x"}},
                           Json{{"kind", "credit"}, {"amount_minor", 1.5}, {"reason", "x"}},
                           Json{{"kind", "adjustment"}, {"amount_minor", 0}, {"reason", "x"}},
                           Json{{"kind", "refund"}, {"amount_minor", 1}, {"reason", "x"}},
                           Json{{"kind", "credit"}, {"amount_minor", 1}, {"reason", ""}}}) {
    EXPECT_EQ(Send("POST", "/api/v1/invoices/inv-00000001/adjustments", body, testing::kAdmin), 400) << body.dump();
  }
  EXPECT_EQ(Send("POST", "/api/v1/invoices/inv-404/adjustments",
                 {{"kind", "credit"}, {"amount_minor", 1}, {"reason", "x"}}, testing::kAdmin),
            404);
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM invoice_adjustments"), 0);
}

}  // namespace
}  // namespace uw::manager
