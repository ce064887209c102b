# Manager: GET /api/v1/guests with 10,000 guests (whole and by pages of 100) and /api/v1/hosts with
# 1,000 hosts over HTTP and under wrk, and create-to-running latency through the REST API with a fake
# HTTP agent and with in-memory agents.
if(TARGET uw_manager)
  uw_benchmark(NAME manager_benchmark
    SRCS manager_benchmark.cc
    DEPS uw::manager uw::manager_testing uw::api
    SHORT_ARGS --benchmark_min_time=0.05)
endif()

# The listing routes against python3's http.server serving the same bytes, in one run (~20 s; wrk
# when installed). Also the event-stream capacity (open streams with /healthz < 10 ms, memory per
# stream) and the 1,000-host heartbeat simulation against a real uw-manager (not in CI's short run:
# it takes a minute and needs the uw-manager binary).
if(TARGET uw_manager)
  uw_benchmark(NAME manager_listing_benchmark
    SRCS manager_listing_benchmark.cc
    DEPS uw::manager uw::api
    SHORT_ARGS --benchmark_format=json)
endif()
if(TARGET uw_manager)
  uw_benchmark(NAME manager_events_benchmark
    SRCS manager_events_benchmark.cc
    DEPS uw::manager uw::api)
  uw_benchmark(NAME manager_heartbeat_simulation
    SRCS manager_heartbeat_simulation.cc
    DEPS uw::api uw::common)
endif()

# The lease loop's cost on in-memory agents: notice -> ack -> applied, and what a move's notice adds.
if(TARGET uw_manager)
  uw_benchmark(NAME lease_benchmark
    SRCS lease_benchmark.cc
    DEPS uw::manager uw::manager_testing
    SHORT_ARGS --benchmark_min_time=0.05)
endif()

# Metering and billing at scale: N guests x 30 days of hourly records (load, invoices for every
# tenant, the month as CSV, verify). CI's short mode runs N = 1,000; the figures are N = 10,000.
if(TARGET uw_manager)
  uw_benchmark(NAME billing_benchmark
    SRCS billing_benchmark.cc
    DEPS uw::manager
    SHORT_ARGS --benchmark_filter=/1000/ --benchmark_format=json)
endif()

# The network catalogue: ports filling a /16, networks of 100 tenants, the address search alone.
if(TARGET uw_manager)
  uw_benchmark(NAME network_benchmark
    SRCS network_benchmark.cc
    DEPS uw::manager uw::netvirt
    SHORT_ARGS --benchmark_filter=/1000$|/100$ --benchmark_format=json)
endif()
