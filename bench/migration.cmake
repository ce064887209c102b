# Migration: ordering a plan's moves into a safe schedule under concurrency caps (1,000 moves).
# Figures are recorded in docs/migration.md.
uw_benchmark(NAME migration_benchmark
  SRCS migration_order_benchmark.cc
  DEPS uw::migration uw::placement uw::sim
  SHORT_ARGS --benchmark_min_time=0.01 --benchmark_format=json)
