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

# Fuzzing (issue 12). With -DUW_FUZZ=ON and clang the whole build is instrumented for libFuzzer
# (coverage + ASan + UBSan) so that fuzzers link the component libraries as they are.
#   uw_fuzzer(NAME name SRCS a_fuzzer.cc [DEPS ...] [CORPUS dir] [DICT file] [ARGS -max_len=N ...])
#       -> libFuzzer executable, only when UW_FUZZ is on; two ctest tests:
#          `name` (label `fuzz`) runs every corpus input once (a regression test);
#          `name_timed` (label `fuzz-timed`) fuzzes for UW_FUZZ_SECONDS, writing new inputs to
#          <build>/fuzz/name/corpus and a crash to <build>/fuzz/name/crash-<sha1>.
option(UW_FUZZ "Build libFuzzer targets (needs clang: CMAKE_CXX_COMPILER=clang++)" OFF)
set(UW_FUZZ_SECONDS 40 CACHE STRING "How long each fuzzer runs in its `fuzz-timed` ctest")
if(UW_FUZZ)
  if(NOT CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
    message(FATAL_ERROR "UW_FUZZ=ON needs clang: -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_C_COMPILER=clang")
  endif()
  add_compile_options(-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined
                      -fno-omit-frame-pointer)
  add_link_options(-fsanitize=address,undefined)
endif()

function(uw_fuzzer)
  if(NOT UW_FUZZ)
    return()
  endif()
  cmake_parse_arguments(UW "" "NAME;CORPUS;DICT" "SRCS;DEPS;ARGS" ${ARGN})
  add_executable(${UW_NAME} ${UW_SRCS})
  target_link_libraries(${UW_NAME} PRIVATE ${UW_DEPS} Threads::Threads)
  target_include_directories(${UW_NAME} PRIVATE ${PROJECT_SOURCE_DIR})
  target_link_options(${UW_NAME} PRIVATE -fsanitize=fuzzer)
  set(work ${PROJECT_BINARY_DIR}/fuzz/${UW_NAME})
  # A crash is written to ${work}/crash-<sha1>; libFuzzer prints that path ("Test unit written to").
  set(args ${UW_ARGS} -timeout=10 -artifact_prefix=${work}/)
  if(UW_DICT)
    list(APPEND args -dict=${CMAKE_CURRENT_SOURCE_DIR}/${UW_DICT})
  endif()
  set(corpus ${CMAKE_CURRENT_SOURCE_DIR}/${UW_CORPUS})
  add_test(NAME ${UW_NAME} COMMAND ${UW_NAME} ${args} -runs=0 ${corpus})
  add_test(NAME ${UW_NAME}_timed
           COMMAND ${UW_NAME} ${args} -max_total_time=${UW_FUZZ_SECONDS} -print_final_stats=1
                   ${work}/corpus ${corpus})
  math(EXPR timed_timeout "${UW_FUZZ_SECONDS} + 120")
  set_tests_properties(${UW_NAME} PROPERTIES LABELS fuzz TIMEOUT 300)
  set_tests_properties(${UW_NAME}_timed PROPERTIES LABELS fuzz-timed TIMEOUT ${timed_timeout})
  file(MAKE_DIRECTORY ${work}/corpus)
endfunction()
