#include "storage/storage.h"

#include <pugixml.hpp>
#include <sstream>

#include "common/command.h"
#include "storage/internal.h"

namespace uw::storage {

Status ValidateName(std::string_view what, std::string_view name) {
  auto bad = [&](const std::string& why) {
    return InvalidArgumentError(std::string(what) + " name '" + std::string(name.substr(0, 80)) +
                                (name.size() > 80 ? "...'" : "'") + ": " + why);
  };
  if (name.empty()) return InvalidArgumentError(std::string(what) + " name: must not be empty");
  if (name.size() > 63) return bad("longer than 63 characters");
  auto alnum = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); };
  if (!alnum(name[0])) return bad("must start with a lowercase letter or a digit");
  for (char c : name) {
    if (!alnum(c) && c != '.' && c != '_' && c != '-') {
      return bad("only lowercase letters, digits, '.', '_' and '-' are allowed");
    }
  }
  return Status::Ok();
}

std::string DiskXml(const DiskSource& source, std::string_view target, std::string_view bus) {
  pugi::xml_document doc;
  auto disk = doc.append_child("disk");
  disk.append_attribute("type") = source.type.c_str();
  disk.append_attribute("device") = "disk";
  auto driver = disk.append_child("driver");
  driver.append_attribute("name") = "qemu";
  driver.append_attribute("type") = source.format.c_str();
  if (source.type == "network") {
    driver.append_attribute("cache") = "none";
    if (!source.auth_user.empty()) {
      auto auth = disk.append_child("auth");
      auth.append_attribute("username") = source.auth_user.c_str();
      auto secret = auth.append_child("secret");
      secret.append_attribute("type") = "ceph";
      secret.append_attribute("uuid") = source.secret_uuid.c_str();
    }
    auto src = disk.append_child("source");
    src.append_attribute("protocol") = source.protocol.c_str();
    src.append_attribute("name") = source.name.c_str();
    for (const auto& h : source.hosts) {
      auto host = src.append_child("host");
      const auto colon = h.rfind(':');
      host.append_attribute("name") = h.substr(0, colon).c_str();
      if (colon != std::string::npos) host.append_attribute("port") = h.substr(colon + 1).c_str();
    }
    if (!source.config_file.empty()) src.append_child("config").append_attribute("file") = source.config_file.c_str();
  } else {
    disk.append_child("source").append_attribute("file") = source.path.c_str();
  }
  auto tgt = disk.append_child("target");
  tgt.append_attribute("dev") = std::string(target).c_str();
  tgt.append_attribute("bus") = std::string(bus).c_str();
  std::ostringstream out;
  doc.save(out, "  ", pugi::format_indent | pugi::format_no_declaration);
  return out.str();
}

namespace internal {

std::string OneLine(const std::string& out) {
  std::string text;
  std::istringstream in(out);
  for (std::string l; std::getline(in, l);) {
    while (!l.empty() && (l.back() == '\r' || l.back() == ' ')) l.pop_back();
    if (l.find_first_not_of(" \t") == std::string::npos) continue;
    if (l.rfind("qemu-img: ", 0) == 0) l.erase(0, 10);
    text = text.empty() ? l : text + " " + l;
  }
  return text;
}

Result<std::string> RunTool(const std::vector<std::string>& argv, std::chrono::milliseconds timeout,
                            const std::string& what) {
  auto r = RunCommand(argv, {}, timeout);
  if (!r.ok()) {
    if (r.status().code() == StatusCode::kDeadlineExceeded) {
      return UnavailableError(what + ": " + argv[0] + " did not finish within " + std::to_string(timeout.count()) +
                              " ms (retry later)");
    }
    return UnavailableError(what + ": " + r.status().message());
  }
  if (r->exit_code == 0) return r->out;
  const std::string& said = r->err.empty() ? r->out : r->err;
  const std::string why = OneLine(said);
  const std::string message = what + ": " + (why.empty() ? argv[0] + " exited " + std::to_string(r->exit_code) : why);
  if (said.find("lock") != std::string::npos) return FailedPreconditionError(message + " (a running guest uses it)");
  if (said.find("No such file") != std::string::npos) return NotFoundError(message);
  return InternalError(message);
}

Result<ToolImageInfo> ParseToolImageInfo(const std::string& json_text, const std::string& what) {
  UW_ASSIGN_OR_RETURN(Json j, ParseJson(json_text, what));
  if (!j.is_object()) return InternalError(what + ": qemu-img info did not print an object");
  ToolImageInfo info;
  info.format = j.value("format", "");
  info.virtual_bytes = j.value("virtual-size", int64_t{0});
  info.actual_bytes = j.value("actual-size", int64_t{0});
  info.backing_file = j.value("backing-filename", "");
  if (auto s = j.find("snapshots"); s != j.end() && s->is_array()) {
    for (const auto& snap : *s) {
      if (snap.is_object()) info.snapshots.push_back(snap.value("name", ""));
    }
  }
  return info;
}

std::string JoinNames(const std::vector<std::string>& names) {
  std::string s;
  for (size_t i = 0; i < names.size() && i < 5; ++i) s += (i ? ", " : "") + names[i];
  if (names.size() > 5) s += ", ...";
  return s;
}

Status RefuseIfCloned(const std::string& backend, const ImageInfo& image) {
  if (image.volumes.empty()) return Status::Ok();
  return FailedPreconditionError(backend + ": image '" + image.name + "' has " + std::to_string(image.volumes.size()) +
                                 " volume(s) cloned from it (" + JoinNames(image.volumes) + "): delete them first");
}

}  // namespace internal
}  // namespace uw::storage
