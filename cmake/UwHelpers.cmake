# Helpers that give every component the same shape (after abseil's AbseilHelpers.cmake).
#
#   uw_library(NAME name SRCS a.cc b.cc [DEPS uw::x ext] [PUBLIC_DEPS ...])
#       -> target uw_<name>, alias uw::<name>; the repository root is the include root, so others
#          include "name/name.h".
#   uw_test(NAME name SRCS a_test.cc [DEPS ...] [LABELS unit|integration] [TIMEOUT s])
#       -> gtest executable registered with ctest under the given labels (default: unit).
#   uw_benchmark(NAME name SRCS a_benchmark.cc [DEPS ...] [SHORT_ARGS --benchmark_min_time=0.01 ...])
#       -> Google Benchmark executable; with SHORT_ARGS also a ctest test labelled `bench`.
#   uw_binary(NAME name SRCS main.cc [DEPS ...])
#       -> a daemon or tool installed to bin/.

function(uw_library)
  cmake_parse_arguments(UW "" "NAME" "SRCS;DEPS;PUBLIC_DEPS" ${ARGN})
  add_library(uw_${UW_NAME} STATIC ${UW_SRCS})
  add_library(uw::${UW_NAME} ALIAS uw_${UW_NAME})
  target_include_directories(uw_${UW_NAME} PUBLIC ${PROJECT_SOURCE_DIR})
  target_link_libraries(uw_${UW_NAME} PUBLIC ${UW_PUBLIC_DEPS} PRIVATE ${UW_DEPS})
endfunction()

function(uw_test)
  cmake_parse_arguments(UW "" "NAME;TIMEOUT" "SRCS;DEPS;LABELS" ${ARGN})
  if(NOT UW_LABELS)
    set(UW_LABELS unit)
  endif()
  if(NOT UW_TIMEOUT)
    set(UW_TIMEOUT 120)
  endif()
  add_executable(${UW_NAME} ${UW_SRCS})
  target_link_libraries(${UW_NAME} PRIVATE ${UW_DEPS} GTest::gtest GTest::gmock GTest::gtest_main Threads::Threads)
  target_include_directories(${UW_NAME} PRIVATE ${PROJECT_SOURCE_DIR})
  add_test(NAME ${UW_NAME} COMMAND ${UW_NAME})
  set_tests_properties(${UW_NAME} PROPERTIES LABELS "${UW_LABELS}" TIMEOUT ${UW_TIMEOUT}
                       ENVIRONMENT "UW_SOURCE_DIR=${PROJECT_SOURCE_DIR};UW_BINARY_DIR=${PROJECT_BINARY_DIR}")
endfunction()

function(uw_benchmark)
  cmake_parse_arguments(UW "" "NAME;TIMEOUT" "SRCS;DEPS;SHORT_ARGS" ${ARGN})
  add_executable(${UW_NAME} ${UW_SRCS})
  target_link_libraries(${UW_NAME} PRIVATE ${UW_DEPS} benchmark::benchmark Threads::Threads)
  target_include_directories(${UW_NAME} PRIVATE ${PROJECT_SOURCE_DIR})
  # With SHORT_ARGS the benchmark also runs in CI's short mode as a ctest test labelled `bench`.
  if(UW_SHORT_ARGS)
    if(NOT UW_TIMEOUT)
      set(UW_TIMEOUT 600)
    endif()
    add_test(NAME ${UW_NAME} COMMAND ${UW_NAME} ${UW_SHORT_ARGS})
    set_tests_properties(${UW_NAME} PROPERTIES LABELS bench TIMEOUT ${UW_TIMEOUT}
                         ENVIRONMENT "UW_SOURCE_DIR=${PROJECT_SOURCE_DIR};UW_BINARY_DIR=${PROJECT_BINARY_DIR}")
  endif()
endfunction()

function(uw_binary)
  cmake_parse_arguments(UW "" "NAME" "SRCS;DEPS" ${ARGN})
  add_executable(${UW_NAME} ${UW_SRCS})
  target_link_libraries(${UW_NAME} PRIVATE ${UW_DEPS} Threads::Threads)
  target_include_directories(${UW_NAME} PRIVATE ${PROJECT_SOURCE_DIR})
  install(TARGETS ${UW_NAME} RUNTIME DESTINATION bin)
endfunction()
