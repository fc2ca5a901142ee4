// libFuzzer target for the wire framing and message parsing (scripts/fuzz).
//
// Input layout: byte 0 chooses how the rest is cut into feed() calls; bytes
// 1.. are the stream as it would arrive on the socket. Keeping the chunking in
// one leading byte lets seeds be real frames with a single byte in front.
//
// Checked, beyond "no crash, no sanitizer report":
//  - chunked decoding gives exactly the frames and verdict of one-shot decoding;
//  - after a protocol error the decoder refuses input and yields nothing;
//  - every frame that parses as a Request or Response re-encodes to a frame
//    that decodes to one frame which re-parses to an equal message
//    (same canonical serialization, unknown fields included).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <google/protobuf/stubs/logging.h>

#include "api/wire/frame.h"

namespace {

using stoke::wire::DecodedFrames;
using stoke::wire::FrameDecoder;

// A violated invariant must be a crash libFuzzer records.
#define FUZZ_CHECK(condition) \
  do {                        \
    if (!(condition)) __builtin_trap(); \
  } while (0)

// Deterministic chunk sizes from the leading byte (xorshift32).
class ChunkSizes {
 public:
  explicit ChunkSizes(uint8_t control) : state_(0x9e3779b9u ^ (uint32_t{control} * 0x01000193u)),
                                         small_(control & 0x80) {}
  size_t next() {
    state_ ^= state_ << 13;
    state_ ^= state_ >> 17;
    state_ ^= state_ << 5;
    // Small chunks stress headers split across feeds; large ones many frames per feed.
    return small_ ? state_ % 9 : state_ % 4097;  // 0 is allowed: an empty read
  }

 private:
  uint32_t state_;
  bool small_;
};

// Serialization with map entries sorted, so equal messages give equal bytes.
// Compared as bytes rather than with MessageDifferencer, which calls NaN
// unequal to itself, and a double field may well hold a NaN.
std::string canonical_bytes(const google::protobuf::MessageLite& message) {
  std::string bytes;
  {
    google::protobuf::io::StringOutputStream stream(&bytes);
    google::protobuf::io::CodedOutputStream coded(&stream);
    coded.SetSerializationDeterministic(true);
    FUZZ_CHECK(message.SerializeToCodedStream(&coded));
  }
  return bytes;
}

template <typename Parse>
void check_round_trip(std::string_view payload, Parse parse) {
  auto parsed = parse(payload);
  if (!parsed.ok()) return;
  auto frame = stoke::wire::encode_frame(*parsed);
  FUZZ_CHECK(frame.ok());

  FrameDecoder decoder;
  DecodedFrames again = decoder.feed(*frame);
  FUZZ_CHECK(again.ok());
  FUZZ_CHECK(again.frames.size() == 1);
  FUZZ_CHECK(decoder.buffered_bytes() == 0);

  auto reparsed = parse(again.frames[0]);
  FUZZ_CHECK(reparsed.ok());
  FUZZ_CHECK(canonical_bytes(*parsed) == canonical_bytes(*reparsed));
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // Invalid UTF-8 in string fields is logged by protobuf on every parse; the
  // verdict is what we test, the log is noise that slows the fuzzer down.
  google::protobuf::SetLogHandler(nullptr);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  ChunkSizes chunks(data[0]);
  const std::string_view stream(reinterpret_cast<const char*>(data + 1), size - 1);

  FrameDecoder chunked;
  std::vector<std::string> frames;
  bool failed = false;
  size_t at = 0;
  while (at < stream.size()) {
    const size_t length = std::min(chunks.next(), stream.size() - at);
    DecodedFrames out = chunked.feed(stream.substr(at, length));
    at += length;
    if (failed) {
      FUZZ_CHECK(!out.ok() && out.frames.empty());
      continue;
    }
    for (auto& frame : out.frames) frames.push_back(std::move(frame));
    if (!out.ok()) {
      failed = true;
      FUZZ_CHECK(chunked.failed() && chunked.buffered_bytes() == 0);
    }
  }

  FrameDecoder whole;
  DecodedFrames at_once = whole.feed(stream);
  FUZZ_CHECK(at_once.frames == frames);
  FUZZ_CHECK(at_once.ok() != failed);
  if (!failed) FUZZ_CHECK(whole.buffered_bytes() == chunked.buffered_bytes());

  size_t framed_bytes = 0;
  for (const std::string& frame : frames) {
    framed_bytes += stoke::wire::kFrameHeaderBytes + frame.size();
    check_round_trip(frame, stoke::wire::parse_request);
    check_round_trip(frame, stoke::wire::parse_response);
  }
  FUZZ_CHECK(framed_bytes <= stream.size());
  if (!failed) FUZZ_CHECK(framed_bytes + chunked.buffered_bytes() == stream.size());
  return 0;
}
