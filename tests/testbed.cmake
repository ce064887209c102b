# The namespace test bed as a ctest fixture (see docs/testbed.md), with its Ceph on 10.77.0.254 for
# guests with rbd disks (bluestore, ~4 s more than memstore: its OSD can be killed and restarted with
# its data, which tests/storage_testbed_test.cc does under a running guest).
#
# An integration test that needs hosts says:
#   set_tests_properties(my_test PROPERTIES FIXTURES_REQUIRED testbed LABELS integration)
# and reads $UW_TESTBED_DIR/testbed.json. ctest then runs `testbed_up` once before the first such
# test and `testbed_down` after the last one. UW_TESTBED_DIR is added to the environment of every
# test in tests/ that requires the fixture (a deferred call at the end of this directory), so tests
# need not set it themselves.
#
# Only one test bed can be up on a machine (bridge and namespace names are machine-wide): if one is
# already up in another directory, testbed_up fails and says how to stop it.

set(UW_TESTBED_DIR "/var/tmp/uw-testbed-ctest" CACHE PATH
    "State directory of the test bed that ctest starts (fixture `testbed`)")

set(uw_testbed_script ${PROJECT_SOURCE_DIR}/scripts/testbed)
set(uw_testbed_up_args up 2 --ceph bluestore)
# vmm/ is configured before tests/, so the agent target exists here when it is built at all.
if(TARGET uw-agent)
  list(APPEND uw_testbed_up_args --agent $<TARGET_FILE:uw-agent>)
endif()

add_test(NAME testbed_up COMMAND ${uw_testbed_script} ${uw_testbed_up_args})
set_tests_properties(testbed_up PROPERTIES
  FIXTURES_SETUP testbed
  LABELS integration
  ENVIRONMENT "UW_TESTBED_DIR=${UW_TESTBED_DIR}"
  TIMEOUT 300)

add_test(NAME testbed_down COMMAND ${uw_testbed_script} down)
set_tests_properties(testbed_down PROPERTIES
  FIXTURES_CLEANUP testbed
  LABELS integration
  ENVIRONMENT "UW_TESTBED_DIR=${UW_TESTBED_DIR}"
  TIMEOUT 180)

add_test(NAME testbed_smoke COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/testbed_smoke.sh)
set_tests_properties(testbed_smoke PROPERTIES
  FIXTURES_REQUIRED testbed
  LABELS integration
  TIMEOUT 300)

# Host h2's BMC switches its power (ipmitool over LAN+); h2 is on and booted again at the end.
add_test(NAME testbed_bmc COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/testbed_bmc.sh)
set_tests_properties(testbed_bmc PROPERTIES
  FIXTURES_REQUIRED testbed
  RESOURCE_LOCK testbed
  LABELS integration
  TIMEOUT 120)

# At the end of this directory (after every tests/*.cmake): give each test here that requires the
# fixture the test bed's directory, unless it sets UW_TESTBED_DIR itself.
function(uw_testbed_export_dir)
  get_property(tests DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR} PROPERTY TESTS)
  foreach(t ${tests})
    get_property(fixtures TEST ${t} PROPERTY FIXTURES_REQUIRED)
    if(NOT "testbed" IN_LIST fixtures)
      continue()
    endif()
    get_property(env TEST ${t} PROPERTY ENVIRONMENT)
    if(NOT env MATCHES "(^|;)UW_TESTBED_DIR=")
      set_property(TEST ${t} APPEND PROPERTY ENVIRONMENT "UW_TESTBED_DIR=${UW_TESTBED_DIR}")
    endif()
  endforeach()
endfunction()
cmake_language(DEFER CALL uw_testbed_export_dir)
