# Storage: a clone of a golden image on each backend (the rbd ones against ctest's Ceph fixture).
uw_benchmark(NAME storage_benchmark SRCS ${CMAKE_CURRENT_SOURCE_DIR}/storage_benchmark.cc DEPS uw::storage uw::common
  SHORT_ARGS --benchmark_min_time=0.05 --benchmark_format=json)
set_tests_properties(storage_benchmark PROPERTIES FIXTURES_REQUIRED ceph RESOURCE_LOCK ceph)
# tests/ (configured before bench/) defines the fixture and the UW_CEPH_DIR cache variable.
set_property(TEST storage_benchmark APPEND PROPERTY ENVIRONMENT "UW_CEPH_DIR=${UW_CEPH_DIR}")
