# Integration tests of uw-agent on the namespace test bed (fixture `testbed`, tests/testbed.cmake).
add_library(uw_testbed_client STATIC ${CMAKE_CURRENT_SOURCE_DIR}/testbed_client.cc)
target_include_directories(uw_testbed_client PUBLIC ${PROJECT_SOURCE_DIR})
target_link_libraries(uw_testbed_client PUBLIC uw::api uw::common)

uw_test(NAME agent_integration_test
  SRCS agent_integration_test.cc
  DEPS uw_testbed_client uw::vmm
  LABELS integration
  TIMEOUT 900)
set_property(TEST agent_integration_test APPEND PROPERTY ENVIRONMENT
  "UW_AGENT_BIN=$<TARGET_FILE:uw-agent>")
if(TEST testbed_up)
  set_tests_properties(agent_integration_test PROPERTIES FIXTURES_REQUIRED testbed RESOURCE_LOCK testbed)
endif()
