// Reading JSON with errors that name the field: "vms[12].memory_mib: expected a positive integer".
//
// JsonView is a cheap, non-owning view of a JSON object plus the path that leads to it. Every
// getter returns Result<T>; a failure is kInvalidArgument with the full path in its message.
// The viewed json must outlive the view. Thread safety: as for the underlying const json.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace uw {

using Json = nlohmann::json;

// Bounds on JSON text from outside (request bodies, agent replies, snapshot and plan files),
// enforced before a value is built: so nothing later (dump, copy, comparison, all recursive in
// nlohmann) can run out of stack on a hostile document.
struct JsonLimits {
  // Arrays and objects nested deeper than this are refused ("[[1]]" has depth 2, "1" depth 0).
  size_t max_depth = 64;
  // Longer text is refused without being parsed.
  size_t max_bytes = 64 << 20;
};

// Parses text; `what` names the source ("request body", "/etc/underware/agent.json").
// Errors, all kInvalidArgument, each naming where:
//   "what: line L, column C: malformed JSON: <parser's message>"
//   "what: line L, column C: nesting deeper than 64"  (L:C is the first bracket too deep)
//   "what: 70000000 bytes of JSON, more than the limit of 67108864"
// Messages carry no raw bytes of the text beyond printable ASCII (others appear as \xNN), so an
// error built from them is safe to put in a JSON answer.
// Cost: one extra pass over the text (a depth count that skips strings with memchr) before
// nlohmann's parser: 0.64 ms for a 476 KB guest list that takes 8.8 ms to parse (~7%); checking
// depth in nlohmann's parser callback instead cost +70%.
Result<Json> ParseJson(std::string_view text, std::string_view what, const JsonLimits& limits = {});
// Reads and parses a file (a file over limits.max_bytes is refused before it is read).
// Errors: kNotFound when missing, kInvalidArgument when malformed or over a limit.
Result<Json> LoadJsonFile(const std::string& path, const JsonLimits& limits = {});

// The deepest nesting of arrays and objects in `text` (strings skipped), stopping at the first
// opening bracket deeper than `stop_above`: *offset is then set to its byte offset (else to
// text.size()). Exact for valid JSON; for malformed text an upper bound of what a parser would
// nest before failing. Exposed for tests and benchmarks.
size_t JsonNestingDepth(std::string_view text, size_t stop_above, size_t* offset);

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
  Result<std::vector<JsonView>> Objects(std::string_view key) const;     // array of objects
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
