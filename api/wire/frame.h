// Framing of the agent API: every message on the socket is a 4-byte big-endian
// length followed by that many bytes of a serialized protobuf (docs/api.md).
//
// Two ways to read frames:
//  - FrameDecoder, for event loops (the agent): bytes go in as they arrive, in
//    chunks of any size, and complete frames come out.
//  - read_frame/write_frame, blocking, for simple clients (Client, tests).
//
// A frame of length 0 is valid: it is the empty serialization of a message,
// i.e. a Request or Response with every field at its default. The framing layer
// does not judge contents; whoever handles the message decides whether a
// Request without a body is acceptable (the agent answers INVALID_ARGUMENT).
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <google/protobuf/message_lite.h>

#include "api/wire/protocol.h"
#include "proto/stoke/v1/api.pb.h"
#include "sandbox/base/result.h"

namespace stoke::wire {

// What one FrameDecoder::feed call produced.
struct DecodedFrames {
  // Payloads (header removed) of every frame completed by this call, in
  // arrival order. Frames completed before a protocol error are still here:
  // they were well formed, so the caller may answer them before closing.
  std::vector<std::string> frames;
  // Set when the input violated the framing; the connection must be closed.
  std::optional<Error> error;

  bool ok() const { return !error.has_value(); }
};

// Incremental decoder of length-prefixed frames. Holds at most one incomplete
// frame; memory grows with the bytes actually received, never with the length
// a header merely announces.
class FrameDecoder {
 public:
  // `max_frame_bytes` is the largest payload accepted; a header announcing
  // more is a protocol error. It is capped at kMaxFrameBytes.
  explicit FrameDecoder(size_t max_frame_bytes = kMaxFrameBytes);

  // Consumes `bytes`. The first protocol error is reported once, with the
  // announced size; from then on the decoder is failed: it consumes nothing and
  // every later call returns an error saying input is refused, so a caller
  // that missed the first report cannot silently continue on a desynchronized
  // stream.
  DecodedFrames feed(std::string_view bytes);

  bool failed() const { return failed_; }
  // Bytes received that do not yet form a complete frame (header included).
  size_t buffered_bytes() const { return buffer_.size() - consumed_; }
  size_t max_frame_bytes() const { return max_frame_bytes_; }

 private:
  size_t max_frame_bytes_;
  // Received bytes; [0, consumed_) were already handed out and are dropped
  // lazily so a burst of small frames costs one compaction, not one per frame.
  std::string buffer_;
  size_t consumed_ = 0;
  bool failed_ = false;
};

// Header + serialized `message`. Fails if the message is larger than
// `max_frame_bytes` (capped at kMaxFrameBytes), which the peer would refuse.
Result<std::string> encode_frame(const google::protobuf::MessageLite& message,
                                 size_t max_frame_bytes = kMaxFrameBytes);

// The 4 header bytes for a payload of `length` bytes.
std::string encode_frame_header(uint32_t length);

// Parse a frame's payload. Bytes that are not a valid serialization (truncated
// varints, bad wire types, invalid UTF-8 in strings, ...) are an Error whose
// message says which message type was expected.
Result<stoke::v1::Request> parse_request(std::string_view payload);
Result<stoke::v1::Response> parse_response(std::string_view payload);

// Blocking: writes header and message completely, retrying short writes and
// EINTR (and waiting if the fd is non-blocking). On a socket, a peer that has
// gone away is an EPIPE error, not a SIGPIPE.
Status write_frame(int fd, const google::protobuf::MessageLite& message);

// Blocking: reads exactly one frame and returns its payload; reads nothing
// beyond it. End of stream before the first header byte is an Error whose
// detail is kConnectionClosed (an orderly end); anywhere later it is
// kConnectionClosedMidFrame. A header announcing more than `max_frame_bytes`
// is an Error and nothing after the header is read.
Result<std::string> read_frame(int fd, size_t max_frame_bytes = kMaxFrameBytes);

inline constexpr const char* kConnectionClosed = "connection closed";
inline constexpr const char* kConnectionClosedMidFrame = "connection closed mid-frame";

// True when `error` is read_frame's orderly end of stream (no partial frame).
bool is_connection_closed(const Error& error);

}  // namespace stoke::wire
