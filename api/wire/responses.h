// Building the API's error responses, the same way in every handler.
#pragma once

#include <cstdint>
#include <string>

#include "proto/stoke/v1/api.pb.h"

namespace stoke::wire {

inline v1::Response error_response(uint64_t id, v1::Error::Code code, const std::string& message) {
  v1::Response r;
  r.set_id(id);
  r.mutable_error()->set_code(code);
  r.mutable_error()->set_message(message);
  return r;
}

}  // namespace stoke::wire
