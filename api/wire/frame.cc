#include "api/wire/frame.h"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>

namespace stoke::wire {
namespace {

uint32_t decode_length(const char* header) {
  const auto* b = reinterpret_cast<const unsigned char*>(header);
  return (uint32_t{b[0]} << 24) | (uint32_t{b[1]} << 16) | (uint32_t{b[2]} << 8) | uint32_t{b[3]};
}

std::string too_large(size_t length, size_t limit) {
  return "frame of " + std::to_string(length) + " bytes exceeds the limit of " +
         std::to_string(limit) + " bytes";
}

// Waits until `fd` is ready for `events`; used only when a blocking helper was
// handed a non-blocking fd (EAGAIN), so the helpers work on either kind.
Status wait_ready(int fd, short events, const char* step) {
  pollfd p{fd, events, 0};
  while (::poll(&p, 1, -1) < 0) {
    if (errno != EINTR) return sys_error(std::string(step) + ": poll");
  }
  return {};
}

// Writes all of `data`. send(MSG_NOSIGNAL) on sockets so that a vanished peer
// is an EPIPE error rather than a process-killing SIGPIPE; write() otherwise.
Status write_all(int fd, std::string_view data) {
  bool is_socket = true;
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = is_socket ? ::send(fd, data.data() + done, data.size() - done, MSG_NOSIGNAL)
                          : ::write(fd, data.data() + done, data.size() - done);
    if (n >= 0) {
      done += static_cast<size_t>(n);
      continue;
    }
    if (errno == EINTR) continue;
    if (errno == ENOTSOCK && is_socket) {
      is_socket = false;
      continue;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      STOKE_TRY(wait_ready(fd, POLLOUT, "write frame"));
      continue;
    }
    return sys_error("write frame");
  }
  return {};
}

// Reads exactly `size` bytes into `out` (appending). Returns how many bytes
// were read before end of stream, which is < size only at EOF.
Result<size_t> read_exact(int fd, std::string& out, size_t size) {
  // Grow the buffer with the data, not with the announced length: a header
  // claiming 64 MiB followed by silence must not cost 64 MiB.
  constexpr size_t kGrowStep = 1u << 20;
  size_t done = 0;
  while (done < size) {
    size_t chunk = std::min(size - done, kGrowStep);
    size_t old = out.size();
    out.resize(old + chunk);
    ssize_t n = ::read(fd, out.data() + old, chunk);
    if (n < 0) {
      out.resize(old);
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        STOKE_TRY(wait_ready(fd, POLLIN, "read frame"));
        continue;
      }
      return sys_error("read frame");
    }
    out.resize(old + static_cast<size_t>(n));
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  return done;
}

template <typename Message>
Result<Message> parse_as(std::string_view payload, const char* type_name) {
  Message message;
  if (payload.size() > static_cast<size_t>(INT_MAX)) {
    return plain_error(std::string("parse ") + type_name, too_large(payload.size(), INT_MAX));
  }
  if (!message.ParseFromArray(payload.data(), static_cast<int>(payload.size()))) {
    return plain_error(std::string("parse ") + type_name,
                       "malformed message (" + std::to_string(payload.size()) +
                           " bytes are not a valid serialized " + type_name + ")");
  }
  return message;
}

}  // namespace

FrameDecoder::FrameDecoder(size_t max_frame_bytes)
    : max_frame_bytes_(std::min(max_frame_bytes, kMaxFrameBytes)) {}

DecodedFrames FrameDecoder::feed(std::string_view bytes) {
  DecodedFrames out;
  if (failed_) {
    out.error = plain_error("decode frame", "input refused after an earlier protocol error");
    return out;
  }
  // Drop handed-out bytes before appending, once they are the larger part, so
  // the buffer stays proportional to the incomplete frame.
  if (consumed_ > 0 && consumed_ >= buffer_.size() / 2) {
    buffer_.erase(0, consumed_);
    consumed_ = 0;
  }
  buffer_.append(bytes);

  while (buffer_.size() - consumed_ >= kFrameHeaderBytes) {
    size_t length = decode_length(buffer_.data() + consumed_);
    if (length > max_frame_bytes_) {
      failed_ = true;
      // Nothing after a bad header can be trusted; free it now.
      buffer_.clear();
      buffer_.shrink_to_fit();
      consumed_ = 0;
      out.error = plain_error("decode frame", too_large(length, max_frame_bytes_));
      return out;
    }
    if (buffer_.size() - consumed_ - kFrameHeaderBytes < length) break;
    out.frames.emplace_back(buffer_, consumed_ + kFrameHeaderBytes, length);
    consumed_ += kFrameHeaderBytes + length;
  }
  if (consumed_ == buffer_.size()) {
    buffer_.clear();
    consumed_ = 0;
  }
  return out;
}

std::string encode_frame_header(uint32_t length) {
  std::string header(kFrameHeaderBytes, '\0');
  header[0] = static_cast<char>((length >> 24) & 0xff);
  header[1] = static_cast<char>((length >> 16) & 0xff);
  header[2] = static_cast<char>((length >> 8) & 0xff);
  header[3] = static_cast<char>(length & 0xff);
  return header;
}

Result<std::string> encode_frame(const google::protobuf::MessageLite& message, size_t max_frame_bytes) {
  const size_t limit = std::min(max_frame_bytes, kMaxFrameBytes);
  const size_t size = message.ByteSizeLong();
  const std::string step = "encode " + message.GetTypeName();
  if (size > limit) return plain_error(step, too_large(size, limit));
  std::string frame = encode_frame_header(static_cast<uint32_t>(size));
  frame.resize(kFrameHeaderBytes + size);
  if (!message.SerializeToArray(frame.data() + kFrameHeaderBytes, static_cast<int>(size))) {
    return plain_error(step, "serialization failed (required fields missing?)");
  }
  return frame;
}

Result<stoke::v1::Request> parse_request(std::string_view payload) {
  return parse_as<stoke::v1::Request>(payload, "stoke.v1.Request");
}

Result<stoke::v1::Response> parse_response(std::string_view payload) {
  return parse_as<stoke::v1::Response>(payload, "stoke.v1.Response");
}

Status write_frame(int fd, const google::protobuf::MessageLite& message) {
  auto frame = encode_frame(message);
  if (!frame) return frame.error();
  return write_all(fd, *frame);
}

Result<std::string> read_frame(int fd, size_t max_frame_bytes) {
  const size_t limit = std::min(max_frame_bytes, kMaxFrameBytes);
  std::string header;
  auto got = read_exact(fd, header, kFrameHeaderBytes);
  if (!got) return got.error();
  if (*got == 0) return plain_error("read frame", kConnectionClosed);
  if (*got < kFrameHeaderBytes) return plain_error("read frame", kConnectionClosedMidFrame);

  const size_t length = decode_length(header.data());
  if (length > limit) return plain_error("read frame", too_large(length, limit));
  std::string payload;
  got = read_exact(fd, payload, length);
  if (!got) return got.error();
  if (*got < length) return plain_error("read frame", kConnectionClosedMidFrame);
  return payload;
}

bool is_connection_closed(const Error& error) {
  return error.err == 0 && error.step == "read frame" && error.detail == kConnectionClosed;
}

}  // namespace stoke::wire
