// The per-migration record and its phases, the convergence policy and crash recovery.
#include <algorithm>
#include <array>
#include <cstdio>

#include "migration/migration.h"

namespace uw::migration {
namespace {

constexpr std::array<std::pair<Phase, std::string_view>, 11> kPhases = {{
    {Phase::kBegin, "begin"},
    {Phase::kPrepare, "prepare"},
    {Phase::kTransfer, "transfer"},
    {Phase::kSwitchOver, "switch_over"},
    {Phase::kConfirm, "confirm"},
    {Phase::kVerify, "verify"},
    {Phase::kDone, "done"},
    {Phase::kRollingBack, "rolling_back"},
    {Phase::kRolledBack, "rolled_back"},
    {Phase::kFailed, "failed"},
    {Phase::kFailedAfterSwitchover, "failed_after_switchover"},
}};

bool Allowed(Phase from, Phase to) {
  if (IsTerminal(from)) return false;
  if (to == Phase::kFailed) return true;  // anything unfinished may end badly
  switch (from) {
    case Phase::kBegin:
      return to == Phase::kPrepare || to == Phase::kRollingBack;
    case Phase::kPrepare:
      return to == Phase::kTransfer || to == Phase::kRollingBack;
    // transfer -> transfer: a restart (auto-converge) begins a new attempt.
    case Phase::kTransfer:
      return to == Phase::kTransfer || to == Phase::kSwitchOver || to == Phase::kRollingBack;
    // The destination never resumed: the source copy is still whole.
    case Phase::kSwitchOver:
      return to == Phase::kConfirm || to == Phase::kRollingBack;
    case Phase::kConfirm:
      return to == Phase::kVerify;
    case Phase::kVerify:
      return to == Phase::kDone || to == Phase::kFailedAfterSwitchover;
    case Phase::kRollingBack:
      return to == Phase::kRolledBack;
    default:
      return false;
  }
}

}  // namespace

std::string_view PhaseName(Phase p) {
  for (auto& [ph, name] : kPhases) {
    if (ph == p) return name;
  }
  return "unknown";
}

Result<Phase> PhaseFromName(std::string_view name) {
  for (auto& [ph, n] : kPhases) {
    if (n == name) return ph;
  }
  return InvalidArgumentError("unknown migration phase '" + std::string(name) + "'");
}

bool IsTerminal(Phase p) {
  return p == Phase::kDone || p == Phase::kRolledBack || p == Phase::kFailed || p == Phase::kFailedAfterSwitchover;
}

bool PastSwitchOver(Phase p) {
  return p == Phase::kConfirm || p == Phase::kVerify || p == Phase::kDone || p == Phase::kFailedAfterSwitchover;
}

Verdict VerifyCheck(const VerifyObservation& o, const VerifyPolicy& p, std::string* why) {
  const auto seconds = [](double s) { return std::to_string(static_cast<int64_t>(s)); };
  if (!o.reachable) {
    if (o.since_switchover_s < p.unreachable_s) return Verdict::kWait;
    *why = "the destination's agent did not answer for " + seconds(o.since_switchover_s) + " s after the switch-over";
    return Verdict::kUnreachable;
  }
  if (o.state.empty() || o.state == "crashed" || o.state == "shutoff") {
    *why = "the guest " + (o.state.empty() ? std::string("vanished from") : "is " + o.state + " on") +
           " the destination " + seconds(o.since_switchover_s) + " s after the switch-over";
    return Verdict::kDied;
  }
  const bool answered = !o.has_channel || o.answered;
  if (answered && o.state == "running" && o.since_switchover_s >= p.window_s) return Verdict::kVerified;
  if (o.since_switchover_s >= p.timeout_s) {
    *why = o.state != "running" ? "the guest is still " + o.state + " on the destination " +
                                      seconds(o.since_switchover_s) + " s after the switch-over"
                                : "the guest has not answered its control channel in the " +
                                      seconds(o.since_switchover_s) + " s since the switch-over";
    return Verdict::kDied;
  }
  return Verdict::kWait;
}

std::string_view ModeName(Mode m) { return m == Mode::kLive ? "live" : "cold"; }

Json RecordToJson(const Record& r) {
  const Stats& s = r.stats;
  return {{"id", r.id},
          {"guest", r.guest},
          {"source", r.source},
          {"destination", r.destination},
          {"mode", ModeName(r.mode)},
          {"copy_storage", r.copy_storage},
          {"phase", PhaseName(r.phase)},
          {"attempt", r.attempt},
          {"bandwidth_mib_s", r.bandwidth_mib_s},
          {"downtime_limit_ms", r.downtime_limit_ms},
          {"auto_converge", r.auto_converge},
          {"postcopy", r.postcopy},
          {"error", r.error},
          {"console_tail", r.console_tail},
          {"history", r.history},
          {"stats",
           {{"total_ms", s.total_ms},
            {"downtime_ms", s.downtime_ms},
            {"memory_total_bytes", s.memory_total_bytes},
            {"memory_remaining_bytes", s.memory_remaining_bytes},
            {"memory_processed_bytes", s.memory_processed_bytes},
            {"dirty_rate_pages_s", s.dirty_rate_pages_s},
            {"expected_downtime_ms", s.expected_downtime_ms},
            {"disk_total_bytes", s.disk_total_bytes},
            {"disk_remaining_bytes", s.disk_remaining_bytes},
            {"iteration", s.iteration}}}};
}

Result<Record> ParseRecord(const Json& json) {
  UW_ASSIGN_OR_RETURN(JsonView v, JsonView::Of(json, "migration"));
  Record r;
  UW_ASSIGN_OR_RETURN(r.id, v.String("id"));
  UW_ASSIGN_OR_RETURN(r.guest, v.String("guest"));
  UW_ASSIGN_OR_RETURN(r.source, v.String("source"));
  UW_ASSIGN_OR_RETURN(r.destination, v.String("destination"));
  UW_ASSIGN_OR_RETURN(std::string mode, v.String("mode", "live"));
  if (mode != "live" && mode != "cold") return v.FieldError("mode", "expected live or cold");
  r.mode = mode == "live" ? Mode::kLive : Mode::kCold;
  UW_ASSIGN_OR_RETURN(r.copy_storage, v.Bool("copy_storage", false));
  UW_ASSIGN_OR_RETURN(std::string phase, v.String("phase"));
  auto ph = PhaseFromName(phase);
  if (!ph.ok()) return v.FieldError("phase", ph.status().message());
  r.phase = *ph;
  UW_ASSIGN_OR_RETURN(int64_t attempt, v.Int("attempt", 1));
  r.attempt = static_cast<int>(attempt);
  UW_ASSIGN_OR_RETURN(r.bandwidth_mib_s, v.Number("bandwidth_mib_s", 0));
  UW_ASSIGN_OR_RETURN(r.downtime_limit_ms, v.Int("downtime_limit_ms", 0));
  UW_ASSIGN_OR_RETURN(r.auto_converge, v.Bool("auto_converge", false));
  UW_ASSIGN_OR_RETURN(r.postcopy, v.Bool("postcopy", false));
  UW_ASSIGN_OR_RETURN(r.error, v.String("error", ""));
  UW_ASSIGN_OR_RETURN(r.console_tail, v.String("console_tail", ""));
  UW_ASSIGN_OR_RETURN(r.history, v.Strings("history", {}));
  if (v.Has("stats")) {
    UW_ASSIGN_OR_RETURN(JsonView s, v.Object("stats"));
    Stats& st = r.stats;
    UW_ASSIGN_OR_RETURN(st.total_ms, s.Int("total_ms", 0));
    UW_ASSIGN_OR_RETURN(st.downtime_ms, s.Int("downtime_ms", 0));
    UW_ASSIGN_OR_RETURN(st.memory_total_bytes, s.Int("memory_total_bytes", 0));
    UW_ASSIGN_OR_RETURN(st.memory_remaining_bytes, s.Int("memory_remaining_bytes", 0));
    UW_ASSIGN_OR_RETURN(st.memory_processed_bytes, s.Int("memory_processed_bytes", 0));
    UW_ASSIGN_OR_RETURN(st.dirty_rate_pages_s, s.Int("dirty_rate_pages_s", 0));
    UW_ASSIGN_OR_RETURN(st.expected_downtime_ms, s.Int("expected_downtime_ms", 0));
    UW_ASSIGN_OR_RETURN(st.disk_total_bytes, s.Int("disk_total_bytes", 0));
    UW_ASSIGN_OR_RETURN(st.disk_remaining_bytes, s.Int("disk_remaining_bytes", 0));
    UW_ASSIGN_OR_RETURN(st.iteration, s.Int("iteration", 0));
  }
  return r;
}

Status Advance(Record& r, Phase to, std::string_view note) {
  if (!Allowed(r.phase, to)) {
    return FailedPreconditionError("migration " + r.id + " of " + r.guest + ": cannot go from " +
                                   std::string(PhaseName(r.phase)) + " to " + std::string(PhaseName(to)));
  }
  r.phase = to;
  std::string line(PhaseName(to));
  if (!note.empty()) line += ": " + std::string(note);
  r.history.push_back(std::move(line));
  return Status::Ok();
}

// ---------------------------------------------------------------------------------------------

Result<ConvergencePolicy> ParseConvergencePolicy(const Json& json, std::string_view path) {
  UW_ASSIGN_OR_RETURN(JsonView v, JsonView::Of(json, std::string(path)));
  UW_RETURN_IF_ERROR(v.RejectUnknown({"bandwidth_mib_s", "max_bandwidth_mib_s", "downtime_limit_ms", "base_timeout_s",
                                      "timeout_s_per_gib", "allow_auto_converge", "allow_postcopy", "stall_checks"}));
  ConvergencePolicy p;
  UW_ASSIGN_OR_RETURN(p.bandwidth_mib_s, v.Number("bandwidth_mib_s", p.bandwidth_mib_s));
  if (!(p.bandwidth_mib_s > 0)) return v.FieldError("bandwidth_mib_s", "expected a positive number");
  UW_ASSIGN_OR_RETURN(p.max_bandwidth_mib_s,
                      v.Number("max_bandwidth_mib_s", std::max(p.max_bandwidth_mib_s, p.bandwidth_mib_s)));
  if (p.max_bandwidth_mib_s < p.bandwidth_mib_s) {
    return v.FieldError("max_bandwidth_mib_s", "must be at least bandwidth_mib_s");
  }
  UW_ASSIGN_OR_RETURN(p.downtime_limit_ms, v.Int("downtime_limit_ms", p.downtime_limit_ms));
  if (p.downtime_limit_ms <= 0) return v.FieldError("downtime_limit_ms", "expected a positive integer");
  UW_ASSIGN_OR_RETURN(p.base_timeout_s, v.Number("base_timeout_s", p.base_timeout_s));
  if (!(p.base_timeout_s > 0)) return v.FieldError("base_timeout_s", "expected a positive number");
  UW_ASSIGN_OR_RETURN(p.timeout_s_per_gib, v.Number("timeout_s_per_gib", p.timeout_s_per_gib));
  if (p.timeout_s_per_gib < 0) return v.FieldError("timeout_s_per_gib", "expected a number >= 0");
  UW_ASSIGN_OR_RETURN(p.allow_auto_converge, v.Bool("allow_auto_converge", p.allow_auto_converge));
  UW_ASSIGN_OR_RETURN(p.allow_postcopy, v.Bool("allow_postcopy", p.allow_postcopy));
  UW_ASSIGN_OR_RETURN(int64_t stall, v.Int("stall_checks", p.stall_checks));
  if (stall <= 0) return v.FieldError("stall_checks", "expected a positive integer");
  p.stall_checks = static_cast<int>(stall);
  return p;
}

Json ConvergencePolicyToJson(const ConvergencePolicy& p) {
  return {{"bandwidth_mib_s", p.bandwidth_mib_s},     {"max_bandwidth_mib_s", p.max_bandwidth_mib_s},
          {"downtime_limit_ms", p.downtime_limit_ms}, {"base_timeout_s", p.base_timeout_s},
          {"timeout_s_per_gib", p.timeout_s_per_gib}, {"allow_auto_converge", p.allow_auto_converge},
          {"allow_postcopy", p.allow_postcopy},       {"stall_checks", p.stall_checks}};
}

double DeadlineSeconds(const ConvergencePolicy& p, int64_t memory_mib) {
  return p.base_timeout_s + p.timeout_s_per_gib * static_cast<double>(memory_mib) / 1024.0;
}

std::string_view ActionName(Action a) {
  switch (a) {
    case Action::kContinue:
      return "continue";
    case Action::kRaiseBandwidth:
      return "raise_bandwidth";
    case Action::kRestartWithAutoConverge:
      return "restart_with_auto_converge";
    case Action::kStartPostCopy:
      return "start_postcopy";
    case Action::kAbort:
      return "abort";
  }
  return "unknown";
}

Decision Decide(ConvergenceState& st, const ConvergenceInput& in, const ConvergencePolicy& p) {
  if (st.deadline_s <= 0) st.deadline_s = in.elapsed_s + DeadlineSeconds(p, in.memory_mib);
  const int64_t remaining = in.stats.memory_remaining_bytes;
  if (st.best_remaining_bytes < 0 || remaining < st.best_remaining_bytes) {
    st.best_remaining_bytes = remaining;
    st.stalled = 0;
  } else if (in.stats.iteration >= 2) {
    ++st.stalled;  // the first pass always goes down; later ones must keep making new lows
  }
  // Dirtying faster than we send: pages/s × 4 KiB against the limit.
  const double dirty_mib_s = static_cast<double>(in.stats.dirty_rate_pages_s) * 4096.0 / (1024.0 * 1024.0);
  const bool outpaced = in.stats.iteration >= 2 && in.bandwidth_mib_s > 0 && dirty_mib_s >= in.bandwidth_mib_s;
  const bool stalled = st.stalled >= p.stall_checks || outpaced;
  const bool late = in.elapsed_s >= st.deadline_s;
  if (st.postcopy_started) {
    // Post-copy always finishes (or loses the guest); nothing is left to escalate.
    return {Action::kContinue, 0, ""};
  }
  if (!stalled && !late) return {Action::kContinue, 0, ""};

  char why[160];
  if (late) {
    std::snprintf(why, sizeof why, "past its deadline of %.0f s", st.deadline_s);
  } else if (outpaced) {
    std::snprintf(why, sizeof why, "dirtying %.0f MiB/s against a %.0f MiB/s limit", dirty_mib_s, in.bandwidth_mib_s);
  } else {
    std::snprintf(why, sizeof why, "no progress for %d checks (%lld MiB left)", st.stalled,
                  static_cast<long long>(remaining >> 20));
  }
  // Each escalation gets a fresh stall count and deadline.
  auto next_stage = [&] {
    st.stalled = 0;
    st.best_remaining_bytes = -1;
    st.deadline_s = in.elapsed_s + DeadlineSeconds(p, in.memory_mib);
  };
  if (!st.bandwidth_raised && in.bandwidth_mib_s > 0 && in.bandwidth_mib_s < p.max_bandwidth_mib_s) {
    st.bandwidth_raised = true;
    next_stage();
    return {Action::kRaiseBandwidth, p.max_bandwidth_mib_s, why};
  }
  st.bandwidth_raised = true;
  if (p.allow_auto_converge && !st.auto_converge) {
    st.auto_converge = true;
    next_stage();
    return {Action::kRestartWithAutoConverge, 0, why};
  }
  if (p.allow_postcopy && in.postcopy_armed) {
    st.postcopy_started = true;
    return {Action::kStartPostCopy, 0, why};
  }
  return {Action::kAbort, 0, std::string("does not converge: ") + why};
}

// ---------------------------------------------------------------------------------------------

std::string_view RecoveryName(Recovery r) {
  switch (r) {
    case Recovery::kWait:
      return "wait";
    case Recovery::kRollBack:
      return "roll_back";
    case Recovery::kFinishOnSource:
      return "finish_on_source";
    case Recovery::kConfirm:
      return "confirm";
    case Recovery::kFinishOnDestination:
      return "finish_on_destination";
    case Recovery::kLost:
      return "lost";
  }
  return "unknown";
}

Recovery Reconcile(Phase phase, const Observation& o) {
  using P = Presence;
  if (o.job_active) return Recovery::kWait;  // libvirt is still at it: keep monitoring
  const bool src = o.source == P::kRunning || o.source == P::kPaused;
  const bool dst = o.destination == P::kRunning || o.destination == P::kPaused;
  if (PastSwitchOver(phase)) {
    // The destination owns the guest; a source copy is a leftover.
    if (dst) return src ? Recovery::kConfirm : Recovery::kFinishOnDestination;
    if (o.destination == P::kUnknown) return Recovery::kWait;
    return src ? Recovery::kRollBack : Recovery::kLost;
  }
  switch (o.source) {
    case P::kRunning:
      // No job and the source runs: the migration failed or never began. A copy on the
      // destination is a leftover; an unreachable destination is cleaned when it returns.
      return dst ? Recovery::kRollBack : Recovery::kFinishOnSource;
    case P::kPaused:
      // Paused for switch-over: the destination either resumed it or never will.
      if (o.destination == P::kRunning) return Recovery::kConfirm;
      if (o.destination == P::kUnknown) return Recovery::kWait;
      return Recovery::kRollBack;
    case P::kAbsent:
      // libvirt undefined the source: it finished on the destination.
      if (dst) return Recovery::kFinishOnDestination;
      return o.destination == P::kUnknown ? Recovery::kWait : Recovery::kLost;
    case P::kUnknown:
      return o.destination == P::kRunning ? Recovery::kFinishOnDestination : Recovery::kWait;
  }
  return Recovery::kWait;
}

}  // namespace uw::migration
