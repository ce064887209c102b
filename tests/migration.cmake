# Live migration under load on the namespace test bed (fixture `testbed`): a busy, memory-writing
# guest moved 20 times between two hosts. tests/testbed.cmake is included after this file, so the
# fixture is required unconditionally (as in tests/manager.cmake).
if(TARGET uw-agent)
  uw_test(NAME migration_stress_test
    SRCS migration_stress_test.cc
    DEPS uw_testbed_client
    LABELS integration
    TIMEOUT 1200)
  set_tests_properties(migration_stress_test PROPERTIES FIXTURES_REQUIRED testbed RESOURCE_LOCK testbed)
endif()
