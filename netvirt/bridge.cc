#include "netvirt/bridge.h"

#include <chrono>

namespace uw::netvirt {
namespace {

constexpr std::string_view kDb = "Open_vSwitch";

Json Where(const std::string& column, const Json& value) { return Json::array({Json::array({column, "==", value})}); }

Json Select(const std::string& table, const Json& where, const Json& columns) {
  return {{"op", "select"}, {"table", table}, {"where", where}, {"columns", columns}};
}

// An OVSDB map value from string pairs.
Json Map(std::initializer_list<std::pair<std::string, std::string>> pairs) {
  Json items = Json::array();
  for (const auto& [k, v] : pairs) items.push_back(Json::array({k, v}));
  return Json::array({"map", items});
}

// An optional integer column: the empty set for none.
Json OptionalInt(int v) { return v > 0 ? Json(v) : Json::array({"set", Json::array()}); }

// A name OVS accepts for a bridge or a device: what Linux takes for an interface name.
Status CheckName(const std::string& name, std::string_view what) {
  if (name.empty() || name.size() > 15 || name.find_first_of("/ \t\n:") != std::string::npos) {
    return InvalidArgumentError(std::string(what) + " '" + name.substr(0, 64) +
                                "': expected 1..15 characters, none of '/', ':' or blanks");
  }
  return Status::Ok();
}

// The uuid of a row (["uuid", "..."]) or of a set of one.
std::string UuidOf(const Json& v) {
  if (v.is_array() && v.size() == 2 && v[0] == "uuid") return v[1].get<std::string>();
  return "";
}

// True when set column `set` (a uuid or ["set", [...]]) holds `uuid`.
bool SetHas(const Json& set, const std::string& uuid) {
  if (UuidOf(set) == uuid) return true;
  if (!set.is_array() || set.size() != 2 || set[0] != "set") return false;
  for (const Json& v : set[1]) {
    if (UuidOf(v) == uuid) return true;
  }
  return false;
}

}  // namespace

Status EnsureBridge(OvsdbClient& client, const BridgeSpec& spec, OvsdbClient::Millis timeout) {
  UW_RETURN_IF_ERROR(CheckName(spec.name, "bridge"));
  if (spec.datapath_type != "netdev" && spec.datapath_type != "system") {
    return InvalidArgumentError("datapath_type '" + spec.datapath_type + "': expected netdev or system");
  }
  if (spec.fail_mode != "secure" && spec.fail_mode != "standalone") {
    return InvalidArgumentError("fail_mode '" + spec.fail_mode + "': expected secure or standalone");
  }
  UW_ASSIGN_OR_RETURN(Json found, client.Transact(kDb,
                                                  Json::array({Select("Open_vSwitch", Json::array(), {"_uuid"}),
                                                               Select("Bridge", Where("name", spec.name), {"_uuid"})}),
                                                  timeout));
  Json ops = Json::array();
  if (found[0]["rows"].empty()) {
    ops.push_back({{"op", "insert"}, {"table", "Open_vSwitch"}, {"row", Json::object()}});
  }
  const Json row = {{"datapath_type", spec.datapath_type}, {"fail_mode", spec.fail_mode}};
  if (!found[1]["rows"].empty()) {
    // There: set what may differ, and assert it is still there (a concurrent delete fails this).
    ops.push_back({{"op", "wait"},
                   {"table", "Bridge"},
                   {"where", Where("name", spec.name)},
                   {"columns", {"name"}},
                   {"until", "=="},
                   {"rows", Json::array({{{"name", spec.name}}})},
                   {"timeout", 0}});
    ops.push_back({{"op", "update"}, {"table", "Bridge"}, {"where", Where("name", spec.name)}, {"row", row}});
  } else {
    Json bridge = row;
    bridge["name"] = spec.name;
    bridge["ports"] = Json::array({"named-uuid", "p"});
    ops.push_back({{"op", "insert"},
                   {"table", "Interface"},
                   {"row", {{"name", spec.name}, {"type", "internal"}}},
                   {"uuid-name", "i"}});
    ops.push_back({{"op", "insert"},
                   {"table", "Port"},
                   {"row", {{"name", spec.name}, {"interfaces", Json::array({"named-uuid", "i"})}}},
                   {"uuid-name", "p"}});
    ops.push_back({{"op", "insert"}, {"table", "Bridge"}, {"row", bridge}, {"uuid-name", "b"}});
    ops.push_back(
        {{"op", "mutate"},
         {"table", "Open_vSwitch"},
         {"where", Json::array()},
         {"mutations",
          Json::array({Json::array(
              {"bridges", "insert", Json::array({"set", Json::array({Json::array({"named-uuid", "b"})})})})})}});
  }
  auto done = client.Transact(kDb, ops, timeout);
  if (!done.ok()) return done.status().WithContext("bridge '" + spec.name + "'");
  return Status::Ok();
}

Result<int64_t> PlugPort(OvsdbClient& client, const PortPlug& plug, OvsdbClient::Millis timeout) {
  UW_RETURN_IF_ERROR(CheckName(plug.bridge, "bridge"));
  UW_RETURN_IF_ERROR(CheckName(plug.name, "port"));
  if (plug.tag < 0 || plug.tag > 4094)
    return InvalidArgumentError("tag " + std::to_string(plug.tag) + ": expected 0..4094");
  const std::string where = "port '" + plug.name + "' on bridge '" + plug.bridge + "'";
  UW_ASSIGN_OR_RETURN(Json found,
                      client.Transact(kDb,
                                      Json::array({Select("Bridge", Where("name", plug.bridge), {"_uuid", "ports"}),
                                                   Select("Port", Where("name", plug.name), {"_uuid"}),
                                                   Select("Bridge", Json::array(), {"name", "ports"})}),
                                      timeout));
  if (found[0]["rows"].empty()) return NotFoundError(where + ": no such bridge");
  const Json external = Map({{"iface-id", plug.iface_id},
                             {"attached-mac", plug.mac},
                             {"iface-status", "active"},
                             {"uw-network", plug.network}});
  Json ops = Json::array();
  if (!found[1]["rows"].empty()) {
    const std::string port_uuid = UuidOf(found[1]["rows"][0]["_uuid"]);
    if (!SetHas(found[0]["rows"][0]["ports"], port_uuid)) {
      std::string other = "another bridge";
      for (const Json& b : found[2]["rows"]) {
        if (SetHas(b["ports"], port_uuid)) other = "bridge '" + b["name"].get<std::string>() + "'";
      }
      return FailedPreconditionError(where + ": the port is on " + other + "; unplug it there first");
    }
    ops.push_back({{"op", "update"},
                   {"table", "Port"},
                   {"where", Where("name", plug.name)},
                   {"row", {{"tag", OptionalInt(plug.tag)}}}});
    ops.push_back({{"op", "update"},
                   {"table", "Interface"},
                   {"where", Where("name", plug.name)},
                   {"row", {{"external_ids", external}}}});
  } else {
    ops.push_back({{"op", "insert"},
                   {"table", "Interface"},
                   {"row", {{"name", plug.name}, {"external_ids", external}}},
                   {"uuid-name", "i"}});
    ops.push_back(
        {{"op", "insert"},
         {"table", "Port"},
         {"row",
          {{"name", plug.name}, {"interfaces", Json::array({"named-uuid", "i"})}, {"tag", OptionalInt(plug.tag)}}},
         {"uuid-name", "p"}});
    ops.push_back(
        {{"op", "mutate"},
         {"table", "Bridge"},
         {"where", Where("name", plug.bridge)},
         {"mutations",
          Json::array({Json::array(
              {"ports", "insert", Json::array({"set", Json::array({Json::array({"named-uuid", "p"})})})})})}});
  }
  auto done = client.Transact(kDb, ops, timeout);
  if (!done.ok()) return done.status().WithContext(where);
  auto ofport = WaitForOfport(client, plug.name, timeout);
  if (!ofport.ok()) return ofport.status().WithContext(where);
  return *ofport;
}

Result<std::map<std::string, int>> NetworkTags(OvsdbClient& client, const std::string& bridge,
                                               OvsdbClient::Millis timeout) {
  UW_RETURN_IF_ERROR(CheckName(bridge, "bridge"));
  UW_ASSIGN_OR_RETURN(Json found,
                      client.Transact(kDb,
                                      Json::array({Select("Bridge", Where("name", bridge), {"ports"}),
                                                   Select("Port", Json::array(), {"_uuid", "name", "tag"}),
                                                   Select("Interface", Json::array(), {"name", "external_ids"})}),
                                      timeout));
  if (found[0]["rows"].empty()) return NotFoundError("bridge '" + bridge + "': no such bridge");
  std::map<std::string, std::string> network_of;  // interface name -> its uw-network
  for (const Json& i : found[2]["rows"]) {
    const Json& ids = i["external_ids"];  // ["map", [[k, v], ...]]
    if (!ids.is_array() || ids.size() != 2) continue;
    for (const Json& kv : ids[1]) {
      if (kv[0] == "uw-network" && !kv[1].get<std::string>().empty()) {
        network_of[i["name"].get<std::string>()] = kv[1].get<std::string>();
      }
    }
  }
  std::map<std::string, int> tags;
  for (const Json& p : found[1]["rows"]) {
    if (!SetHas(found[0]["rows"][0]["ports"], UuidOf(p["_uuid"])) || !p["tag"].is_number_integer()) continue;
    auto n = network_of.find(p["name"].get<std::string>());
    if (n != network_of.end()) tags.emplace(n->second, p["tag"].get<int>());
  }
  return tags;
}

Result<InterfaceFacts> FindInterface(OvsdbClient& client, const std::string& name, OvsdbClient::Millis timeout) {
  UW_RETURN_IF_ERROR(CheckName(name, "port"));
  UW_ASSIGN_OR_RETURN(
      Json found,
      client.Transact(kDb, Json::array({Select("Interface", Where("name", name), {"ofport", "external_ids"})}),
                      timeout));
  InterfaceFacts facts;
  if (found[0]["rows"].empty()) return facts;
  const Json& row = found[0]["rows"][0];
  facts.exists = true;
  if (row["ofport"].is_number_integer()) facts.ofport = row["ofport"].get<int64_t>();
  const Json& ids = row["external_ids"];
  if (ids.is_array() && ids.size() == 2) {
    for (const Json& kv : ids[1]) {
      if (kv[0] == "iface-id") facts.iface_id = kv[1].get<std::string>();
    }
  }
  return facts;
}

Status UnplugPort(OvsdbClient& client, const std::string& bridge, const std::string& name,
                  OvsdbClient::Millis timeout) {
  UW_RETURN_IF_ERROR(CheckName(bridge, "bridge"));
  UW_RETURN_IF_ERROR(CheckName(name, "port"));
  UW_ASSIGN_OR_RETURN(Json found,
                      client.Transact(kDb, Json::array({Select("Port", Where("name", name), {"_uuid"})}), timeout));
  if (found[0]["rows"].empty()) return Status::Ok();
  const Json uuid = found[0]["rows"][0]["_uuid"];
  const Json ops = Json::array(
      {{{"op", "mutate"},
        {"table", "Bridge"},
        {"where", Where("name", bridge)},
        {"mutations", Json::array({Json::array({"ports", "delete", Json::array({"set", Json::array({uuid})})})})}}});
  auto done = client.Transact(kDb, ops, timeout);
  if (!done.ok()) return done.status().WithContext("port '" + name + "' on bridge '" + bridge + "'");
  return Status::Ok();
}

}  // namespace uw::netvirt
