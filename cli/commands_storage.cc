// uwctl image (import, list, show, delete), uwctl volume (create, list, show, resize, attach,
// detach, delete) and uwctl storage (show, quota list, quota set): the storage catalogue guests'
// disks come from.
#include <CLI/CLI.hpp>
#include <charconv>
#include <sstream>

#include "api/request_parser.h"
#include "cli/commands.h"

namespace uw::cli {
namespace {

struct StorageArgs {
  std::string name;
  // image import
  std::string source;
  // volume create and resize: -1 is "not given"
  int64_t size_gib = -1;
  std::string image, tenant;
  // volume attach
  std::string guest;
  // storage quota set: a number of GiB or "none"
  std::string gib;
};

// A size in GiB as a table cell: at most two decimals, without trailing zeros ("20", "0.25"); Str
// would print three significant digits (1.5e+03 for 1500).
std::string Gib(const Json& j) {
  if (!j.is_number_float()) return Str(j);
  std::ostringstream o;
  o.setf(std::ios::fixed);
  o.precision(2);
  o << j.get<double>();
  std::string s = o.str();
  while (s.back() == '0') s.pop_back();
  if (s.back() == '.') s.pop_back();
  return s;
}

void AddImageImport(CLI::App* image, Invocation& inv, StorageArgs& a) {
  auto* import_cmd = image->add_subcommand(
      "import", "import a disk image into the catalogue: starts an image.import task (operators)");
  import_cmd->add_option("name", a.name, "image name (lowercase letters, digits, '.', '_', '-')")->required();
  import_cmd
      ->add_option("source", a.source,
                   "what the manager reads: an absolute file path on the manager's host, or an http:// or https:// "
                   "URL")
      ->required();
  inv.AddWait(import_cmd);
  import_cmd->callback([&inv, &a] {
    Json body = {{"name", a.name}, {"source", a.source}};
    AnswerTask(inv, inv.c.Call("POST", "/api/v1/images", &body));
  });
}

void AddImageList(CLI::App* image, Invocation& inv) {
  image->add_subcommand("list", "list images")->callback([&inv] {
    AnswerList(inv, inv.c.List("/api/v1/images", "images"), "images",
               {"NAME", "BACKEND", "FORMAT", "SIZE_GIB", "VOLUMES", "CREATED"}, [](const Json& i) {
                 return std::vector<std::string>{Str(i["name"]),     Str(i["backend"]), Str(i["format"]),
                                                 Gib(i["size_gib"]), Str(i["volumes"]), Str(i["created"])};
               });
  });
}

void AddVolumeCreate(CLI::App* volume, Invocation& inv, StorageArgs& a) {
  auto* create =
      volume->add_subcommand("create", "create a volume: empty (--size-gib) or cloned from an image (--image)");
  create->add_option("name", a.name, "volume name (lowercase letters, digits, '.', '_', '-')")->required();
  create->add_option("--size-gib", a.size_gib, "size in GiB (with --image: default the image's size)")
      ->check(CLI::PositiveNumber);
  create->add_option("--image", a.image, "clone this image (copy-on-write)");
  create->add_option("--tenant", a.tenant, "owner tenant (operators)");
  create->callback([&inv, &a] {
    Json body = {{"name", a.name}};
    if (a.size_gib > 0) body["size_gib"] = a.size_gib;
    if (!a.image.empty()) body["image"] = a.image;
    if (!a.tenant.empty()) body["tenant"] = a.tenant;
    Answer(inv, inv.c.Call("POST", "/api/v1/volumes", &body));
  });
}

void AddVolumeList(CLI::App* volume, Invocation& inv) {
  volume->add_subcommand("list", "list volumes (tenants: their own)")->callback([&inv] {
    AnswerList(inv, inv.c.List("/api/v1/volumes", "volumes"), "volumes",
               {"NAME", "TENANT", "SIZE_GIB", "IMAGE", "GUEST", "STATE"}, [](const Json& v) {
                 return std::vector<std::string>{Str(v["name"]),  Str(v["tenant"]), Str(v["size_gib"]),
                                                 Str(v["image"]), Str(v["guest"]),  Str(v["state"])};
               });
  });
}

void AddVolumeResize(CLI::App* volume, Invocation& inv, StorageArgs& a) {
  auto* resize = volume->add_subcommand("resize", "grow a volume (volumes only grow)");
  resize->add_option("name", a.name, "volume name")->required();
  resize->add_option("--size-gib", a.size_gib, "the new size in GiB")->required()->check(CLI::PositiveNumber);
  resize->callback([&inv, &a] {
    Json body = {{"size_gib", a.size_gib}};
    Answer(inv, inv.c.Call("POST", "/api/v1/volumes/" + api::PercentEncode(a.name) + "/resize", &body));
  });
}

void AddVolumeAttach(CLI::App* volume, Invocation& inv, StorageArgs& a) {
  auto* attach = volume->add_subcommand("attach", "make a free volume a disk of a guest (hot-plugged if it runs)");
  attach->add_option("name", a.name, "volume name")->required();
  attach->add_option("guest", a.guest, "guest name")->required();
  attach->callback([&inv, &a] {
    Json body = {{"guest", a.guest}};
    Answer(inv, inv.c.Call("POST", "/api/v1/volumes/" + api::PercentEncode(a.name) + "/attach", &body));
  });
  auto* detach = volume->add_subcommand("detach", "take a volume off its guest (unplugged if it runs)");
  detach->add_option("name", a.name, "volume name")->required();
  detach->callback([&inv, &a] {
    Answer(inv, inv.c.Call("POST", "/api/v1/volumes/" + api::PercentEncode(a.name) + "/detach", nullptr));
  });
}

// GIB of `storage quota set`: a whole number of GiB, or "none" (unlimited: null).
Result<Json> QuotaGib(const std::string& gib) {
  if (gib == "none") return Json(nullptr);
  int64_t n = -1;
  auto [end, ec] = std::from_chars(gib.data(), gib.data() + gib.size(), n);
  if (ec != std::errc() || end != gib.data() + gib.size() || n < 0) {
    return InvalidArgumentError("GIB '" + gib + "': expected a whole number of GiB (0 or more) or none");
  }
  return Json(n);
}

// The quota's GiB as a table cell: "none" for unlimited, as `storage quota set` takes it.
std::string QuotaCell(const Json& gib) { return gib.is_null() ? "none" : Str(gib); }

void AddStorageQuota(CLI::App* storage, Invocation& inv, StorageArgs& a) {
  auto* quota = storage->add_subcommand("quota", "tenants' storage quotas (GiB of volumes)");
  quota->require_subcommand(1);
  quota->add_subcommand("list", "quotas and what the tenants' volumes use (tenants: their own)")->callback([&inv] {
    AnswerList(inv, inv.c.List("/api/v1/storage/quotas", "quotas"), "quotas", {"TENANT", "GIB", "USED_GIB"},
               [](const Json& q) {
                 return std::vector<std::string>{Str(q["tenant"]), QuotaCell(q.value("gib", Json(nullptr))),
                                                 Str(q["used_gib"])};
               });
  });
  auto* set = quota->add_subcommand("set", "set the GiB a tenant's volumes may use (operators)");
  set->add_option("tenant", a.tenant, "tenant")->required();
  set->add_option("gib", a.gib, "GiB, or none for unlimited")->required();
  set->callback([&inv, &a] {
    auto gib = QuotaGib(a.gib);
    if (!gib.ok()) return void(inv.rc = inv.c.Fail(gib.status()));
    Json body = {{"gib", *gib}};
    Answer(inv, inv.c.Call("PUT", "/api/v1/storage/quotas/" + api::PercentEncode(a.tenant), &body));
  });
}

}  // namespace

void AddImageCommands(CLI::App& app, Invocation& inv) {
  StorageArgs& a = inv.Own<StorageArgs>();
  auto* image = app.add_subcommand("image", "disk images of the storage catalogue (golden, read-only)");
  image->require_subcommand(1);
  AddImageImport(image, inv, a);
  AddImageList(image, inv);
  AddObjectCall(image, inv, {"show", "show an image", "name", "image name", "GET", "/api/v1/images/"}, a.name);
  AddObjectCall(image, inv,
                {"delete", "delete an image no volume is cloned from (operators)", "name", "image name", "DELETE",
                 "/api/v1/images/"},
                a.name);
}

void AddVolumeCommands(CLI::App& app, Invocation& inv) {
  StorageArgs& a = inv.Own<StorageArgs>();
  auto* volume = app.add_subcommand("volume", "volumes: guests' disks (empty, or cloned from an image)");
  volume->require_subcommand(1);
  AddVolumeCreate(volume, inv, a);
  AddVolumeList(volume, inv);
  AddObjectCall(
      volume, inv,
      {"show", "show a volume and the guest it is a disk of", "name", "volume name", "GET", "/api/v1/volumes/"},
      a.name);
  AddVolumeResize(volume, inv, a);
  AddVolumeAttach(volume, inv, a);
  AddObjectCall(
      volume, inv,
      {"delete", "delete a volume that is no guest's disk", "name", "volume name", "DELETE", "/api/v1/volumes/"},
      a.name);
}

void AddStorageCommands(CLI::App& app, Invocation& inv) {
  StorageArgs& a = inv.Own<StorageArgs>();
  auto* storage = app.add_subcommand("storage", "the storage backend and tenants' quotas");
  storage->require_subcommand(1);
  storage->add_subcommand("show", "the storage backend and its capacity (not tenants)")->callback([&inv] {
    auto r = inv.c.Call("GET", "/api/v1/storage");
    if (!r.ok() || inv.c.AsJson()) return Answer(inv, r);
    // The capacity's fields as rows of their own (PrintObject would print it as one JSON cell).
    Json flat = *r;
    flat.erase("capacity");
    const Json capacity = r->value("capacity", Json::object());
    for (const auto& [k, v] : capacity.items()) flat[k] = v;
    inv.rc = PrintObject(inv.c, flat);
  });
  AddStorageQuota(storage, inv, a);
}

}  // namespace uw::cli
