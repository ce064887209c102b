# Integration tests of uw-manager against the namespace test bed (fixture `testbed`).
if(TARGET uw-manager AND TARGET uw_vmm)
  uw_test(NAME manager_integration_test
    SRCS manager_integration_test.cc
    DEPS uw_testbed_client uw::vmm uw::api uw::common
    LABELS integration
    TIMEOUT 900)
  set_property(TEST manager_integration_test APPEND PROPERTY ENVIRONMENT
    "UW_MANAGER_BIN=$<TARGET_FILE:uw-manager>;UW_TESTBED_DIR=${UW_TESTBED_DIR}")
  if(TEST testbed_up)
    set_tests_properties(manager_integration_test PROPERTIES FIXTURES_REQUIRED testbed RESOURCE_LOCK testbed)
  endif()
  add_dependencies(manager_integration_test uw-manager)
endif()
