# sandbox/image/image.proto compiled to C++, with the repo root as the only
# import dir so the schema registers as "sandbox/image/image.proto" (see
# agent/config_proto.cmake for why that matters).
find_package(Protobuf REQUIRED)
set(STOKE_IMAGE_GEN_DIR ${CMAKE_CURRENT_BINARY_DIR}/gen)
set(STOKE_IMAGE_PB_H ${STOKE_IMAGE_GEN_DIR}/sandbox/image/image.pb.h)
set(STOKE_IMAGE_PB_CC ${STOKE_IMAGE_GEN_DIR}/sandbox/image/image.pb.cc)
file(MAKE_DIRECTORY ${STOKE_IMAGE_GEN_DIR})
add_custom_command(
  OUTPUT ${STOKE_IMAGE_PB_H} ${STOKE_IMAGE_PB_CC}
  COMMAND protobuf::protoc --cpp_out=${STOKE_IMAGE_GEN_DIR} -I ${PROJECT_SOURCE_DIR}
          ${CMAKE_CURRENT_LIST_DIR}/image.proto
  DEPENDS ${CMAKE_CURRENT_LIST_DIR}/image.proto protobuf::protoc
  COMMENT "Running C++ protocol buffer compiler on sandbox/image/image.proto"
  VERBATIM)
add_library(stoke_image_proto STATIC ${STOKE_IMAGE_PB_CC} ${STOKE_IMAGE_PB_H})
target_include_directories(stoke_image_proto PUBLIC ${STOKE_IMAGE_GEN_DIR} ${Protobuf_INCLUDE_DIRS})
# Static, like stoke_api_proto: the stoke CLI links libprotobuf statically.
find_library(PROTOBUF_STATIC_LIB NAMES libprotobuf.a REQUIRED)
target_link_libraries(stoke_image_proto PUBLIC ${PROTOBUF_STATIC_LIB})
target_compile_options(stoke_image_proto PRIVATE -w)
