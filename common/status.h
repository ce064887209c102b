// Status and Result<T>: the one error type of Underware (after absl::Status).
//
// Codes are chosen by what the caller should do next:
//   kInvalidArgument    the request itself is wrong; fix it (malformed JSON, bad field).
//   kNotFound           the named thing does not exist (unknown guest, host, pool).
//   kAlreadyExists      a thing with that name or id exists already.
//   kFailedPrecondition fix state first (host in maintenance, guest not running, KVM unusable).
//   kAborted            retry higher up (plan conflict, stale snapshot, concurrent change).
//   kUnavailable        retry the same call later (host unreachable, daemon restarting).
//   kDeadlineExceeded   the operation ran out of time; its effect may or may not have happened.
//   kResourceExhausted  no capacity, or input larger than allowed.
//   kUnauthenticated    missing or wrong credentials.
//   kPermissionDenied   authenticated but not allowed.
//   kUnimplemented      the driver lacks the operation (LXC live migration, test driver stats).
//   kInternal           a bug or an unexpected answer from a component.
//
// Thread safety: values; copy freely.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>

namespace uw {

enum class StatusCode {
  kOk = 0,
  kInvalidArgument,
  kNotFound,
  kAlreadyExists,
  kFailedPrecondition,
  kAborted,
  kUnavailable,
  kDeadlineExceeded,
  kResourceExhausted,
  kUnauthenticated,
  kPermissionDenied,
  kUnimplemented,
  kInternal,
};

// Stable lower-case name of a code ("invalid_argument"); used in API error bodies.
std::string_view StatusCodeName(StatusCode code);
// Inverse of StatusCodeName; kInternal for an unknown name.
StatusCode StatusCodeFromName(std::string_view name);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() { return Status(); }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }

  // "not_found: guest 'web1' is not defined on this host".
  std::string ToString() const;

  // Returns a copy whose message is prefixed with "context: ".
  Status WithContext(std::string_view context) const;

  friend bool operator==(const Status& a, const Status& b) { return a.code_ == b.code_ && a.message_ == b.message_; }

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

inline Status InvalidArgumentError(std::string m) { return {StatusCode::kInvalidArgument, std::move(m)}; }
inline Status NotFoundError(std::string m) { return {StatusCode::kNotFound, std::move(m)}; }
inline Status AlreadyExistsError(std::string m) { return {StatusCode::kAlreadyExists, std::move(m)}; }
inline Status FailedPreconditionError(std::string m) { return {StatusCode::kFailedPrecondition, std::move(m)}; }
inline Status AbortedError(std::string m) { return {StatusCode::kAborted, std::move(m)}; }
inline Status UnavailableError(std::string m) { return {StatusCode::kUnavailable, std::move(m)}; }
inline Status DeadlineExceededError(std::string m) { return {StatusCode::kDeadlineExceeded, std::move(m)}; }
inline Status ResourceExhaustedError(std::string m) { return {StatusCode::kResourceExhausted, std::move(m)}; }
inline Status UnauthenticatedError(std::string m) { return {StatusCode::kUnauthenticated, std::move(m)}; }
inline Status PermissionDeniedError(std::string m) { return {StatusCode::kPermissionDenied, std::move(m)}; }
inline Status UnimplementedError(std::string m) { return {StatusCode::kUnimplemented, std::move(m)}; }
inline Status InternalError(std::string m) { return {StatusCode::kInternal, std::move(m)}; }

// Result<T> holds either a T or a non-OK Status.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : data_(std::move(value)) {}        // NOLINT: implicit by design
  Result(Status status) : data_(std::move(status)) {  // NOLINT
    if (std::get<Status>(data_).ok()) data_ = Status(StatusCode::kInternal, "Result built from OK status");
  }

  bool ok() const { return std::holds_alternative<T>(data_); }
  // OK when a value is held.
  Status status() const { return ok() ? Status::Ok() : std::get<Status>(data_); }

  // Must only be called when ok().
  T& value() & { return std::get<T>(data_); }
  const T& value() const& { return std::get<T>(data_); }
  T&& value() && { return std::get<T>(std::move(data_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  T value_or(T fallback) const { return ok() ? std::get<T>(data_) : std::move(fallback); }

 private:
  std::variant<T, Status> data_;
};

}  // namespace uw

// Propagate a non-OK Status from an expression returning Status.
#define UW_RETURN_IF_ERROR(expr)             \
  do {                                       \
    ::uw::Status uw_status_ = (expr);        \
    if (!uw_status_.ok()) return uw_status_; \
  } while (0)

#define UW_CONCAT_INNER_(a, b) a##b
#define UW_CONCAT_(a, b) UW_CONCAT_INNER_(a, b)
// `UW_ASSIGN_OR_RETURN(auto x, F())`: assigns the value or returns the error.
#define UW_ASSIGN_OR_RETURN(lhs, expr) UW_ASSIGN_OR_RETURN_IMPL_(UW_CONCAT_(uw_result_, __LINE__), lhs, expr)
// `lhs` may be a declaration ("auto x"), which cannot be parenthesized.
// NOLINTBEGIN(bugprone-macro-parentheses)
#define UW_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                              \
  if (!tmp.ok()) return tmp.status();             \
  lhs = std::move(tmp).value()
// NOLINTEND(bugprone-macro-parentheses)
