# Migration: ordering a plan's moves into a safe schedule under concurrency caps (1,000 moves).
# Figures are recorded in docs/migration.md.
uw_benchmark(NAME migration_benchmark
  SRCS migration_order_benchmark.cc
  DEPS uw::migration uw::placement uw::sim
  SHORT_ARGS --benchmark_min_time=0.01 --benchmark_format=json)

# Live moves of a busy, memory-writing guest on the namespace test bed (20 moves; needs the test
# bed, so it is not part of `ctest -L bench`: tests/migration_stress_test.cc runs the same moves
# in the integration label and prints the same figures).
if(TARGET uw_testbed_client)
  uw_benchmark(NAME migration_stress_benchmark
    SRCS migration_stress_benchmark.cc
    DEPS uw_testbed_client)
endif()
