# The storage backends against real services: the RBD backend against a throwaway Ceph (fixture
# `ceph`, tests/ceph.cmake; its fault test starts its own bluestore cluster with scripts/ceph).
uw_test(NAME storage_rbd_test
  SRCS storage_rbd_test.cc
  DEPS uw::storage uw::common
  LABELS integration
  TIMEOUT 300)
set_tests_properties(storage_rbd_test PROPERTIES FIXTURES_REQUIRED ceph RESOURCE_LOCK ceph)

# The manager's storage catalogue on that Ceph, with in-memory agents.
uw_test(NAME manager_storage_test
  SRCS manager_storage_test.cc
  DEPS uw::manager uw::manager_testing uw::storage uw::common
  LABELS integration
  TIMEOUT 300)
set_tests_properties(manager_storage_test PROPERTIES FIXTURES_REQUIRED ceph RESOURCE_LOCK ceph)

# Guests on RBD volumes on the namespace test bed (fixture `testbed`, which runs `up --ceph`).
if(TARGET uw-agent)
  uw_test(NAME storage_testbed_test
    SRCS storage_testbed_test.cc
    DEPS uw_testbed_client uw::storage uw::common
    LABELS integration
    TIMEOUT 600)
  set_tests_properties(storage_testbed_test PROPERTIES FIXTURES_REQUIRED testbed RESOURCE_LOCK testbed)
endif()
