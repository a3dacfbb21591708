// Log lines still get formatted (that code runs under the fuzzer too), but go nowhere.
#pragma once

#include <spdlog/sinks/null_sink.h>
#include <spdlog/spdlog.h>

#include <memory>

namespace ember::fuzz {

inline void quiet_logging() {
  auto logger =
      std::make_shared<spdlog::logger>("fuzz", std::make_shared<spdlog::sinks::null_sink_mt>());
  logger->set_level(spdlog::level::trace);
  spdlog::set_default_logger(logger);
}

}  // namespace ember::fuzz
