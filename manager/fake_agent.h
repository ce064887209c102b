// An in-process stand-in for uw-agent for manager tests: an api::HttpServer answering the agent's
// guest routes from a map, with knobs to inject failures and latency. Thread-safe.
#pragma once

#include <atomic>
#include <map>
#include <mutex>
#include <string>
#include <thread>

#include "api/http.h"
#include "common/json.h"

namespace uw::manager::testing {

class FakeAgent {
 public:
  explicit FakeAgent(std::string name, std::string token = "agent-token-0123456789")
      : name_(std::move(name)), token_(std::move(token)) {
    {
      std::lock_guard l(RegistryMu());
      Registry()[name_] = this;
    }
    AddMigrationRoutes();
    router_.SetAuthenticator([this](api::Request& req) -> Status {
      if (req.BearerToken() != token_) return UnauthenticatedError("wrong agent token");
      return Status::Ok();
    });
    router_.Add("GET", "/api/v1/guests", [this](const api::Request&) {
      std::lock_guard l(mu_);
      Json out = Json::array();
      for (const auto& [n, g] : guests_) out.push_back(g);
      return api::Response::Json(200, {{"guests", out}});
    });
    router_.Add("POST", "/api/v1/guests", [this](const api::Request& req) {
      creates_++;
      if (delay_ms_ > 0) std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms_.load()));
      auto body = req.JsonBody();
      if (!body.ok()) return api::Response::Error(body.status());
      if (!fail_create_.empty()) return api::Response::Error(UnavailableError(fail_create_));
      std::string n = (*body)["name"].get<std::string>();
      std::lock_guard l(mu_);
      create_specs_[n] = *body;
      if (guests_.count(n))
        return api::Response::Error(AlreadyExistsError("guest '" + n + "' already exists on host " + name_));
      Json g = {{"name", n},
                {"kind", body->value("kind", "qemu")},
                {"state", body->value("start", true) ? "running" : "shutoff"},
                {"vcpus", body->value("vcpus", 1)},
                {"max_vcpus", body->value("max_vcpus", 1)},
                {"memory_mib", body->value("memory_mib", 256)},
                {"max_memory_mib", body->value("max_memory_mib", 256)}};
      guests_[n] = g;
      return api::Response::Json(201, g);
    });
    router_.Add("GET", "/api/v1/guests/{name}",
                [this](const api::Request& req) { return With(req, [](Json& g) { return g; }); });
    router_.Add("GET", "/api/v1/guests/{name}/console", [this](const api::Request& req) {
      std::lock_guard l(mu_);
      auto it = guests_.find(req.params.at("name"));
      if (it == guests_.end()) return api::Response::Error(NotFoundError("no such guest"));
      api::Response r;
      r.status = 200;
      r.content_type = "text/plain; charset=utf-8";
      r.body = "console of " + it->first + " on " + name_ + ": state " + it->second.value("state", "?") + "\n";
      return r;
    });
    router_.Add("DELETE", "/api/v1/guests/{name}", [this](const api::Request& req) {
      std::lock_guard l(mu_);
      // Like uw-agent: only a shut-off guest is deleted unless ?force=true (which powers it off).
      auto it = guests_.find(req.params.at("name"));
      const bool force = req.query.count("force") && req.query.at("force") == "true";
      if (it != guests_.end() && it->second.value("state", "") != "shutoff" && !force) {
        return api::Response::Error(FailedPreconditionError("guest '" + it->first + "' is " +
                                                            it->second.value("state", "") +
                                                            "; stop it first or delete with ?force=true"));
      }
      if (!guests_.erase(req.params.at("name"))) return api::Response::Error(NotFoundError("no such guest"));
      return api::Response::Json(200, {{"deleted", req.params.at("name")}});
    });
    router_.Add("POST", "/api/v1/guests/{name}/start", [this](const api::Request& req) {
      return With(req, [](Json& g) {
        g["state"] = "running";
        return g;
      });
    });
    router_.Add("POST", "/api/v1/guests/{name}/stop", [this](const api::Request& req) {
      return With(req, [](Json& g) {
        g["state"] = "shutoff";
        return g;
      });
    });
    router_.Add("POST", "/api/v1/guests/{name}/resize", [this](const api::Request& req) {
      auto body = req.JsonBody();
      return With(req, [&](Json& g) {
        if (body.ok() && body->contains("memory_mib")) g["memory_mib"] = (*body)["memory_mib"];
        if (body.ok() && body->contains("vcpus")) g["vcpus"] = (*body)["vcpus"];
        return g;
      });
    });
    api::ServerOptions opts;
    opts.worker_threads = 8;
    server_ = std::make_unique<api::HttpServer>(opts, &router_);
  }
  ~FakeAgent() {
    server_->Stop();
    std::lock_guard l(RegistryMu());
    if (Registry()[name_] == this) Registry().erase(name_);
  }
  Status Start() { return server_->Start(); }
  void Stop() { server_->Stop(); }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(server_->port()); }
  const std::string& token() const { return token_; }
  const std::string& name() const { return name_; }
  size_t GuestCount() {
    std::lock_guard l(mu_);
    return guests_.size();
  }
  bool Has(const std::string& n) {
    std::lock_guard l(mu_);
    return guests_.count(n) > 0;
  }
  Json Guests() {
    std::lock_guard l(mu_);
    Json out = Json::array();
    for (const auto& [n, g] : guests_) out.push_back(g);
    return out;
  }
  void Put(const Json& g) {
    std::lock_guard l(mu_);
    guests_[g["name"].get<std::string>()] = g;
  }
  void Erase(const std::string& n) {
    std::lock_guard l(mu_);
    guests_.erase(n);
  }
  void FailCreates(std::string why) { fail_create_ = std::move(why); }
  // Live migrations from this agent report `polls` progress answers before they complete
  // (the guest then moves to the destination agent); with `fail` set they fail instead.
  void SetMigration(int polls, std::string fail = "") {
    std::lock_guard l(mu_);
    migrate_polls_ = polls;
    fail_migrations_ = std::move(fail);
  }
  int migrations_started() const { return migrations_started_; }
  // Guests that arrive here by live migration take this state ("crashed": they die on arrival).
  void SetArrivalState(std::string state) {
    std::lock_guard l(mu_);
    arrival_state_ = std::move(state);
  }
  void Arrive(Json g) {
    std::lock_guard l(mu_);
    if (!arrival_state_.empty()) g["state"] = arrival_state_;
    guests_[g["name"].get<std::string>()] = g;
  }
  // The body of the last create of guest `n` this agent received (null when none).
  Json CreateSpec(const std::string& n) {
    std::lock_guard l(mu_);
    auto it = create_specs_.find(n);
    return it == create_specs_.end() ? Json(nullptr) : it->second;
  }
  void SetDelayMs(int ms) { delay_ms_ = ms; }
  int creates() const { return creates_; }

 private:
  template <typename F>
  api::Response With(const api::Request& req, F f) {
    std::lock_guard l(mu_);
    auto it = guests_.find(req.params.at("name"));
    if (it == guests_.end())
      return api::Response::Error(NotFoundError("guest '" + req.params.at("name") + "' does not exist"));
    return api::Response::Json(200, f(it->second));
  }
  std::string name_, token_;
  api::Router router_;
  std::unique_ptr<api::HttpServer> server_;
  std::mutex mu_;
  std::map<std::string, Json> guests_;        // guarded by mu_
  std::map<std::string, Json> create_specs_;  // guarded by mu_
  std::string fail_create_;                   // set before use
  std::atomic<int> delay_ms_{0};
  struct Outgoing {
    std::string state = "running";
    std::string destination;
    int polls_left = 0;
  };
  std::map<std::string, Outgoing> outgoing_;  // guarded by mu_
  int migrate_polls_ = 2;                     // guarded by mu_
  std::string fail_migrations_;               // guarded by mu_
  std::string arrival_state_;                 // guarded by mu_
  std::atomic<int> migrations_started_{0};

  static std::mutex& RegistryMu() {
    static std::mutex mu;
    return mu;
  }
  static std::map<std::string, FakeAgent*>& Registry() {  // guarded by RegistryMu()
    static std::map<std::string, FakeAgent*> r;
    return r;
  }

  void AddMigrationRoutes() {
    router_.Add("POST", "/api/v1/migrations/prepare", [this](const api::Request& req) {
      auto body = req.JsonBody();
      if (!body.ok()) return api::Response::Error(body.status());
      std::lock_guard l(mu_);
      std::string g = body->value("guest", "");
      if (guests_.count(g) && guests_[g]["state"] == "running") {
        return api::Response::Error(AlreadyExistsError("guest '" + g + "' already runs on host " + name_));
      }
      return api::Response::Json(200, {{"host", name_},
                                       {"migration_uri", "fake://" + name_},
                                       {"state_dir", "/fake/" + name_},
                                       {"disks", Json::array()}});
    });
    router_.Add("POST", "/api/v1/migrations/abandon", [this](const api::Request& req) {
      auto body = req.JsonBody();
      if (!body.ok()) return api::Response::Error(body.status());
      std::lock_guard l(mu_);
      std::string g = body->value("guest", "");
      bool removed = guests_.count(g) && guests_[g]["state"] != "running" && guests_.erase(g);
      return api::Response::Json(200, {{"guest", g}, {"removed", removed}});
    });
    router_.Add("POST", "/api/v1/guests/{name}/migrate", [this](const api::Request& req) {
      auto body = req.JsonBody();
      if (!body.ok()) return api::Response::Error(body.status());
      std::lock_guard l(mu_);
      const std::string& n = req.params.at("name");
      if (!guests_.count(n)) return api::Response::Error(NotFoundError("guest '" + n + "' does not exist"));
      auto it = outgoing_.find(n);
      if (it != outgoing_.end() && it->second.state == "running") {
        return api::Response::Error(FailedPreconditionError("guest '" + n + "' is already migrating"));
      }
      outgoing_[n] = {"running", (*body)["destination"].value("host", ""), migrate_polls_};
      migrations_started_++;
      return api::Response::Json(202, {{"guest", n}, {"state", "running"}});
    });
    router_.Add("GET", "/api/v1/guests/{name}/migration", [this](const api::Request& req) {
      const std::string& n = req.params.at("name");
      Json moved;
      std::string dest;
      Json out;
      {
        std::lock_guard l(mu_);
        out = {{"guest", n}, {"host", name_}, {"state", "none"}};
        auto it = outgoing_.find(n);
        if (it == outgoing_.end()) return api::Response::Json(200, out);
        Outgoing& m = it->second;
        if (m.state == "running") {
          if (!fail_migrations_.empty()) {
            m.state = "failed";
            out["error"] = fail_migrations_;
          } else if (m.polls_left > 0) {
            --m.polls_left;
            out["job"] = {{"active", true},
                          {"memory_total_bytes", 256 << 20},
                          {"memory_remaining_bytes", int64_t{m.polls_left + 1} << 20},
                          {"memory_processed_bytes", 1 << 20},
                          {"memory_iteration", 1}};
          } else if (guests_.count(n)) {
            m.state = "completed";
            moved = guests_[n];
            dest = m.destination;
            guests_.erase(n);
          }
        }
        out["state"] = m.state;
        if (m.state == "completed") out["job"] = {{"active", false}, {"elapsed_ms", 100}, {"downtime_ms", 10}};
      }
      if (!moved.is_null()) {
        std::lock_guard l(RegistryMu());
        auto peer = Registry().find(dest);
        if (peer != Registry().end()) peer->second->Arrive(moved);
      }
      return api::Response::Json(200, out);
    });
    router_.Add("POST", "/api/v1/guests/{name}/migration/{action}", [this](const api::Request& req) {
      std::lock_guard l(mu_);
      auto it = outgoing_.find(req.params.at("name"));
      if (it == outgoing_.end()) return api::Response::Error(NotFoundError("no migration"));
      if (req.params.at("action") == "cancel" && it->second.state == "running") it->second.state = "cancelled";
      return api::Response::Json(200, {{"ok", true}});
    });
  }
  std::atomic<int> creates_{0};
};

}  // namespace uw::manager::testing
