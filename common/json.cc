#include "common/json.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace uw {

namespace {

// "line L, column C" of byte `offset` (both counted from 1; columns in bytes).
std::string Where(std::string_view text, size_t offset) {
  size_t line = 1, column = 1;
  offset = std::min(offset, text.size());
  for (size_t i = 0; i < offset; ++i) {
    if (text[i] == '\n') {
      ++line;
      column = 1;
    } else {
      ++column;
    }
  }
  return "line " + std::to_string(line) + ", column " + std::to_string(column);
}

// Printable ASCII kept, every other byte as \xNN: parser messages quote the input ("last read").
std::string Printable(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char ch : s) {
    auto c = static_cast<unsigned char>(ch);
    if (c >= 0x20 && c < 0x7f) {
      out.push_back(ch);
    } else {
      char hex[5];
      std::snprintf(hex, sizeof(hex), "\\x%02X", c);
      out += hex;
    }
  }
  return out;
}

}  // namespace

size_t JsonNestingDepth(std::string_view text, size_t stop_above, size_t* offset) {
  const char* const data = text.data();
  const size_t n = text.size();
  size_t depth = 0, deepest = 0;
  size_t i = 0;
  while (i < n) {
    const char c = data[i];
    if (c == '"') {
      // Skip the string: to the next quote preceded by an even number of backslashes.
      size_t from = i + 1;
      while (true) {
        const void* q = from < n ? std::memchr(data + from, '"', n - from) : nullptr;
        if (q == nullptr) {
          i = n;  // unterminated: the parser reports it
          break;
        }
        const size_t k = static_cast<size_t>(static_cast<const char*>(q) - data);
        size_t backslashes = 0;
        while (k - backslashes - 1 > i && data[k - backslashes - 1] == '\\') ++backslashes;
        if (backslashes % 2 == 0) {
          i = k + 1;
          break;
        }
        from = k + 1;
      }
      continue;
    }
    if (c == '[' || c == '{') {
      if (++depth > deepest) {
        deepest = depth;
        if (deepest > stop_above) {
          if (offset != nullptr) *offset = i;
          return deepest;
        }
      }
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
    ++i;
  }
  if (offset != nullptr) *offset = n;
  return deepest;
}

Result<Json> ParseJson(std::string_view text, std::string_view what, const JsonLimits& limits) {
  if (text.size() > limits.max_bytes) {
    return InvalidArgumentError(std::string(what) + ": " + std::to_string(text.size()) +
                                " bytes of JSON, more than the limit of " + std::to_string(limits.max_bytes));
  }
  size_t too_deep_at = 0;
  if (JsonNestingDepth(text, limits.max_depth, &too_deep_at) > limits.max_depth) {
    return InvalidArgumentError(std::string(what) + ": " + Where(text, too_deep_at) + ": nesting deeper than " +
                                std::to_string(limits.max_depth));
  }
  try {
    return Json::parse(text.begin(), text.end());
  } catch (const Json::parse_error& e) {
    std::string msg = e.what();
    // nlohmann prefixes "[json.exception.parse_error.101] parse error at line 1, column 2: ".
    if (auto pos = msg.find(": "); pos != std::string::npos && msg.rfind("[json.exception", 0) == 0) {
      msg = msg.substr(pos + 2);
    }
    return InvalidArgumentError(std::string(what) + ": " + Where(text, e.byte == 0 ? 0 : e.byte - 1) +
                                ": malformed JSON: " + Printable(msg));
  } catch (const Json::exception& e) {
    // Out-of-range numbers and the like: still the caller's input.
    return InvalidArgumentError(std::string(what) + ": malformed JSON: " + Printable(e.what()));
  }
}

Result<Json> LoadJsonFile(const std::string& path, const JsonLimits& limits) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return NotFoundError(path + ": cannot open file");
  std::error_code ec;
  uintmax_t size = std::filesystem::file_size(path, ec);
  if (!ec && size > limits.max_bytes) {
    return InvalidArgumentError(path + ": " + std::to_string(size) + " bytes of JSON, more than the limit of " +
                                std::to_string(limits.max_bytes));
  }
  std::stringstream ss;
  ss << in.rdbuf();
  return ParseJson(ss.str(), path, limits);
}

Result<JsonView> JsonView::Of(const Json& j, std::string path) {
  if (!j.is_object()) {
    return InvalidArgumentError((path.empty() ? std::string("document") : path) + ": expected a JSON object, got " +
                                j.type_name());
  }
  return JsonView(&j, std::move(path));
}

std::string JsonView::PathOf(std::string_view key) const {
  if (path_.empty()) return std::string(key);
  return path_ + "." + std::string(key);
}

Status JsonView::FieldError(std::string_view key, std::string_view message) const {
  return InvalidArgumentError(PathOf(key) + ": " + std::string(message));
}

const Json* JsonView::Find(std::string_view key) const {
  auto it = j_->find(key);
  if (it == j_->end() || it->is_null()) return nullptr;
  return &*it;
}

bool JsonView::Has(std::string_view key) const { return Find(key) != nullptr; }

namespace {
std::string Got(const Json& j) { return std::string(", got ") + j.type_name(); }
bool IsInteger(const Json& j) {
  if (j.is_number_integer()) return true;
  if (j.is_number_float()) {
    double d = j.get<double>();
    return std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9e15;
  }
  return false;
}
}  // namespace

Result<std::string> JsonView::String(std::string_view key) const {
  const Json* v = Find(key);
  if (!v) return FieldError(key, "required string is missing");
  if (!v->is_string()) return FieldError(key, "expected a string" + Got(*v));
  return v->get<std::string>();
}

Result<std::string> JsonView::String(std::string_view key, std::string fallback) const {
  if (!Find(key)) return fallback;
  return String(key);
}

Result<int64_t> JsonView::Int(std::string_view key) const {
  const Json* v = Find(key);
  if (!v) return FieldError(key, "required integer is missing");
  if (!IsInteger(*v)) return FieldError(key, "expected an integer" + Got(*v));
  return v->is_number_float() ? static_cast<int64_t>(v->get<double>()) : v->get<int64_t>();
}

Result<int64_t> JsonView::Int(std::string_view key, int64_t fallback) const {
  if (!Find(key)) return fallback;
  return Int(key);
}

Result<int64_t> JsonView::PositiveInt(std::string_view key) const {
  const Json* v = Find(key);
  if (!v || !IsInteger(*v) || (v->is_number_integer() ? v->get<int64_t>() <= 0 : v->get<double>() <= 0)) {
    return FieldError(key, "expected a positive integer");
  }
  return Int(key);
}

Result<int64_t> JsonView::NonNegativeInt(std::string_view key, int64_t fallback) const {
  if (!Find(key)) return fallback;
  auto r = Int(key);
  if (!r.ok() || *r < 0) return FieldError(key, "expected a non-negative integer");
  return r;
}

Result<double> JsonView::Number(std::string_view key) const {
  const Json* v = Find(key);
  if (!v) return FieldError(key, "required number is missing");
  if (!v->is_number()) return FieldError(key, "expected a number" + Got(*v));
  double d = v->get<double>();
  if (!std::isfinite(d)) return FieldError(key, "expected a finite number");
  return d;
}

Result<double> JsonView::Number(std::string_view key, double fallback) const {
  if (!Find(key)) return fallback;
  return Number(key);
}

Result<std::optional<double>> JsonView::OptionalNumber(std::string_view key) const {
  if (!Find(key)) return std::optional<double>();
  UW_ASSIGN_OR_RETURN(double d, Number(key));
  return std::optional<double>(d);
}

Result<std::optional<int64_t>> JsonView::OptionalInt(std::string_view key) const {
  if (!Find(key)) return std::optional<int64_t>();
  UW_ASSIGN_OR_RETURN(int64_t i, Int(key));
  return std::optional<int64_t>(i);
}

Result<bool> JsonView::Bool(std::string_view key) const {
  const Json* v = Find(key);
  if (!v) return FieldError(key, "required boolean is missing");
  if (!v->is_boolean()) return FieldError(key, "expected true or false" + Got(*v));
  return v->get<bool>();
}

Result<bool> JsonView::Bool(std::string_view key, bool fallback) const {
  if (!Find(key)) return fallback;
  return Bool(key);
}

Result<JsonView> JsonView::Object(std::string_view key) const {
  const Json* v = Find(key);
  if (!v) return FieldError(key, "required object is missing");
  if (!v->is_object()) return FieldError(key, "expected an object" + Got(*v));
  return JsonView(v, PathOf(key));
}

Result<std::vector<JsonView>> JsonView::Objects(std::string_view key) const {
  const Json* v = Find(key);
  if (!v) return FieldError(key, "required array is missing");
  if (!v->is_array()) return FieldError(key, "expected an array" + Got(*v));
  std::vector<JsonView> out;
  out.reserve(v->size());
  for (size_t i = 0; i < v->size(); ++i) {
    std::string p = PathOf(key) + "[" + std::to_string(i) + "]";
    const Json& e = (*v)[i];
    if (!e.is_object()) return InvalidArgumentError(p + ": expected an object" + Got(e));
    out.push_back(JsonView(&e, std::move(p)));
  }
  return out;
}

Result<std::vector<std::string>> JsonView::Strings(std::string_view key) const {
  const Json* v = Find(key);
  if (!v) return FieldError(key, "required array is missing");
  if (!v->is_array()) return FieldError(key, "expected an array of strings" + Got(*v));
  std::vector<std::string> out;
  for (size_t i = 0; i < v->size(); ++i) {
    if (!(*v)[i].is_string()) {
      return InvalidArgumentError(PathOf(key) + "[" + std::to_string(i) + "]: expected a string" + Got((*v)[i]));
    }
    out.push_back((*v)[i].get<std::string>());
  }
  return out;
}

Result<std::vector<std::string>> JsonView::Strings(std::string_view key, std::vector<std::string> fallback) const {
  if (!Find(key)) return fallback;
  return Strings(key);
}

Status JsonView::RejectUnknown(std::initializer_list<std::string_view> known) const {
  for (auto it = j_->begin(); it != j_->end(); ++it) {
    bool found = false;
    for (auto k : known) found = found || k == it.key();
    if (!found) return FieldError(it.key(), "unknown field");
  }
  return Status::Ok();
}

}  // namespace uw
