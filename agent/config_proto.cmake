# The agent's configuration schema (agent/config.proto) compiled to C++.
# Included from agent/CMakeLists.txt; stoke_agent links stoke_agent_config_proto.
# Sources include "agent/config.pb.h", next to "agent/config.h".
#
# Why protoc is run here directly instead of through protobuf_generate (as
# api/ does): CMake 3.25's protobuf_generate always passes the including
# directory (agent/) as the first -I, so protoc would register the schema in
# the descriptor pool as plain "config.proto". That name is global to the
# process: a second "config.proto" anywhere in a binary aborts it at start-up
# ("File already exists in database"). With the repo root as the only import
# dir the name is "agent/config.proto", unique by construction, and the
# generated header path matches the include path we want.
find_package(Protobuf REQUIRED)

set(STOKE_AGENT_CONFIG_GEN_DIR ${CMAKE_CURRENT_BINARY_DIR}/gen)
set(STOKE_AGENT_CONFIG_PROTO ${CMAKE_CURRENT_LIST_DIR}/config.proto)
set(STOKE_AGENT_CONFIG_PB_H ${STOKE_AGENT_CONFIG_GEN_DIR}/agent/config.pb.h)
set(STOKE_AGENT_CONFIG_PB_CC ${STOKE_AGENT_CONFIG_GEN_DIR}/agent/config.pb.cc)
file(MAKE_DIRECTORY ${STOKE_AGENT_CONFIG_GEN_DIR})

add_custom_command(
  OUTPUT ${STOKE_AGENT_CONFIG_PB_H} ${STOKE_AGENT_CONFIG_PB_CC}
  COMMAND protobuf::protoc --cpp_out=${STOKE_AGENT_CONFIG_GEN_DIR}
          -I ${PROJECT_SOURCE_DIR} ${STOKE_AGENT_CONFIG_PROTO}
  DEPENDS ${STOKE_AGENT_CONFIG_PROTO} protobuf::protoc
  COMMENT "Running C++ protocol buffer compiler on agent/config.proto"
  VERBATIM)

add_library(stoke_agent_config_proto STATIC ${STOKE_AGENT_CONFIG_PB_CC} ${STOKE_AGENT_CONFIG_PB_H})
target_include_directories(stoke_agent_config_proto PUBLIC ${STOKE_AGENT_CONFIG_GEN_DIR})
target_link_libraries(stoke_agent_config_proto PUBLIC protobuf::libprotobuf)
# Generated code is not ours to warn about.
target_compile_options(stoke_agent_config_proto PRIVATE -w)
