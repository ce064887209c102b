// Metering in the manager on in-memory agents and a FakeClock: minute records from leases and
// heartbeat samples, gaps, hourly rollups, a pass run twice, who reads what, and bad queries.
#include "manager/metering_service.h"

#include <gtest/gtest.h>

#include "manager/metering_test_fixture.h"

namespace uw::manager {
namespace {

using metering::kHourMs;
using metering::kMinuteMs;

class MeteringTest : public testing::MeteringFixture {
 protected:
  // Where recording starts: the minute after the first pass.
  int64_t FirstMinute() {
    Pass();
    return (*manager_->store().Query("SELECT value FROM metering_state WHERE key = 'minutes_through'"))[0].Int("value");
  }
  Json Usage(const std::string& query, const std::string& token = testing::kAdmin) {
    auto r = Client(token).Call("GET", "/api/v1/usage?" + query);
    EXPECT_TRUE(r.ok()) << query << ": " << r.status().ToString();
    return r.ok() ? *r : Json();
  }
  int HttpStatus(const std::string& query, const std::string& token = testing::kAdmin) {
    auto r = Client(token).Do("GET", "/api/v1/usage" + query);
    return r.ok() ? r->status : -1;
  }
};

TEST_F(MeteringTest, MinutesAreGrantsAndSamplesAGapIsRecordedAndHoursAreTheirSum) {
  StartManager();
  AddHost("h1");
  Create("m1", {{"vcpus", 2}});
  const int64_t m = FirstMinute();  // metering starts: the first minute recorded is the next one
  ASSERT_GT(m, Now());
  // Two samples in the first minute; none in the second.
  AdvanceTo(m + 10'000);
  Heartbeat("h1", {{{"name", "m1"}, {"cpu_cores", 0.5}, {"memory_used_mib", 200}}});
  AdvanceTo(m + 40'000);
  Heartbeat("h1", {{{"name", "m1"}, {"cpu_cores", 1.0}, {"memory_used_mib", 100}}});
  AdvanceTo(m + 2 * kMinuteMs + 6'000);
  Pass();
  Pass();  // a second pass over the same minutes writes nothing
  Json minutes = Usage("span=minute&from=" + std::to_string(m));
  ASSERT_EQ(minutes["usage"].size(), 2u) << minutes.dump();
  const Json& first = minutes["usage"][0];
  EXPECT_EQ(first["guest"], "m1");
  EXPECT_EQ(first["lease_class"], "guaranteed");
  EXPECT_EQ(first["start_ms"], m);
  EXPECT_EQ(first["vcpu_granted_ms"], 2 * kMinuteMs);
  EXPECT_EQ(first["vcpu_used_ms"], 45'000);            // 0.75 cores on average for a minute
  EXPECT_EQ(first["memory_granted_mib_s"], 256 * 60);  // its lease's 256 MiB
  EXPECT_EQ(first["memory_used_mib_s"], 150 * 60);
  EXPECT_EQ(first["gap_ms"], 0);
  const Json& second = minutes["usage"][1];
  EXPECT_EQ(second["gap_ms"], kMinuteMs);
  EXPECT_EQ(second["gap_cause"], "no samples from host h1");
  EXPECT_EQ(second["vcpu_used_ms"], 0);                 // not filled in
  EXPECT_EQ(second["vcpu_granted_ms"], 2 * kMinuteMs);  // the lease still granted it
  // Past the hour's end every minute of it is recorded and the hour is their sum.
  const int64_t hour_end = (m / kHourMs + 1) * kHourMs;
  AdvanceTo(hour_end + 6'000);
  Pass();
  Pass();
  Json hours = Usage("span=hour&from=" + std::to_string(m / kHourMs * kHourMs));
  ASSERT_EQ(hours["usage"].size(), 1u) << hours.dump();
  const int64_t minutes_in_hour = (hour_end - m) / kMinuteMs;
  EXPECT_EQ(hours["usage"][0]["records"], minutes_in_hour);
  EXPECT_EQ(hours["usage"][0]["vcpu_granted_ms"], minutes_in_hour * 2 * kMinuteMs);
  EXPECT_EQ(hours["usage"][0]["vcpu_used_ms"], 45'000);
  EXPECT_EQ(hours["usage"][0]["gap_ms"], (minutes_in_hour - 1) * kMinuteMs);
  auto verify = Client().Call("GET", "/api/v1/usage/verify?from=" + std::to_string(m / kHourMs * kHourMs));
  ASSERT_TRUE(verify.ok()) << verify.status().ToString();
  EXPECT_EQ((*verify)["ok"], true) << verify->dump();
  EXPECT_EQ((*verify)["checked"]["hours"], 1) << verify->dump();
  EXPECT_EQ((*verify)["checked"]["minutes"], minutes_in_hour);
  // A doctored minute is caught by the check, naming the hour.
  ASSERT_TRUE(manager_->store()
                  .Exec("UPDATE usage_records SET vcpu_used_ms = vcpu_used_ms + 1 WHERE span_ms = ? AND start_ms = ?",
                        {kMinuteMs, m})
                  .ok());
  verify = Client().Call("GET", "/api/v1/usage/verify?from=" + std::to_string(m / kHourMs * kHourMs));
  EXPECT_EQ((*verify)["ok"], false);
  EXPECT_NE((*verify)["problems"][0].get<std::string>().find("not the sum of its records (vcpu_used"),
            std::string::npos)
      << verify->dump();
}

TEST_F(MeteringTest, AMinuteWhoseWatermarkWasLostIsNotCountedTwice) {
  StartManager();
  AddHost("h1");
  Create("m1");
  const int64_t m = FirstMinute();
  AdvanceTo(m + 3 * kMinuteMs + 6'000);
  Pass();
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM usage_records WHERE span_ms = 60000"), 3);
  // As if the pass had died after writing its records: the same minutes again add nothing.
  ASSERT_TRUE(manager_->store().Exec("UPDATE metering_state SET value = ? WHERE key = 'minutes_through'", {m}).ok());
  Pass();
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM usage_records WHERE span_ms = 60000"), 3);
  EXPECT_EQ(Count("SELECT COUNT(DISTINCT start_ms) AS n FROM usage_records WHERE span_ms = 60000"), 3);
}

TEST_F(MeteringTest, TenantsReadTheirOwnUsageAndBillingReadersEveryones) {
  StartManager();
  AddHost("h1");
  const std::string acme = TenantToken("acme"), beta = TenantToken("beta");
  const std::string billing = RoleToken("billing-reader");
  Create("web", {{"lease_class", "elastic"}}, acme);
  Create("db", Json::object(), beta);
  const int64_t m = FirstMinute();
  AdvanceTo(m + kMinuteMs + 6'000);
  Pass();
  const std::string q = "span=minute&from=" + std::to_string(m);
  Json own = Usage(q, acme);
  ASSERT_EQ(own["usage"].size(), 1u) << own.dump();
  EXPECT_EQ(own["usage"][0]["guest"], "web");  // its own short name
  EXPECT_EQ(own["usage"][0]["lease_class"], "elastic");
  EXPECT_EQ(Usage(q + "&guest=web", acme)["usage"].size(), 1u);
  EXPECT_EQ(Usage(q + "&guest=beta:db", acme)["usage"].size(), 0u);  // another tenant's guest: nothing
  EXPECT_EQ(HttpStatus("?" + q + "&tenant=beta", acme), 403);
  auto verify = Client(acme).Do("GET", "/api/v1/usage/verify");
  EXPECT_EQ(verify->status, 403);
  Json all = Usage(q, billing);
  EXPECT_EQ(all["usage"].size(), 2u);
  EXPECT_EQ(all["total"], 2);
  EXPECT_EQ(Usage(q + "&tenant=beta", billing)["usage"][0]["guest"], "beta:db");
  // Pages of one, and the CSV of a page.
  Json page = Usage(q + "&limit=1", billing);
  ASSERT_EQ(page["usage"].size(), 1u);
  ASSERT_TRUE(page["next"].is_string());
  Json rest = Usage(q + "&limit=1&after=" + page["next"].get<std::string>(), billing);
  ASSERT_EQ(rest["usage"].size(), 1u);
  EXPECT_NE(rest["usage"][0]["guest"], page["usage"][0]["guest"]);
  EXPECT_EQ(page["total"], 2);
  EXPECT_TRUE(rest["total"].is_null());  // counted on the first page only
  auto csv = Client(billing).Do("GET", "/api/v1/usage?" + q + "&format=csv");
  ASSERT_TRUE(csv.ok());
  EXPECT_EQ(csv->status, 200);
  EXPECT_EQ(csv->headers["content-type"], "text/csv; charset=utf-8");
  EXPECT_EQ(csv->body.rfind("guest,tenant,lease_class,span,start,start_ms,gap_ms,gap_cause,records,vcpu_granted_ms", 0),
            0u)
      << csv->body;
  EXPECT_EQ(std::count(csv->body.begin(), csv->body.end(), '\n'), 3);
  EXPECT_NE(csv->body.find("\"acme:web\",\"acme\",\"elastic\",minute,"), std::string::npos) << csv->body;
}

// The agents' numbered samples (vmm::SampleBook): counted once however often they come, acknowledged,
// their counters summed into the minute, and a minute waits until its hosts delivered past it.
TEST_F(MeteringTest, NumberedSamplesCountOnceAndAMinuteWaitsForThem) {
  StartManager();
  AddHost("h1");
  Create("m1", {{"vcpus", 2}});
  const int64_t m = FirstMinute();
  auto sample = [&](int64_t seq, int64_t at, int64_t cpu_us, int64_t net, int64_t disk) {
    return Json{{"seq", seq},
                {"sampled_at", FormatRfc3339(TimePoint(std::chrono::milliseconds(at)))},
                {"guests",
                 {{{"name", "m1"},
                   {"cpu_cores", 1.5},
                   {"memory_used_mib", 100},
                   {"cpu_us", cpu_us},
                   {"net_bytes", net},
                   {"disk_bytes", disk}}}}};
  };
  auto beat = [&](const Json& samples, Json* answer = nullptr) {
    Json hb = cluster_.HeartbeatBody("h1");
    hb["stats"] = {{"samples", samples}};
    const std::string text = hb.dump();
    auto r = Client(host_tokens_["h1"])
                 .Do("POST", "/api/v1/hosts/h1/heartbeat", text, {{"Content-Type", "application/json"}});
    if (!r.ok()) return -1;
    if (answer) *answer = Json::parse(r->body, nullptr, false);
    return r->status;
  };
  AdvanceTo(m + 61'000);
  Json ack;
  const Json first =
      Json::array({sample(1, m + 10'000, 10'000'000, 1000, 4096), sample(2, m + 20'000, 20'000'000, 500, 0)});
  ASSERT_EQ(beat(first, &ack), 200) << ack.dump();
  EXPECT_EQ(ack["samples_through"], 2);
  // The same samples again (the agent did not get the answer), and one more.
  Json again = first;
  again.push_back(sample(3, m + 30'000, 5'000'000, 0, 0));
  ASSERT_EQ(beat(again, &ack), 200);
  EXPECT_EQ(ack["samples_through"], 3);
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM usage_samples WHERE guest = 'm1'"), 3);
  EXPECT_EQ((*Client().Call("GET", "/api/v1/hosts/h1"))["usage"]["cpu_cores"], 1.5);  // its newest sample
  // The minute has ended, but h1's newest sample is from before its end: it waits.
  AdvanceTo(m + 66'000);
  Pass();
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM usage_records WHERE span_ms = 60000"), 0);
  ASSERT_EQ(beat(Json::array({sample(4, m + 61'000, 1'000'000, 7, 7)})), 200);
  Pass();
  Json minutes = Usage("span=minute&from=" + std::to_string(m));
  ASSERT_EQ(minutes["usage"].size(), 1u) << minutes.dump();
  const Json& r = minutes["usage"][0];
  EXPECT_EQ(r["vcpu_used_ms"], 35'000);  // the CPU time counted between samples, not the rate
  EXPECT_EQ(r["net_bytes"], 1500);
  EXPECT_EQ(r["disk_bytes"], 4096);
  EXPECT_EQ(r["memory_used_mib_s"], 100 * 60);
  EXPECT_EQ(r["gap_ms"], 0);
  // A host that heartbeats but whose samples stall is waited for 30 s past the minute's end.
  AdvanceTo(m + 100'000);
  ASSERT_EQ(beat(Json::array()), 200);
  AdvanceTo(m + 2 * kMinuteMs + 6'000);
  Pass();
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM usage_records WHERE span_ms = 60000"), 1);
  AdvanceTo(m + 2 * kMinuteMs + 31'000);
  Pass();
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM usage_records WHERE span_ms = 60000"), 2);
  // Its samples stopped at m+61 s: the rest of that minute was not counted, and says so.
  const Json stalled = Usage("span=minute&from=" + std::to_string(m + kMinuteMs))["usage"][0];
  EXPECT_EQ(stalled["gap_ms"], 59'000) << stalled.dump();
  EXPECT_EQ(stalled["vcpu_used_ms"], 1'000);
  EXPECT_EQ(stalled["gap_cause"].get<std::string>().rfind("no samples from host h1 after ", 0), 0u) << stalled.dump();
  // Samples that are not numbered, timed or counted right are refused, naming the field.
  for (const auto& [bad, field] :
       std::vector<std::pair<Json, std::string>>{{sample(0, m, 0, 0, 0), "seq"},
                                                 {sample(5, m + 3'600'000, 0, 0, 0), "sampled_at"},
                                                 {sample(5, m, -1, 0, 0), "cpu_us"},
                                                 {sample(5, m, 0, int64_t{1} << 52, 0), "net_bytes"}}) {
    Json err;
    EXPECT_EQ(beat(Json::array({bad}), &err), 400) << bad.dump();
    EXPECT_NE(err.dump().find(field), std::string::npos) << err.dump();
  }
  Json bad_time = sample(5, m, 0, 0, 0);
  bad_time["sampled_at"] = "yesterday";
  EXPECT_EQ(beat(Json::array({bad_time})), 400);
  Json bad_baseline = sample(5, m, 0, 0, 0);
  bad_baseline["guests"][0]["baseline"] = "yes";
  Json err;
  EXPECT_EQ(beat(Json::array({bad_baseline}), &err), 400);
  EXPECT_NE(err.dump().find("baseline"), std::string::npos) << err.dump();
}

// An agent killed and started again: what it counted and had not delivered is lost, and so is its
// counters' baseline. Its guest's minutes hold what was counted; the rest is a gap with its cause.
TEST_F(MeteringTest, AnAgentStartedAgainLeavesWhatItLostAsAGap) {
  StartManager();
  AddHost("h1");
  // An earlier guest named m2 was sampled on h1 before this one was created.
  ASSERT_TRUE(manager_->store()
                  .Exec("INSERT INTO usage_samples(at_ms, host, guest, cpu_cores, memory_mib) VALUES (?, 'h1', 'm2', "
                        "1, 100)",
                        {Now() - 5'000})
                  .ok());
  Create("m1", Json::object());
  Create("m2", Json::object());
  const int64_t m = FirstMinute();
  auto sample = [&](int64_t seq, int64_t at, int64_t cpu_ms, bool baseline = false) {
    Json g = {{"name", "m1"}, {"cpu_cores", 1.0}, {"cpu_us", cpu_ms * 1000}};
    if (baseline) g["baseline"] = true;
    Json s = {{"seq", seq},
              {"sampled_at", FormatRfc3339(TimePoint(std::chrono::milliseconds(at)))},
              {"guests", Json::array({g})}};
    if (at > m + kMinuteMs) {  // m2 runs from the second minute on: its first sample is a baseline too
      g["name"] = "m2";
      s["guests"].push_back(g);
    }
    return s;
  };
  auto beat = [&](const Json& samples) {
    Json hb = cluster_.HeartbeatBody("h1");
    hb["stats"] = {{"samples", samples}};
    auto r = Client(host_tokens_["h1"])
                 .Do("POST", "/api/v1/hosts/h1/heartbeat", hb.dump(), {{"Content-Type", "application/json"}});
    return r.ok() ? r->status : -1;
  };
  AdvanceTo(m + 30'000);
  ASSERT_EQ(beat(Json::array({sample(1, m + 10'000, 10'000), sample(2, m + 30'000, 20'000)})), 200);
  // Killed after m+30 s; started again, it numbers from 1 and its first sample is a baseline.
  AdvanceTo(m + 125'000);
  ASSERT_EQ(beat(Json::array(
                {sample(1, m + 75'000, 0, true), sample(2, m + 90'000, 15'000), sample(3, m + 125'000, 35'000)})),
            200);
  AdvanceTo(m + 127'000);
  Pass();
  const Json minutes = Usage("span=minute&from=" + std::to_string(m) + "&guest=m1")["usage"];
  ASSERT_EQ(minutes.size(), 2u) << minutes.dump();
  // m: counted through m+30 s; the next sample is the new agent's baseline.
  EXPECT_EQ(minutes[0]["vcpu_used_ms"], 30'000);
  EXPECT_EQ(minutes[0]["gap_ms"], 30'000);
  EXPECT_NE(minutes[0]["gap_cause"].get<std::string>().find("until its agent started counting again"),
            std::string::npos)
      << minutes[0].dump();
  // m+1: nothing counted before the baseline at m+75 s.
  EXPECT_EQ(minutes[1]["vcpu_used_ms"], 15'000);
  EXPECT_EQ(minutes[1]["gap_ms"], 15'000);
  EXPECT_NE(minutes[1]["gap_cause"].get<std::string>().find("the agent on host h1 started counting again"),
            std::string::npos)
      << minutes[1].dump();
  // m2's first sample follows one of the earlier m2's: nothing of this guest was lost before it.
  const Json m2 = Usage("span=minute&from=" + std::to_string(m + kMinuteMs) + "&guest=m2")["usage"];
  ASSERT_EQ(m2.size(), 1u) << m2.dump();
  EXPECT_EQ(m2[0]["gap_ms"], 0) << m2.dump();
  EXPECT_EQ(m2[0]["vcpu_used_ms"], 15'000) << m2.dump();  // its sample at m+90 s
  auto verify = Client().Call("GET", "/api/v1/usage/verify?from=" + std::to_string(m));
  ASSERT_TRUE(verify.ok()) << verify.status().ToString();
  EXPECT_EQ((*verify)["ok"], true) << verify->dump();
}

TEST_F(MeteringTest, BadUsageQueriesAreClear400s) {
  StartManager();
  for (const char* q : {"?span=week", "?from=2026-13-01T00:00:00Z", "?from=soon", "?format=xml", "?after=nonsense",
                        "?from=2000&to=1000", "?span=minute&from=0", "?limit=0"}) {
    auto r = Client().Do("GET", std::string("/api/v1/usage") + q);
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->status, 400) << q << ": " << r->body;
    EXPECT_NE(r->body.find("\"invalid_argument\""), std::string::npos) << q << ": " << r->body;
  }
  auto past = Client().Do("GET", "/api/v1/usage?span=hour&from=1000");
  EXPECT_NE(past->body.find("hour records are kept for 400 days"), std::string::npos) << past->body;
}

}  // namespace
}  // namespace uw::manager
