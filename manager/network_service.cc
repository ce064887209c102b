#include "manager/network_service.h"

#include <spdlog/spdlog.h>

#include <random>

#include "common/id.h"
#include "manager/event_log.h"
#include "manager/internal.h"
#include "netvirt/ipam.h"

namespace uw::manager::internal {
namespace {

constexpr const char* kNetworkSelect =
    "SELECT n.key, n.tenant, n.name, n.kind, n.segment, n.physical, n.subnet, n.gateway, n.created_ms, "
    "(SELECT COUNT(*) FROM ports p WHERE p.network = n.key) AS ports FROM networks n";
constexpr const char* kPortColumns = "id, network, tenant, mac, ip, guest, created_ms";

NetworkRecord NetworkFromRow(const SqlRow& r) {
  NetworkRecord n{.key = r.Str("key"),
                  .tenant = r.Str("tenant"),
                  .name = r.Str("name"),
                  .kind = r.Str("kind"),
                  .segment = r.Int("segment"),
                  .physical = r.Str("physical"),
                  .subnet = r.Str("subnet"),
                  .gateway = r.Str("gateway"),
                  .created_ms = r.Int("created_ms"),
                  .ports = r.Int("ports")};
  if (auto s = netvirt::ParseSubnet(n.subnet); s.ok()) {
    n.free_addresses = s->HostCount() - n.ports - (n.gateway.empty() ? 0 : 1);
  }
  return n;
}

PortRecord PortFromRow(const SqlRow& r) {
  return {.id = r.Str("id"),
          .network = r.Str("network"),
          .tenant = r.Str("tenant"),
          .mac = r.Str("mac"),
          .ip = r.Str("ip"),
          .guest = r.Str("guest"),
          .created_ms = r.Int("created_ms")};
}

// The tenant a request acts for: a tenant token's own; an operator's given one ("" for none).
Result<std::string> ActingTenant(const Principal& p, const std::string& asked, std::string_view what) {
  if (p.role != Role::kTenant) return asked;
  if (!asked.empty() && asked != p.tenant) {
    return PermissionDeniedError("tenant: a tenant token may only create " + std::string(what) +
                                 " for its own tenant '" + p.tenant + "'");
  }
  return p.tenant;
}

// `r`, its error prefixed with `context` ("subnet: ...").
template <class T>
Result<T> In(Result<T> r, std::string_view context) {
  if (r.ok()) return r;
  return r.status().WithContext(context);
}

uint64_t RandomBits() {
  thread_local std::mt19937_64 gen(std::random_device{}());
  return gen();
}

}  // namespace

int64_t NetworkService::NowMs() const {
  return std::chrono::duration_cast<std::chrono::milliseconds>(clock_.Now().time_since_epoch()).count();
}

// ---- networks ----

Result<NetworkRecord> NetworkService::Visible(const Principal& p, std::string_view name) {
  UW_ASSIGN_OR_RETURN(SqlRow row, FindTenantObject(store_, p, name, kNetworkSelect, "n.key", "n.name", "network"));
  return NetworkFromRow(row);
}

Result<Page<NetworkRecord>> NetworkService::ListNetworks(const Principal& p, const PageQuery& page) {
  SqlFilter scope;
  if (p.role == Role::kTenant) scope.And("n.tenant = ?", {p.tenant});
  PageQuery stored = page;  // a tenant's cursor is a short name
  if (p.role == Role::kTenant && !page.after.empty()) stored.after = GuestKey(p.tenant, page.after);
  UW_ASSIGN_OR_RETURN(RowPage rows, PageByKey(store_, kNetworkSelect, "networks n", "n.key", "key", scope, stored));
  Page<NetworkRecord> out;
  for (const SqlRow& r : rows.rows) out.items.push_back(NetworkFromRow(r));
  out.total = rows.total;
  if (rows.next) out.next = std::string(ShownGuestName(p, *rows.next));
  return out;
}

Result<NetworkRecord> NetworkService::GetNetwork(const Principal& p, std::string_view name) { return Visible(p, name); }

Result<int64_t> NetworkService::FreeVni() {
  // The one above the highest (through the index on the segment): a deleted network's VNI is not
  // given again while higher ones are free, so flows a host still has for it meet no new network.
  UW_ASSIGN_OR_RETURN(auto top, store_.Query("SELECT MAX(segment) AS m FROM networks WHERE kind = 'overlay' AND "
                                             "physical = ''"));
  int64_t vni = top[0].Int("m") + 1;
  if (vni > kMaxVni) {
    // Run out at the top: the lowest of 1 and those just above a taken one that no network has.
    UW_ASSIGN_OR_RETURN(
        auto gap, store_.Query("SELECT MIN(c.n) AS vni FROM (SELECT 1 AS n UNION ALL SELECT segment + 1 FROM "
                               "networks WHERE kind = 'overlay' AND physical = '') c WHERE c.n <= ? AND NOT EXISTS "
                               "(SELECT 1 FROM networks q WHERE q.kind = 'overlay' AND q.physical = '' AND q.segment = "
                               "c.n)",
                               {kMaxVni}));
    vni = gap[0].Int("vni");
  }
  if (vni < 1 || vni > kMaxVni) {
    return ResourceExhaustedError("every overlay VNI (1.." + std::to_string(kMaxVni) + ") is taken");
  }
  return vni;
}

Result<netvirt::Ipv4> NetworkService::FreeAddress(const std::string& network, const netvirt::Subnet& subnet,
                                                  std::optional<netvirt::Ipv4> gateway) {
  const int64_t first = subnet.FirstHost(), last = subnet.LastHost(), gw = gateway ? int64_t{*gateway} : -1;
  UW_ASSIGN_OR_RETURN(auto seen,
                      store_.Query("SELECT COUNT(*) AS c, MAX(ip_n) AS m FROM ports WHERE network = ?", {network}));
  const int64_t count = seen[0].Int("c"), top = seen[0].IsNull("m") ? first - 1 : seen[0].Int("m");
  int64_t next = 0;
  if (count == top - first + 1 - (gw >= first && gw <= top ? 1 : 0)) {
    // No gap below the highest port (a subnet filled from the bottom): the one above it.
    next = top + 1;
    if (next == gw) ++next;
  } else {
    // The lowest of the first address and those just above the gateway and each port that is
    // neither a port's nor the gateway (each probe through the unique index on the address).
    UW_ASSIGN_OR_RETURN(
        auto gap,
        store_.Query("SELECT MIN(c.n) AS n FROM (SELECT ? AS n UNION ALL SELECT ? UNION ALL SELECT ip_n + 1 FROM ports "
                     "WHERE network = ?) c WHERE c.n BETWEEN ? AND ? AND c.n != ? AND NOT EXISTS (SELECT 1 FROM "
                     "ports q WHERE q.network = ? AND q.ip_n = c.n)",
                     {first, gw >= 0 ? gw + 1 : first, network, first, last, gw, network}));
    next = gap[0].IsNull("n") ? last + 1 : gap[0].Int("n");
  }
  if (next < first || next > last) {
    return ResourceExhaustedError("subnet " + subnet.ToString() + " has no free address (all " +
                                  std::to_string(subnet.HostCount()) + " are taken)");
  }
  return static_cast<netvirt::Ipv4>(next);
}

Result<NetworkRecord> NetworkService::CreateNetwork(const Principal& p, const NetworkCreate& req) {
  UW_RETURN_IF_ERROR(NeedWrite(p));
  UW_ASSIGN_OR_RETURN(std::string tenant, ActingTenant(p, req.tenant, "networks"));
  if (p.role == Role::kTenant && req.kind == "vlan") {
    return PermissionDeniedError(
        "kind: VLAN networks (a tag on the hosts' physical network) are made by operators; "
        "a tenant makes overlay networks");
  }
  if (p.role == Role::kTenant && req.segment) {
    return PermissionDeniedError("segment: an overlay network's VNI is chosen by the manager for a tenant");
  }
  UW_ASSIGN_OR_RETURN(netvirt::Subnet subnet, In(netvirt::ParseSubnet(req.subnet), "subnet"));
  std::string gateway;
  if (!req.gateway) {
    gateway = netvirt::FormatIpv4(subnet.FirstHost());
  } else if (!req.gateway->empty()) {
    UW_ASSIGN_OR_RETURN(netvirt::Ipv4 gw, In(netvirt::ParseIpv4(*req.gateway), "gateway"));
    if (gw < subnet.FirstHost() || gw > subnet.LastHost()) {
      return InvalidArgumentError("gateway: " + *req.gateway + " is not a host address of " + subnet.ToString());
    }
    gateway = netvirt::FormatIpv4(gw);
  }
  NetworkRecord n{.key = GuestKey(tenant, req.name),
                  .tenant = tenant,
                  .name = req.name,
                  .kind = req.kind,
                  .physical = req.kind == "vlan" ? req.physical : "",
                  .subnet = subnet.ToString(),
                  .gateway = gateway,
                  .created_ms = NowMs()};
  UW_RETURN_IF_ERROR(store_.Transact([&]() -> Status {
    UW_ASSIGN_OR_RETURN(auto taken, store_.Query("SELECT key FROM networks WHERE key = ?", {n.key}));
    if (!taken.empty()) return AlreadyExistsError("network '" + req.name + "' already exists: choose another name");
    // A tenant's subnets do not overlap: its guests' addresses must say which network they mean.
    UW_ASSIGN_OR_RETURN(auto mine, store_.Query("SELECT name, subnet FROM networks WHERE tenant = ?", {tenant}));
    for (const SqlRow& r : mine) {
      auto other = netvirt::ParseSubnet(r.Str("subnet"));
      if (other.ok() && netvirt::Overlaps(subnet, *other)) {
        return FailedPreconditionError("subnet: " + subnet.ToString() + " overlaps " + other->ToString() +
                                       " of network '" + r.Str("name") + "'" +
                                       (tenant.empty() ? "" : " of tenant '" + tenant + "'"));
      }
    }
    if (req.segment) {
      n.segment = *req.segment;
      UW_ASSIGN_OR_RETURN(auto used,
                          store_.Query("SELECT key FROM networks WHERE kind = ? AND physical = ? AND segment = ?",
                                       {n.kind, n.physical, n.segment}));
      if (!used.empty()) {
        return AlreadyExistsError("segment: " + std::string(n.kind == "vlan" ? "VLAN " : "VNI ") +
                                  std::to_string(n.segment) + " is network '" + used[0].Str("key") + "''s");
      }
    } else {
      UW_ASSIGN_OR_RETURN(n.segment, FreeVni());
    }
    UW_RETURN_IF_ERROR(
        store_.Exec("INSERT INTO networks(key, tenant, name, kind, segment, physical, subnet, gateway, created_ms) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    {n.key, tenant, n.name, n.kind, n.segment, n.physical, n.subnet,
                     gateway.empty() ? SqlValue(nullptr) : SqlValue(gateway), n.created_ms}));
    return events_.Add("network.created", n.key, tenant,
                       {{"kind", n.kind}, {"segment", n.segment}, {"subnet", n.subnet}, {"by", p.token_id}});
  }));
  n.free_addresses = subnet.HostCount() - (gateway.empty() ? 0 : 1);
  return n;
}

Status NetworkService::DeleteNetwork(const Principal& p, std::string_view name) {
  UW_RETURN_IF_ERROR(NeedWrite(p));
  return store_.Transact([&]() -> Status {
    UW_ASSIGN_OR_RETURN(NetworkRecord n, Visible(p, name));
    if (n.ports > 0) {
      UW_ASSIGN_OR_RETURN(auto some,
                          store_.Query("SELECT id FROM ports WHERE network = ? ORDER BY id LIMIT 3", {n.key}));
      std::string ids;
      for (const SqlRow& r : some) ids += (ids.empty() ? "" : ", ") + r.Str("id");
      return FailedPreconditionError("network '" + std::string(ShownGuestName(p, n.key)) + "' has " +
                                     std::to_string(n.ports) + " port(s) (" + ids + (n.ports > 3 ? ", ..." : "") +
                                     "): delete them first");
    }
    UW_RETURN_IF_ERROR(store_.Exec("DELETE FROM networks WHERE key = ?", {n.key}));
    return events_.Add("network.deleted", n.key, n.tenant, {{"by", p.token_id}});
  });
}

// ---- ports ----

Result<Page<PortRecord>> NetworkService::ListPorts(const Principal& p, std::string_view network,
                                                   const PageQuery& page) {
  SqlFilter scope;
  if (p.role == Role::kTenant) scope.And("tenant = ?", {p.tenant});
  if (!network.empty()) {
    UW_ASSIGN_OR_RETURN(NetworkRecord n, Visible(p, network));
    scope.And("network = ?", {n.key});
  }
  UW_ASSIGN_OR_RETURN(RowPage rows, PageByKey(store_, std::string("SELECT ") + kPortColumns + " FROM ports", "ports",
                                              "id", "id", scope, page));
  Page<PortRecord> out;
  for (const SqlRow& r : rows.rows) out.items.push_back(PortFromRow(r));
  out.total = rows.total;
  out.next = rows.next;
  return out;
}

Result<PortRecord> NetworkService::GetPort(const Principal& p, std::string_view id) {
  UW_ASSIGN_OR_RETURN(
      auto rows, store_.Query(std::string("SELECT ") + kPortColumns + " FROM ports WHERE id = ?", {std::string(id)}));
  if (rows.empty() || (p.role == Role::kTenant && rows[0].Str("tenant") != p.tenant)) {
    return NotFoundError("port '" + std::string(id.substr(0, 200)) + "' not found");
  }
  return PortFromRow(rows[0]);
}

Result<PortRecord> NetworkService::CreatePort(const Principal& p, const PortCreate& req) {
  UW_RETURN_IF_ERROR(NeedWrite(p));
  PortRecord port{.id = NewId("port"), .created_ms = NowMs()};
  UW_RETURN_IF_ERROR(store_.Transact([&]() -> Status {
    UW_ASSIGN_OR_RETURN(NetworkRecord n, Visible(p, req.network));
    const std::string shown(ShownGuestName(p, n.key));
    UW_ASSIGN_OR_RETURN(netvirt::Subnet subnet, netvirt::ParseSubnet(n.subnet));
    port.network = n.key;
    port.tenant = n.tenant;
    std::optional<netvirt::Ipv4> gateway;
    if (!n.gateway.empty()) {
      if (auto g = netvirt::ParseIpv4(n.gateway); g.ok()) gateway = *g;
    }
    netvirt::Ipv4 a = 0;
    if (!req.ip.empty()) {
      UW_ASSIGN_OR_RETURN(a, In(netvirt::ParseIpv4(req.ip), "ip"));
      if (!subnet.Contains(a)) {
        return InvalidArgumentError("ip: " + req.ip + " is outside network '" + shown + "''s subnet " + n.subnet);
      }
      if (a < subnet.FirstHost() || a > subnet.LastHost()) {
        return InvalidArgumentError("ip: " + req.ip + " is the " + (a == subnet.network ? "network" : "broadcast") +
                                    " address of " + n.subnet);
      }
      if (gateway && a == *gateway) return InvalidArgumentError("ip: " + req.ip + " is the network's gateway");
      UW_ASSIGN_OR_RETURN(auto taken, store_.Query("SELECT id FROM ports WHERE network = ? AND ip_n = ?",
                                                   {n.key, static_cast<int64_t>(a)}));
      if (!taken.empty()) return AlreadyExistsError("ip: " + req.ip + " is another port's on network '" + shown + "'");
    } else {
      UW_ASSIGN_OR_RETURN(a, In(FreeAddress(n.key, subnet, gateway), "network '" + shown + "'"));
    }
    port.ip = netvirt::FormatIpv4(a);
    if (!req.mac.empty()) {
      UW_ASSIGN_OR_RETURN(port.mac, In(netvirt::ParseMac(req.mac), "mac"));
      UW_ASSIGN_OR_RETURN(auto used, store_.Query("SELECT id FROM ports WHERE mac = ?", {port.mac}));
      if (!used.empty()) return AlreadyExistsError("mac: " + port.mac + " is another port's");
    } else {
      for (int attempt = 0; port.mac.empty(); ++attempt) {
        if (attempt == 16) return InternalError("no free MAC address found in 16 random tries");
        std::string mac = netvirt::MacFromBits(RandomBits());
        UW_ASSIGN_OR_RETURN(auto used, store_.Query("SELECT id FROM ports WHERE mac = ?", {mac}));
        if (used.empty()) port.mac = std::move(mac);
      }
    }
    UW_RETURN_IF_ERROR(
        store_.Exec("INSERT INTO ports(id, network, tenant, mac, ip, ip_n, guest, created_ms) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    {port.id, port.network, port.tenant, port.mac, port.ip, static_cast<int64_t>(a),
                     req.guest.empty() ? SqlValue(nullptr) : SqlValue(req.guest), port.created_ms}));
    port.guest = req.guest;
    Json what = {{"port", port.id}, {"ip", port.ip}, {"mac", port.mac}, {"by", p.token_id}};
    if (!req.guest.empty()) what["guest"] = req.guest;
    return events_.Add("port.created", port.network, port.tenant, what);
  }));
  return port;
}

Status NetworkService::DeletePort(const Principal& p, std::string_view id) {
  UW_RETURN_IF_ERROR(NeedWrite(p));
  return store_.Transact([&]() -> Status {
    UW_ASSIGN_OR_RETURN(PortRecord port, GetPort(p, id));
    if (!port.guest.empty()) {
      return FailedPreconditionError("port '" + port.id + "' is guest '" + std::string(ShownGuestName(p, port.guest)) +
                                     "''s NIC");
    }
    UW_RETURN_IF_ERROR(store_.Exec("DELETE FROM ports WHERE id = ?", {port.id}));
    return events_.Add("port.deleted", port.network, port.tenant,
                       {{"port", port.id}, {"ip", port.ip}, {"by", p.token_id}});
  });
}

Status NetworkService::AttachForCreate(GuestCreate& req) {
  // The guest's own tenant names the networks (a tenant's guest never gets another's network).
  Principal owner;
  owner.role = req.tenant.empty() ? Role::kAdmin : Role::kTenant;
  owner.tenant = req.tenant;
  owner.token_id = "guest " + req.name;
  for (const GuestCreate::NetworkNic& nic : req.network_nics) {
    auto refused = [&](const Status& why) {
      ReleaseGuest(req.name);  // the ports made for the NICs before this one
      return why.WithContext("nics[" + std::to_string(nic.index) + "]");
    };
    auto network = Visible(owner, nic.network);
    if (!network.ok()) return refused(network.status());
    auto port = CreatePort(owner, {.network = nic.network, .ip = nic.ip, .mac = nic.mac, .guest = req.name});
    if (!port.ok()) return refused(port.status());
    const std::string prefix = network->subnet.substr(network->subnet.find('/'));
    req.agent_spec["nics"][nic.index] = {{"type", "port"},
                                         {"port", port->id},
                                         {"network", network->key},
                                         {"mac", port->mac},
                                         {"address", port->ip + prefix},
                                         {"gateway", network->gateway}};
  }
  return Status::Ok();
}

void NetworkService::ReleaseGuest(const std::string& guest) {
  Status s = store_.Transact([&]() -> Status {
    UW_ASSIGN_OR_RETURN(auto rows, store_.Query("SELECT id, network, tenant, ip FROM ports WHERE guest = ?", {guest}));
    for (const auto& r : rows) {
      UW_RETURN_IF_ERROR(store_.Exec("DELETE FROM ports WHERE id = ?", {r.Str("id")}));
      UW_RETURN_IF_ERROR(events_.Add("port.deleted", r.Str("network"), r.Str("tenant"),
                                     {{"port", r.Str("id")}, {"ip", r.Str("ip")}, {"guest", guest}}));
    }
    return Status::Ok();
  });
  if (!s.ok()) spdlog::error("releasing the ports of guest {}: {}", guest, s.ToString());
}

}  // namespace uw::manager::internal

namespace uw::manager::internal {

// A create's NICs on the network catalogue's networks ({"network": NAME, "ip", "mac"}: into
// g.network_nics, a placeholder the agent's parser takes in `spec`). A port NIC is the manager's
// to make: a request naming one is refused.
Status ParseNetworkNics(const JsonView& v, GuestCreate& g, Json& spec) {
  if (!v.Has("nics")) return Status::Ok();
  UW_ASSIGN_OR_RETURN(auto nics, v.Objects("nics"));
  for (size_t i = 0; i < nics.size(); ++i) {
    const JsonView& n = nics[i];
    if (n.Has("type")) {
      UW_ASSIGN_OR_RETURN(std::string type, n.String("type"));
      if (type == "port") return n.FieldError("type", "a port NIC is made by the manager: give {\"network\": NAME}");
    }
    if (!n.Has("network")) continue;
    UW_RETURN_IF_ERROR(n.RejectUnknown({"network", "ip", "mac"}));
    if (g.kind == GuestKind::kLxc) {
      return n.FieldError("network", "NICs on networks are for virtual machines (kvm, qemu), not containers");
    }
    GuestCreate::NetworkNic nic;
    nic.index = i;
    UW_ASSIGN_OR_RETURN(nic.network, n.String("network"));
    if (nic.network.empty() || nic.network.size() > 127) return n.FieldError("network", "expected a network name");
    UW_ASSIGN_OR_RETURN(nic.ip, n.String("ip", ""));
    UW_ASSIGN_OR_RETURN(nic.mac, n.String("mac", ""));
    g.network_nics.push_back(std::move(nic));
    spec["nics"][i] = {{"type", "user"}};
  }
  return Status::Ok();
}

Result<NetworkCreate> ParseNetworkCreate(const Json& body) {
  UW_ASSIGN_OR_RETURN(JsonView v, JsonView::Of(body, ""));
  UW_RETURN_IF_ERROR(v.RejectUnknown({"name", "tenant", "kind", "subnet", "gateway", "segment", "physical"}));
  NetworkCreate r;
  UW_ASSIGN_OR_RETURN(r.name, v.String("name"));
  UW_RETURN_IF_ERROR(ValidateName(r.name, "name"));
  UW_ASSIGN_OR_RETURN(r.tenant, v.String("tenant", ""));
  if (!r.tenant.empty()) UW_RETURN_IF_ERROR(ValidateName(r.tenant, "tenant"));
  UW_ASSIGN_OR_RETURN(r.kind, v.String("kind", "overlay"));
  if (r.kind != "overlay" && r.kind != "vlan") return v.FieldError("kind", "expected overlay or vlan");
  UW_ASSIGN_OR_RETURN(r.subnet, v.String("subnet"));
  if (body.contains("gateway")) {
    // null: no gateway (an isolated network); a string: that address.
    if (body["gateway"].is_null()) {
      r.gateway = "";
    } else {
      UW_ASSIGN_OR_RETURN(std::string gw, v.String("gateway"));
      if (gw.empty()) return v.FieldError("gateway", "expected an address in the subnet, or null for none");
      r.gateway = std::move(gw);
    }
  }
  UW_ASSIGN_OR_RETURN(r.segment, v.OptionalInt("segment"));
  const int64_t max = r.kind == "vlan" ? kMaxVlan : kMaxVni;
  if (r.segment && (*r.segment < 1 || *r.segment > max)) {
    return v.FieldError("segment", r.kind == "vlan" ? "expected a VLAN tag 1..4094" : "expected a VNI 1..16777215");
  }
  if (r.kind == "vlan" && !r.segment) return v.FieldError("segment", "a VLAN network needs its tag (1..4094)");
  if (v.Has("physical")) {
    if (r.kind != "vlan") return v.FieldError("physical", "only a VLAN network is on a physical bridge");
    UW_ASSIGN_OR_RETURN(r.physical, v.String("physical"));
    // An OVS bridge name on every host: a Linux interface name.
    if (r.physical.empty() || r.physical.size() > 15 ||
        r.physical.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789-_") != std::string::npos) {
      return v.FieldError("physical", "expected a bridge name: 1..15 of a-z, 0-9, '-', '_'");
    }
  }
  return r;
}

Result<PortCreate> ParsePortCreate(const Json& body) {
  UW_ASSIGN_OR_RETURN(JsonView v, JsonView::Of(body, ""));
  UW_RETURN_IF_ERROR(v.RejectUnknown({"network", "ip", "mac"}));
  PortCreate r;
  UW_ASSIGN_OR_RETURN(r.network, v.String("network"));
  UW_RETURN_IF_ERROR(ValidateGuestName(r.network, "network"));
  UW_ASSIGN_OR_RETURN(r.ip, v.String("ip", ""));
  UW_ASSIGN_OR_RETURN(r.mac, v.String("mac", ""));
  return r;
}

}  // namespace uw::manager::internal
