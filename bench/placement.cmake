# Placement engine: DRS pass times, initial placement latency (p99), consolidation against the
# lower bound and first-fit decreasing, and balance quality against a slow annealing search.
# Figures are recorded in docs/placement-benchmarks.md.
uw_benchmark(NAME placement_benchmark
  SRCS placement_drs_benchmark.cc placement_place_benchmark.cc placement_consolidate_benchmark.cc
       placement_quality_benchmark.cc
  DEPS uw::placement uw::sim
  SHORT_ARGS --benchmark_min_time=0.01 --benchmark_format=json)

# uw-hbal: converts snapshots to Ganeti hbal's text format and back (used by bench/hbal-compare).
add_executable(uw-hbal hbal_tool.cc)
target_link_libraries(uw-hbal PRIVATE uw::placement uw::sim)
target_include_directories(uw-hbal PRIVATE ${PROJECT_SOURCE_DIR})
