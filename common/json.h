// Reading JSON with errors that name the field: "vms[12].memory_mib: expected a positive integer".
//
// JsonView is a cheap, non-owning view of a JSON object plus the path that leads to it. Every
// getter returns Result<T>; a failure is kInvalidArgument with the full path in its message.
// The viewed json must outlive the view. Thread safety: as for the underlying const json.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/status.h"

namespace uw {

using Json = nlohmann::json;

// Parses text; `what` names the source ("request body", "/etc/underware/agent.json").
// Errors: kInvalidArgument "what: line L, column C: <parser's message>".
Result<Json> ParseJson(std::string_view text, std::string_view what);
// Reads and parses a file. Errors: kNotFound when missing, kInvalidArgument when malformed.
Result<Json> LoadJsonFile(const std::string& path);

class JsonView {
 public:
  // Fails unless `j` is an object. `path` is the name shown in errors ("" for a document root).
  static Result<JsonView> Of(const Json& j, std::string path = "");

  const std::string& path() const { return path_; }
  const Json& json() const { return *j_; }
  bool Has(std::string_view key) const;  // present and not null

  // Required fields: kInvalidArgument when missing, null or of the wrong type.
  Result<std::string> String(std::string_view key) const;
  Result<int64_t> Int(std::string_view key) const;
  Result<int64_t> PositiveInt(std::string_view key) const;
  Result<double> Number(std::string_view key) const;
  Result<bool> Bool(std::string_view key) const;
  Result<JsonView> Object(std::string_view key) const;
  Result<std::vector<JsonView>> Objects(std::string_view key) const;   // array of objects
  Result<std::vector<std::string>> Strings(std::string_view key) const;  // array of strings

  // Optional fields: `fallback` when missing or null; an error when present with the wrong type.
  Result<std::string> String(std::string_view key, std::string fallback) const;
  Result<int64_t> Int(std::string_view key, int64_t fallback) const;
  Result<int64_t> NonNegativeInt(std::string_view key, int64_t fallback) const;
  Result<double> Number(std::string_view key, double fallback) const;
  Result<bool> Bool(std::string_view key, bool fallback) const;
  // std::nullopt when missing or null (for "limit": null meaning unlimited).
  Result<std::optional<double>> OptionalNumber(std::string_view key) const;
  Result<std::optional<int64_t>> OptionalInt(std::string_view key) const;
  Result<std::vector<std::string>> Strings(std::string_view key, std::vector<std::string> fallback) const;

  // kInvalidArgument naming the first key not in `known` ("spec.memroy: unknown field").
  Status RejectUnknown(std::initializer_list<std::string_view> known) const;

  // "path.key" (or "key" at the root).
  std::string PathOf(std::string_view key) const;
  // kInvalidArgument "path.key: message".
  Status FieldError(std::string_view key, std::string_view message) const;

 private:
  JsonView(const Json* j, std::string path) : j_(j), path_(std::move(path)) {}
  const Json* Find(std::string_view key) const;
  const Json* j_;
  std::string path_;
};

}  // namespace uw
