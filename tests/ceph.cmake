# A throwaway single-node Ceph as a ctest fixture (scripts/ceph; see docs/testbed.md, section Ceph).
#
# A test that needs Ceph says:
#   set_tests_properties(my_test PROPERTIES FIXTURES_REQUIRED ceph LABELS integration)
# and reads $UW_CEPH_DIR/ceph.json (conf, mon_host, pool, the admin and client.uw users and keys).
# ctest runs `ceph_up` once before the first such test and `ceph_down` after the last one.
# UW_CEPH_DIR is added to the environment of every test in tests/ that requires the fixture (a
# deferred call at the end of this directory), so tests need not set it themselves.
#
# memstore on 127.0.0.1, monitor ports 16889 (msgr v1) and 16890 (v2), OSD ports 16900-16949: not
# the test bed's Ceph (`scripts/testbed up --ceph`: 10.77.0.254, 16789/16790, 16800-16849), so
# both can be up at once. memstore loses its data when the OSD stops: tests that kill and restart
# the OSD (`scripts/ceph kill-osd`/`start-osd`) need a bluestore cluster of their own.

set(UW_CEPH_DIR "/var/tmp/uw-ceph-ctest" CACHE PATH
    "State directory of the Ceph that ctest starts (fixture `ceph`)")

set(uw_ceph_script ${PROJECT_SOURCE_DIR}/scripts/ceph)

add_test(NAME ceph_up COMMAND ${uw_ceph_script} up ${UW_CEPH_DIR}
         --addr 127.0.0.1 --store memstore --mon-port 16889)
set_tests_properties(ceph_up PROPERTIES
  FIXTURES_SETUP ceph
  LABELS integration
  TIMEOUT 120)

add_test(NAME ceph_down COMMAND ${uw_ceph_script} down ${UW_CEPH_DIR})
set_tests_properties(ceph_down PROPERTIES
  FIXTURES_CLEANUP ceph
  LABELS integration
  TIMEOUT 60)

# At the end of this directory (after every tests/*.cmake): give each test here that requires the
# fixture the Ceph's directory, unless it sets UW_CEPH_DIR itself.
function(uw_ceph_export_dir)
  get_property(tests DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR} PROPERTY TESTS)
  foreach(t ${tests})
    get_property(fixtures TEST ${t} PROPERTY FIXTURES_REQUIRED)
    if(NOT "ceph" IN_LIST fixtures)
      continue()
    endif()
    get_property(env TEST ${t} PROPERTY ENVIRONMENT)
    if(NOT env MATCHES "(^|;)UW_CEPH_DIR=")
      set_property(TEST ${t} APPEND PROPERTY ENVIRONMENT "UW_CEPH_DIR=${UW_CEPH_DIR}")
    endif()
  endforeach()
endfunction()
cmake_language(DEFER CALL uw_ceph_export_dir)
