# kv_add_test(name SOURCES a.cc b.cc LIBS x y LABELS unit [TIMEOUT s])
# One line per test binary; every TEST in it becomes its own ctest test (so ctest's
# summary counts real tests), labelled for selection: ctest -L unit|integration|gpu|slow.
include(GoogleTest)
function(kv_add_test name)
  cmake_parse_arguments(ARG "" "TIMEOUT" "SOURCES;LIBS;LABELS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE ${ARG_LIBS} GTest::gtest GTest::gmock GTest::gtest_main)
  target_include_directories(${name} PRIVATE ${PROJECT_SOURCE_DIR})
  # Where tests find the binaries they start and the files they read.
  target_compile_definitions(${name} PRIVATE KVW_BIN_DIR="${PROJECT_BINARY_DIR}/bin"
                                             KVW_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 120)
  endif()
  gtest_discover_tests(${name}
    EXTRA_ARGS --gtest_color=no
    DISCOVERY_MODE PRE_TEST
    PROPERTIES LABELS "${ARG_LABELS}" TIMEOUT ${ARG_TIMEOUT})
endfunction()
