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
  explicit FakeAgent(std::string name, std::string token = "agent-token-0123456789") : name_(std::move(name)), token_(std::move(token)) {
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
      if (guests_.count(n)) return api::Response::Error(AlreadyExistsError("guest '" + n + "' already exists on host " + name_));
      Json g = {{"name", n}, {"kind", body->value("kind", "qemu")}, {"state", body->value("start", true) ? "running" : "shutoff"},
                {"vcpus", body->value("vcpus", 1)}, {"max_vcpus", body->value("max_vcpus", 1)},
                {"memory_mib", body->value("memory_mib", 256)}, {"max_memory_mib", body->value("max_memory_mib", 256)}};
      guests_[n] = g;
      return api::Response::Json(201, g);
    });
    router_.Add("GET", "/api/v1/guests/{name}", [this](const api::Request& req) { return With(req, [](Json& g) { return g; }); });
    router_.Add("DELETE", "/api/v1/guests/{name}", [this](const api::Request& req) {
      std::lock_guard l(mu_);
      if (!guests_.erase(req.params.at("name"))) return api::Response::Error(NotFoundError("no such guest"));
      return api::Response::Json(200, {{"deleted", req.params.at("name")}});
    });
    router_.Add("POST", "/api/v1/guests/{name}/start", [this](const api::Request& req) {
      return With(req, [](Json& g) { g["state"] = "running"; return g; });
    });
    router_.Add("POST", "/api/v1/guests/{name}/stop", [this](const api::Request& req) {
      return With(req, [](Json& g) { g["state"] = "shutoff"; return g; });
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
  void SetDelayMs(int ms) { delay_ms_ = ms; }
  int creates() const { return creates_; }

 private:
  template <typename F>
  api::Response With(const api::Request& req, F f) {
    std::lock_guard l(mu_);
    auto it = guests_.find(req.params.at("name"));
    if (it == guests_.end()) return api::Response::Error(NotFoundError("guest '" + req.params.at("name") + "' does not exist"));
    return api::Response::Json(200, f(it->second));
  }
  std::string name_, token_;
  api::Router router_;
  std::unique_ptr<api::HttpServer> server_;
  std::mutex mu_;
  std::map<std::string, Json> guests_;  // guarded by mu_
  std::string fail_create_;             // set before use
  std::atomic<int> delay_ms_{0};
  std::atomic<int> creates_{0};
};

}  // namespace uw::manager::testing
