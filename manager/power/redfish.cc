// The redfish power driver: a BMC's Redfish service (DMTF DSP0266) over HTTPS with HTTP Basic
// authentication. Status reads the ComputerSystem's PowerState; On, Off and Cycle post its
// ComputerSystem.Reset action with ResetType On, ForceOff and PowerCycle (ForceRestart where the
// BMC does not offer PowerCycle). The system is `system` or the only member of
// /redfish/v1/Systems, found once; the action's target is read from the system, as the standard
// asks (BMCs differ in where they put it).
#include <algorithm>
#include <cctype>
#include <mutex>
#include <utility>

#include "api/http.h"
#include "manager/power/power_internal.h"

namespace uw::power::internal {
namespace {

constexpr size_t kMaxCaCertBytes = 64 << 10;
constexpr size_t kMaxAnswerBytes = 1 << 20;  // a system resource is a few KiB

// "https://bmc[:port]" with an optional trailing "/": no path, no user information, no query.
bool ValidBaseUrl(const std::string& url) {
  std::string rest;
  if (url.rfind("https://", 0) == 0) {
    rest = url.substr(8);
  } else if (url.rfind("http://", 0) == 0) {
    rest = url.substr(7);
  } else {
    return false;
  }
  if (!rest.empty() && rest.back() == '/') rest.pop_back();
  return !rest.empty() && rest.size() <= 260 && rest[0] != '-' &&
         std::all_of(rest.begin(), rest.end(), [](unsigned char ch) {
           return std::isalnum(ch) || ch == '.' || ch == '-' || ch == ':' || ch == '_' || ch == '[' || ch == ']';
         });
}

bool ValidSystemPath(const std::string& p) {
  return p.rfind("/redfish/v1/", 0) == 0 && p.size() <= 512 && p.find("..") == std::string::npos &&
         std::all_of(p.begin(), p.end(), [](unsigned char ch) { return std::isgraph(ch) && ch != '?' && ch != '#'; });
}

// What a Redfish error answer says: error.message, else its first @Message.ExtendedInfo message,
// else the body's last line.
std::string RedfishMessage(const std::string& body) {
  const Json j = Json::parse(body, nullptr, false);
  if (j.is_object() && j.contains("error") && j["error"].is_object()) {
    const Json& e = j["error"];
    const auto info = e.find("@Message.ExtendedInfo");
    if (info != e.end() && info->is_array() && !info->empty() && (*info)[0].is_object() &&
        (*info)[0].value("Message", Json()).is_string()) {
      return (*info)[0]["Message"].get<std::string>();
    }
    if (e.value("message", Json()).is_string()) return e["message"].get<std::string>();
  }
  return LastLine(body, "");
}

class RedfishDriver final : public PowerDriver {
 public:
  RedfishDriver(PowerConfig c, std::string host) : c_(std::move(c)), host_(std::move(host)), client_(Options(c_)) {}

  Result<PowerState> Status() override {
    UW_ASSIGN_OR_RETURN(Json sys, SystemResource());
    const Json state = sys.value("PowerState", Json());
    if (!state.is_string()) return InternalError(Prefix() + "the system has no PowerState");
    const std::string s = state.get<std::string>();
    if (s == "Off") return PowerState::kOff;
    // PoweringOff is not off yet and PoweringOn is not off any more: only Off proves a fence.
    if (s == "On" || s == "PoweringOn" || s == "PoweringOff" || s == "Paused") return PowerState::kOn;
    return InternalError(Prefix() + "unexpected PowerState '" + LastLine(s, "") + "'");
  }
  uw::Status On() override { return Reset({"On"}); }
  uw::Status Off() override { return Reset({"ForceOff"}); }
  uw::Status Cycle() override { return Reset({"PowerCycle", "ForceRestart"}); }
  std::string Describe() const override { return "redfish " + c_.url; }

 private:
  static api::ClientOptions Options(const PowerConfig& c) {
    api::ClientOptions o;
    o.base_url = c.url;
    if (!o.base_url.empty() && o.base_url.back() == '/') o.base_url.pop_back();
    o.basic_user = c.username;
    o.basic_password = c.password;
    o.ca_cert_pem = c.ca_cert;
    // A call makes at most three requests (systems, system, action): together within the timeout.
    o.timeout_ms = std::max(100, c.timeout_ms / 3);
    o.connect_timeout_ms = std::min(o.timeout_ms, 3000);
    o.max_response_bytes = kMaxAnswerBytes;
    return o;
  }
  std::string Prefix() const { return "host '" + host_ + "' (" + Describe() + "): "; }

  // One request; a non-2xx answer becomes an error that says what the BMC said.
  Result<Json> Call(const std::string& method, const std::string& path, const Json* body) {
    const std::string payload = body ? body->dump() : "";
    std::map<std::string, std::string> headers = {{"Accept", "application/json"}};
    if (body) headers["Content-Type"] = "application/json";
    auto r = client_.Do(method, path, payload, headers);
    if (!r.ok()) return uw::Status(r.status().code(), Prefix() + r.status().message());
    const std::string what = method + " " + path + ": HTTP " + std::to_string(r->status) + ": ";
    if (r->status == 401 || r->status == 403) {
      return UnauthenticatedError(Prefix() + "the BMC refused the credentials (" + what + RedfishMessage(r->body) +
                                  ")");
    }
    if (r->status < 200 || r->status > 299) return UnavailableError(Prefix() + what + RedfishMessage(r->body));
    if (r->body.empty()) return Json();
    Json j = Json::parse(r->body, nullptr, false);
    if (j.is_discarded()) return InternalError(Prefix() + what + "the answer is not JSON: " + LastLine(r->body, ""));
    return j;
  }

  Result<std::string> SystemPath() {
    std::lock_guard<std::mutex> lock(mu_);
    if (!system_.empty()) return system_;
    UW_ASSIGN_OR_RETURN(Json systems, Call("GET", "/redfish/v1/Systems", nullptr));
    const Json members = systems.is_object() ? systems.value("Members", Json()) : Json();
    if (!members.is_array()) return InternalError(Prefix() + "/redfish/v1/Systems has no Members");
    std::vector<std::string> paths;
    for (const Json& m : members) {
      if (m.is_object() && m.value("@odata.id", Json()).is_string()) paths.push_back(m["@odata.id"].get<std::string>());
    }
    if (paths.empty()) return FailedPreconditionError(Prefix() + "the BMC lists no system in /redfish/v1/Systems");
    if (paths.size() > 1) {
      std::string all;
      for (const auto& p : paths) all += (all.empty() ? "" : ", ") + p;
      return FailedPreconditionError(Prefix() + "the BMC manages " + std::to_string(paths.size()) + " systems (" + all +
                                     "): set `system` to the host's");
    }
    if (!ValidSystemPath(paths[0])) return InternalError(Prefix() + "the BMC names its system '" + paths[0] + "'");
    system_ = paths[0];
    return system_;
  }

  Result<Json> SystemResource() {
    UW_ASSIGN_OR_RETURN(std::string path, SystemPath());
    UW_ASSIGN_OR_RETURN(Json sys, Call("GET", path, nullptr));
    if (!sys.is_object()) return InternalError(Prefix() + path + " is not a JSON object");
    return sys;
  }

  // Posts ComputerSystem.Reset with the first of `types` the BMC allows.
  uw::Status Reset(const std::vector<std::string>& types) {
    UW_ASSIGN_OR_RETURN(Json sys, SystemResource());
    const Json actions = sys.value("Actions", Json::object());
    const Json reset = actions.is_object() ? actions.value("#ComputerSystem.Reset", Json()) : Json();
    if (!reset.is_object() || !reset.value("target", Json()).is_string()) {
      return UnimplementedError(Prefix() + "the system offers no #ComputerSystem.Reset action");
    }
    const std::string target = reset["target"].get<std::string>();
    if (!ValidSystemPath(target)) return InternalError(Prefix() + "the Reset action's target is '" + target + "'");
    std::string type = types.front();
    const Json allowed = reset.value("ResetType@Redfish.AllowableValues", Json());
    if (allowed.is_array()) {
      auto offered = std::find_if(types.begin(), types.end(), [&](const std::string& t) {
        return std::find(allowed.begin(), allowed.end(), t) != allowed.end();
      });
      if (offered == types.end()) {
        return UnimplementedError(Prefix() + "the BMC does not offer ResetType " + types.front() + " (it offers " +
                                  allowed.dump() + ")");
      }
      type = *offered;
    }
    const Json body = {{"ResetType", type}};
    return Call("POST", target, &body).status();
  }

  const PowerConfig c_;
  const std::string host_;
  api::HttpClient client_;
  std::mutex mu_;
  std::string system_ = c_.system;  // guarded by mu_; found on first use unless configured
};

}  // namespace

Status ParseRedfishFields(const JsonView& v, PowerConfig& c) {
  UW_ASSIGN_OR_RETURN(c.url, v.String("url"));
  if (!ValidBaseUrl(c.url)) {
    return v.FieldError("url", "expected the BMC's base URL, https://ADDRESS[:PORT] (no path, no user)");
  }
  UW_ASSIGN_OR_RETURN(c.username, v.String("username"));
  if (c.username.empty() || c.username.size() > 64 || c.username.find(':') != std::string::npos) {
    return v.FieldError("username", "expected 1..64 characters without ':'");
  }
  if (c.password.empty()) return v.FieldError("password", "required for redfish");
  UW_ASSIGN_OR_RETURN(c.ca_cert, v.String("ca_cert", ""));
  if (c.ca_cert.size() > kMaxCaCertBytes) return v.FieldError("ca_cert", "at most 64 KiB of PEM");
  if (!c.ca_cert.empty() && c.ca_cert.find("-----BEGIN CERTIFICATE-----") == std::string::npos) {
    return v.FieldError("ca_cert", "expected PEM certificates (-----BEGIN CERTIFICATE-----)");
  }
  UW_ASSIGN_OR_RETURN(c.system, v.String("system", ""));
  if (!c.system.empty() && !ValidSystemPath(c.system)) {
    return v.FieldError("system", "expected the ComputerSystem's path, /redfish/v1/Systems/ID");
  }
  return Status::Ok();
}

std::unique_ptr<PowerDriver> MakeRedfishDriver(PowerConfig c, std::string host) {
  return std::make_unique<RedfishDriver>(std::move(c), std::move(host));
}

}  // namespace uw::power::internal
