# kv_add_test(name SOURCES a.cc b.cc LIBS x y LABELS unit [TIMEOUT s])
# One line per test; labels select suites in ctest (-L unit|integration|gpu|slow).
function(kv_add_test name)
  cmake_parse_arguments(ARG "" "TIMEOUT" "SOURCES;LIBS;LABELS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE ${ARG_LIBS} GTest::gtest GTest::gmock GTest::gtest_main)
  target_include_directories(${name} PRIVATE ${PROJECT_SOURCE_DIR})
  add_test(NAME ${name} COMMAND ${name} --gtest_color=no)
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 120)
  endif()
  set_tests_properties(${name} PROPERTIES LABELS "${ARG_LABELS}" TIMEOUT ${ARG_TIMEOUT}
    ENVIRONMENT "KVW_BIN_DIR=${PROJECT_BINARY_DIR}/bin;KVW_SOURCE_DIR=${PROJECT_SOURCE_DIR}")
endfunction()
