uw_benchmark(NAME vmm_benchmark SRCS ${CMAKE_CURRENT_SOURCE_DIR}/vmm_benchmark.cc DEPS uw::vmm
  SHORT_ARGS --benchmark_min_time=0.05 --benchmark_format=json)
