#include "common/log.h"

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>

namespace uw {

Status InitLogging(std::string_view program, std::string_view level, std::string_view file) {
  auto lvl = spdlog::level::from_str(std::string(level));
  if (lvl == spdlog::level::off && level != "off") {
    return InvalidArgumentError("log level '" + std::string(level) +
                                "' is not one of trace, debug, info, warn, error, off");
  }
  std::shared_ptr<spdlog::logger> logger;
  try {
    if (file.empty()) {
      logger = spdlog::stderr_color_mt(std::string(program));
    } else {
      logger = spdlog::basic_logger_mt(std::string(program), std::string(file));
    }
  } catch (const spdlog::spdlog_ex& e) {
    return UnavailableError(std::string("cannot open log: ") + e.what());
  }
  logger->set_level(lvl);
  logger->flush_on(spdlog::level::info);
  spdlog::set_default_logger(logger);
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ [%n] %v");
  return Status::Ok();
}

}  // namespace uw
