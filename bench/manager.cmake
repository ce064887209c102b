# Manager: GET /api/v1/guests with 10,000 guests over HTTP, and create-to-running latency through
# the REST API with a fake agent (in-process HTTP server playing uw-agent).
if(TARGET uw_manager)
  uw_benchmark(NAME manager_benchmark
    SRCS manager_benchmark.cc
    DEPS uw::manager uw::api
    SHORT_ARGS --benchmark_min_time=0.05)
endif()
