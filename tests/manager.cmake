# Integration tests of uw-manager against the namespace test bed (fixture `testbed`).
if(TARGET uw-manager AND TARGET uw_vmm)
  uw_test(NAME manager_integration_test
    SRCS manager_integration_test.cc lease_integration_test.cc power_integration_test.cc ha_integration_test.cc
      metering_integration_test.cc local_disk_integration_test.cc network_integration_test.cc
    DEPS uw_testbed_client uw::vmm uw::storage uw::api uw::common
    LABELS integration
    TIMEOUT 900)
  set_property(TEST manager_integration_test APPEND PROPERTY ENVIRONMENT
    "UW_MANAGER_BIN=$<TARGET_FILE:uw-manager>" "UW_AGENT_BIN=$<TARGET_FILE:uw-agent>"
    "UW_SOURCE_DIR=${CMAKE_SOURCE_DIR}")
  # tests/testbed.cmake (the fixture and the UW_TESTBED_DIR cache variable) is included after this
  # file: the fixture is required unconditionally, and UW_TESTBED_DIR comes from its deferred export
  # (${UW_TESTBED_DIR} is empty here on a first configure).
  set_tests_properties(manager_integration_test PROPERTIES FIXTURES_REQUIRED testbed RESOURCE_LOCK testbed)
  add_dependencies(manager_integration_test uw-manager)
  # The metering suite (two tenants' minutes against libvirt's counters, ~7 min) runs as a test of
  # its own, so that each entry's TIMEOUT bounds one group of tests rather than the whole binary,
  # which together came within a minute of 900 s.
  set_property(TEST manager_integration_test APPEND PROPERTY ENVIRONMENT "GTEST_FILTER=-MeteringIntegration.*")
  add_test(NAME metering_integration_test COMMAND manager_integration_test --gtest_filter=MeteringIntegration.*)
  set_tests_properties(metering_integration_test PROPERTIES
    LABELS integration TIMEOUT 900 FIXTURES_REQUIRED testbed RESOURCE_LOCK testbed
    ENVIRONMENT "UW_MANAGER_BIN=$<TARGET_FILE:uw-manager>;UW_AGENT_BIN=$<TARGET_FILE:uw-agent>;UW_SOURCE_DIR=${CMAKE_SOURCE_DIR};UW_BINARY_DIR=${CMAKE_BINARY_DIR}")
endif()

# The crash test needs no test bed: fake agents run in the test process, uw-manager as a child.
if(TARGET uw-manager)
  uw_test(NAME manager_crash_test
    SRCS manager_crash_test.cc
    DEPS uw_testbed_client uw::api uw::common
    LABELS integration
    TIMEOUT 300)
  target_include_directories(manager_crash_test PRIVATE ${PROJECT_SOURCE_DIR})
  set_property(TEST manager_crash_test APPEND PROPERTY ENVIRONMENT "UW_MANAGER_BIN=$<TARGET_FILE:uw-manager>")
  add_dependencies(manager_crash_test uw-manager)
endif()

# The API against hostile and heavy use: uw-manager and two uw-agents on libvirt's test driver
# (no test bed), all three as child processes.
if(TARGET uw-manager AND TARGET uw-agent)
  uw_test(NAME hostile_input_test
    SRCS hostile_input_test.cc
    DEPS uw_testbed_client uw::api uw::common
    LABELS integration
    TIMEOUT 300)
  set_property(TEST hostile_input_test APPEND PROPERTY ENVIRONMENT
    "UW_MANAGER_BIN=$<TARGET_FILE:uw-manager>" "UW_AGENT_BIN=$<TARGET_FILE:uw-agent>")
  add_dependencies(hostile_input_test uw-manager uw-agent)
endif()
