// Framing (FrameDecoder, encode/parse, blocking read/write) and the C++ Client
// against an in-test fake agent on a socketpair or a temporary Unix socket.
#include "api/wire/frame.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <google/protobuf/stubs/logging.h>
#include <gtest/gtest.h>

#include "api/wire/client.h"
#include "api/wire/protocol.h"
#include "tests/util/run_util.h"

namespace stoke::wire {
namespace {

using stoke::v1::Request;
using stoke::v1::Response;

Request sample_invoke(uint64_t id, const std::string& function = "hello") {
  Request request;
  request.set_id(id);
  request.mutable_invoke()->set_function(function);
  request.mutable_invoke()->set_params_json(R"({"name":"world","n":42})");
  return request;
}

std::string frame_of(const google::protobuf::MessageLite& message) {
  auto frame = encode_frame(message);
  EXPECT_TRUE(frame.ok()) << frame.error().message();
  return frame.ok() ? *frame : std::string();
}

std::string raw_header(uint32_t length) { return encode_frame_header(length); }

struct SocketPair {
  unique_fd client;
  unique_fd agent;
};

SocketPair make_socketpair() {
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) std::abort();
  return {unique_fd(fds[0]), unique_fd(fds[1])};
}

// ---- FrameDecoder ------------------------------------------------------------

TEST(FrameDecoder, RoundTripsOneFrame) {
  Request request = sample_invoke(7);
  FrameDecoder decoder;
  DecodedFrames out = decoder.feed(frame_of(request));
  ASSERT_TRUE(out.ok());
  ASSERT_EQ(out.frames.size(), 1u);
  auto parsed = parse_request(out.frames[0]);
  ASSERT_TRUE(parsed.ok()) << parsed.error().message();
  EXPECT_EQ(parsed->id(), 7u);
  EXPECT_EQ(parsed->invoke().function(), "hello");
  EXPECT_EQ(parsed->invoke().params_json(), request.invoke().params_json());
  EXPECT_EQ(decoder.buffered_bytes(), 0u);
}

TEST(FrameDecoder, HeaderIsBigEndianLength) {
  EXPECT_EQ(raw_header(0x01020304), std::string("\x01\x02\x03\x04", 4));
  Request request;
  request.set_id(1);  // serializes to 08 01
  EXPECT_EQ(frame_of(request), std::string("\x00\x00\x00\x02\x08\x01", 6));
}

TEST(FrameDecoder, FrameSplitAtEveryByteBoundary) {
  const std::string frame = frame_of(sample_invoke(3));
  for (size_t split = 0; split <= frame.size(); ++split) {
    FrameDecoder decoder;
    DecodedFrames first = decoder.feed(std::string_view(frame).substr(0, split));
    DecodedFrames second = decoder.feed(std::string_view(frame).substr(split));
    ASSERT_TRUE(first.ok() && second.ok()) << split;
    ASSERT_EQ(first.frames.size() + second.frames.size(), 1u) << "split at " << split;
    // The frame completes in the first feed only when the split is at the end.
    EXPECT_EQ(first.frames.size(), split == frame.size() ? 1u : 0u) << split;
    const std::string& payload = first.frames.empty() ? second.frames[0] : first.frames[0];
    EXPECT_EQ(payload, frame.substr(kFrameHeaderBytes)) << split;
    EXPECT_EQ(decoder.buffered_bytes(), 0u);
  }
}

TEST(FrameDecoder, OneByteAtATime) {
  const std::string stream = frame_of(sample_invoke(1)) + frame_of(sample_invoke(2, "other"));
  FrameDecoder decoder;
  std::vector<std::string> frames;
  for (char byte : stream) {
    DecodedFrames out = decoder.feed(std::string_view(&byte, 1));
    ASSERT_TRUE(out.ok());
    for (auto& f : out.frames) frames.push_back(std::move(f));
  }
  ASSERT_EQ(frames.size(), 2u);
  EXPECT_EQ(parse_request(frames[0])->id(), 1u);
  EXPECT_EQ(parse_request(frames[1])->invoke().function(), "other");
}

TEST(FrameDecoder, TwoFramesInOneFeed) {
  FrameDecoder decoder;
  DecodedFrames out = decoder.feed(frame_of(sample_invoke(1)) + frame_of(sample_invoke(2)));
  ASSERT_TRUE(out.ok());
  ASSERT_EQ(out.frames.size(), 2u);
  EXPECT_EQ(parse_request(out.frames[0])->id(), 1u);
  EXPECT_EQ(parse_request(out.frames[1])->id(), 2u);
}

TEST(FrameDecoder, ManyFramesInRandomChunks) {
  std::mt19937 random(12345);
  std::string stream;
  const int kFrames = 200;
  for (int i = 0; i < kFrames; ++i) {
    Request request = sample_invoke(static_cast<uint64_t>(i));
    request.mutable_invoke()->set_params_json(std::string(random() % 3000, 'x'));
    stream += frame_of(request);
  }
  FrameDecoder decoder;
  std::vector<std::string> frames;
  for (size_t at = 0; at < stream.size();) {
    size_t chunk = std::min<size_t>(stream.size() - at, 1 + random() % 5000);
    DecodedFrames out = decoder.feed(std::string_view(stream).substr(at, chunk));
    ASSERT_TRUE(out.ok());
    for (auto& f : out.frames) frames.push_back(std::move(f));
    at += chunk;
  }
  ASSERT_EQ(frames.size(), static_cast<size_t>(kFrames));
  for (int i = 0; i < kFrames; ++i) EXPECT_EQ(parse_request(frames[i])->id(), static_cast<uint64_t>(i));
}

TEST(FrameDecoder, OversizedLengthIsReportedOnceThenInputIsRefused) {
  FrameDecoder decoder;
  DecodedFrames out = decoder.feed(raw_header(0xffffffffu) + "trailing bytes");
  ASSERT_FALSE(out.ok());
  EXPECT_TRUE(out.frames.empty());
  EXPECT_NE(out.error->message().find("4294967295"), std::string::npos) << out.error->message();
  EXPECT_TRUE(decoder.failed());
  EXPECT_EQ(decoder.buffered_bytes(), 0u);

  // Even a perfectly good frame is refused now: the stream is desynchronized.
  DecodedFrames later = decoder.feed(frame_of(sample_invoke(1)));
  ASSERT_FALSE(later.ok());
  EXPECT_TRUE(later.frames.empty());
  EXPECT_NE(later.error->message().find("refused"), std::string::npos) << later.error->message();
}

TEST(FrameDecoder, LimitIsInclusiveAndAppliesToTheHeaderAlone) {
  FrameDecoder at_limit;
  // A header announcing exactly the limit is fine; the decoder just waits.
  EXPECT_TRUE(at_limit.feed(raw_header(static_cast<uint32_t>(kMaxFrameBytes))).ok());
  EXPECT_EQ(at_limit.buffered_bytes(), kFrameHeaderBytes);

  FrameDecoder over_limit;
  // The error comes from the header alone, before any payload arrives.
  EXPECT_FALSE(over_limit.feed(raw_header(static_cast<uint32_t>(kMaxFrameBytes + 1))).ok());
}

TEST(FrameDecoder, CallerGivenSmallerLimit) {
  FrameDecoder decoder(16);
  DecodedFrames ok = decoder.feed(raw_header(16) + std::string(16, 'a'));
  ASSERT_TRUE(ok.ok());
  ASSERT_EQ(ok.frames.size(), 1u);
  DecodedFrames too_big = decoder.feed(raw_header(17));
  ASSERT_FALSE(too_big.ok());
  EXPECT_NE(too_big.error->message().find("limit of 16 bytes"), std::string::npos);
  // A caller cannot raise the limit above the protocol's.
  EXPECT_EQ(FrameDecoder(SIZE_MAX).max_frame_bytes(), kMaxFrameBytes);
}

TEST(FrameDecoder, FramesBeforeABadHeaderAreStillDelivered) {
  FrameDecoder decoder(1024);
  DecodedFrames out = decoder.feed(frame_of(sample_invoke(1)) + frame_of(sample_invoke(2)) + raw_header(4096));
  ASSERT_FALSE(out.ok());
  ASSERT_EQ(out.frames.size(), 2u);
  EXPECT_EQ(parse_request(out.frames[1])->id(), 2u);
}

// Design decision: a zero-length frame is valid framing. It carries the empty
// serialization, i.e. a message with every field at its default; judging that
// (a Request without a body) is the handler's job, not the framing's.
TEST(FrameDecoder, ZeroLengthFrameIsAnEmptyMessage) {
  FrameDecoder decoder;
  DecodedFrames out = decoder.feed(raw_header(0) + raw_header(0));
  ASSERT_TRUE(out.ok());
  ASSERT_EQ(out.frames.size(), 2u);
  EXPECT_TRUE(out.frames[0].empty());
  auto request = parse_request(out.frames[0]);
  ASSERT_TRUE(request.ok());
  EXPECT_EQ(request->id(), 0u);
  EXPECT_EQ(request->body_case(), Request::BODY_NOT_SET);
  EXPECT_EQ(frame_of(Request()), std::string(4, '\0'));
}

// ---- encode / parse ----------------------------------------------------------

TEST(EncodeFrame, RefusesMessagesOverTheLimit) {
  Request request = sample_invoke(1);
  request.mutable_invoke()->set_params_json(std::string(100, 'x'));
  auto frame = encode_frame(request, 64);
  ASSERT_FALSE(frame.ok());
  EXPECT_NE(frame.error().message().find("limit of 64 bytes"), std::string::npos) << frame.error().message();
}

TEST(ParseMessage, MalformedBytesAreAnErrorNotACrash) {
  google::protobuf::LogSilencer quiet;  // invalid UTF-8 is also logged by protobuf
  const std::vector<std::string> malformed = {
      std::string("\x08", 1),                 // varint field without its value
      std::string("\x12\x05" "ab", 4),        // length-delimited field longer than the data
      std::string("\x00", 1),                 // field number 0
      std::string("\x0f", 1),                 // wire type 7 does not exist
      std::string("\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", 11),  // varint over 10 bytes
      std::string("\x12\x03\x12\x01\xff", 5),  // hello.client is not UTF-8
  };
  for (const std::string& bytes : malformed) {
    auto request = parse_request(bytes);
    ASSERT_FALSE(request.ok());
    EXPECT_NE(request.error().message().find("stoke.v1.Request"), std::string::npos)
        << request.error().message();
    EXPECT_FALSE(parse_response(bytes).ok());
  }
  // And random bytes never crash, whatever the verdict.
  std::mt19937 random(99);
  for (int i = 0; i < 5000; ++i) {
    std::string bytes(random() % 64, '\0');
    for (char& c : bytes) c = static_cast<char>(random());
    (void)parse_request(bytes);
    (void)parse_response(bytes);
  }
}

// ---- write_frame / read_frame --------------------------------------------------

TEST(BlockingFrames, RoundTripOverASocketpair) {
  SocketPair pair = make_socketpair();
  ASSERT_TRUE(write_frame(pair.client.get(), sample_invoke(5)).ok());
  ASSERT_TRUE(write_frame(pair.client.get(), Request()).ok());
  auto first = read_frame(pair.agent.get());
  ASSERT_TRUE(first.ok()) << first.error().message();
  EXPECT_EQ(parse_request(*first)->id(), 5u);
  auto empty = read_frame(pair.agent.get());
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->empty());
}

TEST(BlockingFrames, LargeFrameSurvivesShortWritesAndReads) {
  SocketPair pair = make_socketpair();
  Request request = sample_invoke(9);
  std::string big(8u << 20, '\0');
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>('a' + i % 26);
  request.mutable_invoke()->set_params_json(big);
  // The socket buffer is far smaller than 8 MiB: the writer must loop.
  std::thread writer([&] { EXPECT_TRUE(write_frame(pair.client.get(), request).ok()); });
  auto payload = read_frame(pair.agent.get());
  writer.join();
  ASSERT_TRUE(payload.ok()) << payload.error().message();
  EXPECT_EQ(parse_request(*payload)->invoke().params_json(), big);
}

TEST(BlockingFrames, WorksOnPipesAndNonBlockingFds) {
  int fds[2];
  ASSERT_EQ(::pipe2(fds, O_CLOEXEC), 0);
  unique_fd read_end(fds[0]), write_end(fds[1]);
  ASSERT_EQ(::fcntl(read_end.get(), F_SETFL, O_NONBLOCK), 0);
  std::thread writer([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));  // reader hits EAGAIN first
    EXPECT_TRUE(write_frame(write_end.get(), sample_invoke(11)).ok());
  });
  auto payload = read_frame(read_end.get());
  writer.join();
  ASSERT_TRUE(payload.ok()) << payload.error().message();
  EXPECT_EQ(parse_request(*payload)->id(), 11u);
}

TEST(BlockingFrames, OrderlyEndOfStream) {
  SocketPair pair = make_socketpair();
  pair.client.reset();
  auto payload = read_frame(pair.agent.get());
  ASSERT_FALSE(payload.ok());
  EXPECT_TRUE(is_connection_closed(payload.error())) << payload.error().message();
}

TEST(BlockingFrames, EndOfStreamInsideTheHeader) {
  SocketPair pair = make_socketpair();
  ASSERT_EQ(::write(pair.client.get(), "\0\0", 2), 2);
  pair.client.reset();
  auto payload = read_frame(pair.agent.get());
  ASSERT_FALSE(payload.ok());
  EXPECT_FALSE(is_connection_closed(payload.error()));
  EXPECT_NE(payload.error().message().find("connection closed mid-frame"), std::string::npos)
      << payload.error().message();
}

TEST(BlockingFrames, EndOfStreamInsideThePayload) {
  SocketPair pair = make_socketpair();
  const std::string partial = raw_header(10) + "abc";
  ASSERT_EQ(::write(pair.client.get(), partial.data(), partial.size()), static_cast<ssize_t>(partial.size()));
  pair.client.reset();
  auto payload = read_frame(pair.agent.get());
  ASSERT_FALSE(payload.ok());
  EXPECT_NE(payload.error().message().find("connection closed mid-frame"), std::string::npos)
      << payload.error().message();
}

TEST(BlockingFrames, ReadRefusesAFrameOverTheCallersLimit) {
  SocketPair pair = make_socketpair();
  const std::string frame = raw_header(100) + std::string(100, 'x');
  ASSERT_EQ(::write(pair.client.get(), frame.data(), frame.size()), static_cast<ssize_t>(frame.size()));
  auto payload = read_frame(pair.agent.get(), 50);
  ASSERT_FALSE(payload.ok());
  EXPECT_NE(payload.error().message().find("frame of 100 bytes"), std::string::npos) << payload.error().message();
}

TEST(BlockingFrames, WritingToAVanishedPeerIsEpipeNotSigpipe) {
  SocketPair pair = make_socketpair();
  pair.agent.reset();
  Status written = write_frame(pair.client.get(), sample_invoke(1));
  ASSERT_FALSE(written.ok());
  EXPECT_EQ(written.error().err, EPIPE);
}

// ---- Client against a fake agent ----------------------------------------------

// Runs `script` as the agent's side of one connection on its own thread.
class FakeAgent {
 public:
  FakeAgent(unique_fd stream, std::function<void(int)> script)
      : stream_(std::move(stream)), thread_([this, script = std::move(script)] {
          script(stream_.get());
          stream_.reset();  // the client sees end of stream when the script ends
        }) {}
  ~FakeAgent() { thread_.join(); }

 private:
  unique_fd stream_;
  std::thread thread_;
};

Request read_request(int fd) {
  auto payload = read_frame(fd);
  EXPECT_TRUE(payload.ok()) << payload.error().message();
  if (!payload.ok()) return Request();
  auto request = parse_request(*payload);
  EXPECT_TRUE(request.ok());
  return request.ok() ? *request : Request();
}

void reply(int fd, const Response& response) { EXPECT_TRUE(write_frame(fd, response).ok()); }

// Reads the hello and answers as an agent speaking `version` would.
void answer_hello(int fd, uint32_t version = kProtocolVersion) {
  Request hello = read_request(fd);
  EXPECT_TRUE(hello.has_hello());
  EXPECT_EQ(hello.hello().protocol_version(), kProtocolVersion);
  EXPECT_FALSE(hello.hello().client().empty());
  Response response;
  response.set_id(hello.id());
  response.mutable_hello()->set_protocol_version(version);
  response.mutable_hello()->set_agent_version("0.1.0-fake");
  reply(fd, response);
}

// Answers a GetFunction with a Function named after the request, so a test can
// tell which response went to which caller.
Response function_reply_for(const Request& request) {
  Response response;
  response.set_id(request.id());
  response.mutable_function()->set_name(request.get_function().name());
  return response;
}

Request get_function(const std::string& name) {
  Request request;
  request.mutable_get_function()->set_name(name);
  return request;
}

TEST(WireClient, HandshakeAndOneCall) {
  SocketPair pair = make_socketpair();
  FakeAgent agent(std::move(pair.agent), [](int fd) {
    answer_hello(fd);
    Request request = read_request(fd);
    EXPECT_EQ(request.id(), 1u);  // 0 is the handshake's
    reply(fd, function_reply_for(request));
  });
  auto client = Client::over(std::move(pair.client));
  ASSERT_TRUE(client.ok()) << client.error().message();
  EXPECT_EQ(client->hello().agent_version(), "0.1.0-fake");
  auto response = client->call(get_function("alpha"));
  ASSERT_TRUE(response.ok()) << response.error().message();
  EXPECT_EQ(response->id(), 1u);
  EXPECT_EQ(response->function().name(), "alpha");
}

TEST(WireClient, AgentRefusingTheVersionIsAnErrorWithItsMessage) {
  SocketPair pair = make_socketpair();
  FakeAgent agent(std::move(pair.agent), [](int fd) {
    Request hello = read_request(fd);
    Response refusal;
    refusal.set_id(hello.id());
    refusal.mutable_error()->set_code(stoke::v1::Error::UNSUPPORTED_VERSION);
    refusal.mutable_error()->set_message("agent speaks protocol version 2 only");
    reply(fd, refusal);
  });
  auto client = Client::over(std::move(pair.client));
  ASSERT_FALSE(client.ok());
  const std::string message = client.error().message();
  EXPECT_NE(message.find("agent speaks protocol version 2 only"), std::string::npos) << message;
  EXPECT_NE(message.find("UNSUPPORTED_VERSION"), std::string::npos) << message;
}

TEST(WireClient, RefusedPeerGetsTheAgentsReasonEvenIfItsHelloBounced) {
  for (int round = 0; round < 20; ++round) {  // the agent closes before or after the hello lands
    SocketPair pair = make_socketpair();
    FakeAgent agent(std::move(pair.agent), [](int fd) {
      Response refusal;  // unsolicited, before reading anything: id 0
      refusal.mutable_error()->set_code(stoke::v1::Error::PERMISSION_DENIED);
      refusal.mutable_error()->set_message("uid 1000 may not use this agent");
      reply(fd, refusal);
    });
    auto client = Client::over(std::move(pair.client));
    ASSERT_FALSE(client.ok());
    EXPECT_NE(client.error().message().find("uid 1000 may not use this agent"), std::string::npos)
        << client.error().message();
  }
}

TEST(WireClient, AgentAnsweringAnotherVersionIsAnError) {
  SocketPair pair = make_socketpair();
  FakeAgent agent(std::move(pair.agent), [](int fd) { answer_hello(fd, kProtocolVersion + 1); });
  auto client = Client::over(std::move(pair.client));
  ASSERT_FALSE(client.ok());
  EXPECT_NE(client.error().message().find("protocol version 2"), std::string::npos) << client.error().message();
}

TEST(WireClient, AgentClosingDuringHandshakeIsAnError) {
  SocketPair pair = make_socketpair();
  FakeAgent agent(std::move(pair.agent), [](int fd) { (void)read_request(fd); });
  auto client = Client::over(std::move(pair.client));
  ASSERT_FALSE(client.ok());
  EXPECT_NE(client.error().message().find("handshake"), std::string::npos) << client.error().message();
}

TEST(WireClient, OutOfOrderResponsesReachTheirWaiters) {
  SocketPair pair = make_socketpair();
  FakeAgent agent(std::move(pair.agent), [](int fd) {
    answer_hello(fd);
    std::vector<Request> requests;
    for (int i = 0; i < 4; ++i) requests.push_back(read_request(fd));
    // Answer in an order unrelated to the requests': 3rd, 1st, 4th, 2nd.
    for (int index : {2, 0, 3, 1}) reply(fd, function_reply_for(requests[index]));
  });
  auto client = Client::over(std::move(pair.client));
  ASSERT_TRUE(client.ok()) << client.error().message();
  std::vector<uint64_t> ids;
  for (const char* name : {"a", "b", "c", "d"}) {
    auto id = client->send(get_function(name));
    ASSERT_TRUE(id.ok());
    ids.push_back(*id);
  }
  EXPECT_EQ(ids, (std::vector<uint64_t>{1, 2, 3, 4}));
  // Wait in yet another order; each must get its own answer.
  for (int index : {1, 3, 0, 2}) {
    auto response = client->wait_for(ids[index]);
    ASSERT_TRUE(response.ok()) << response.error().message();
    EXPECT_EQ(response->id(), ids[index]);
    EXPECT_EQ(response->function().name(), std::string(1, static_cast<char>('a' + index)));
  }
  // Each id is answered once; waiting again would block forever, so it fails.
  EXPECT_FALSE(client->wait_for(ids[0]).ok());
  EXPECT_FALSE(client->wait_for(99).ok());
}

TEST(WireClient, AnErrorResponseIsAResponseNotATransportError) {
  SocketPair pair = make_socketpair();
  FakeAgent agent(std::move(pair.agent), [](int fd) {
    answer_hello(fd);
    for (int i = 0; i < 2; ++i) {
      Request request = read_request(fd);
      Response response;
      response.set_id(request.id());
      response.mutable_error()->set_code(stoke::v1::Error::NOT_FOUND);
      response.mutable_error()->set_message("no function named 'nope'");
      reply(fd, response);
    }
  });
  auto client = Client::over(std::move(pair.client));
  ASSERT_TRUE(client.ok());
  for (int i = 0; i < 2; ++i) {  // and the connection stays usable
    auto response = client->call(get_function("nope"));
    ASSERT_TRUE(response.ok()) << response.error().message();
    EXPECT_EQ(response->error().code(), stoke::v1::Error::NOT_FOUND);
  }
}

TEST(WireClient, EndOfStreamIsATransportErrorAndSticks) {
  SocketPair pair = make_socketpair();
  FakeAgent agent(std::move(pair.agent), [](int fd) {
    answer_hello(fd);
    (void)read_request(fd);  // then hang up without answering
  });
  auto client = Client::over(std::move(pair.client));
  ASSERT_TRUE(client.ok());
  auto response = client->call(get_function("x"));
  ASSERT_FALSE(response.ok());
  EXPECT_NE(response.error().message().find("connection closed"), std::string::npos) << response.error().message();
  auto again = client->call(get_function("y"));
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().message(), response.error().message());
}

TEST(WireClient, MalformedResponseIsATransportError) {
  SocketPair pair = make_socketpair();
  FakeAgent agent(std::move(pair.agent), [](int fd) {
    answer_hello(fd);
    (void)read_request(fd);
    const std::string garbage = raw_header(1) + std::string("\x0f", 1);
    EXPECT_EQ(::write(fd, garbage.data(), garbage.size()), static_cast<ssize_t>(garbage.size()));
  });
  auto client = Client::over(std::move(pair.client));
  ASSERT_TRUE(client.ok());
  auto response = client->call(get_function("x"));
  ASSERT_FALSE(response.ok());
  EXPECT_NE(response.error().message().find("malformed"), std::string::npos) << response.error().message();
}

TEST(WireClient, ConnectionLevelErrorFromTheAgentIsATransportError) {
  SocketPair pair = make_socketpair();
  FakeAgent agent(std::move(pair.agent), [](int fd) {
    answer_hello(fd);
    (void)read_request(fd);
    Response shutdown;  // id 0: not an answer to any call
    shutdown.mutable_error()->set_code(stoke::v1::Error::UNAVAILABLE);
    shutdown.mutable_error()->set_message("agent shutting down");
    reply(fd, shutdown);
  });
  auto client = Client::over(std::move(pair.client));
  ASSERT_TRUE(client.ok());
  auto response = client->call(get_function("x"));
  ASSERT_FALSE(response.ok());
  EXPECT_NE(response.error().message().find("agent shutting down"), std::string::npos) << response.error().message();
}

TEST(WireClient, ConnectsOverAUnixSocketPath) {
  test::TempDir dir;
  const std::string path = dir.file("agent.sock");
  unique_fd listener(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  ASSERT_TRUE(listener.valid());
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::strncpy(address.sun_path, path.c_str(), sizeof(address.sun_path) - 1);
  ASSERT_EQ(::bind(listener.get(), reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
  ASSERT_EQ(::listen(listener.get(), 1), 0);
  std::thread agent([&] {
    unique_fd connection(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
    ASSERT_TRUE(connection.valid());
    answer_hello(connection.get());
    Request request = read_request(connection.get());
    reply(connection.get(), function_reply_for(request));
  });
  auto client = Client::connect(path);
  if (client.ok()) {
    auto response = client->call(get_function("over-path"));
    ASSERT_TRUE(response.ok()) << response.error().message();
    EXPECT_EQ(response->function().name(), "over-path");
  }
  agent.join();
  ASSERT_TRUE(client.ok()) << client.error().message();
}

TEST(WireClient, ConnectToAMissingSocketNamesThePath) {
  auto client = Client::connect("/nonexistent/stoke-test.sock");
  ASSERT_FALSE(client.ok());
  EXPECT_EQ(client.error().err, ENOENT);
  EXPECT_NE(client.error().message().find("/nonexistent/stoke-test.sock"), std::string::npos);
  EXPECT_FALSE(Client::connect(std::string(200, 'x')).ok());
}

TEST(WireClient, DefaultSocketPathHonoursStokeSocket) {
  ::unsetenv("STOKE_SOCKET");
  EXPECT_EQ(default_socket_path(), kDefaultSocketPath);
  ::setenv("STOKE_SOCKET", "", 1);
  EXPECT_EQ(default_socket_path(), kDefaultSocketPath);
  ::setenv("STOKE_SOCKET", "/tmp/elsewhere.sock", 1);
  EXPECT_EQ(default_socket_path(), "/tmp/elsewhere.sock");
  ::unsetenv("STOKE_SOCKET");
}

}  // namespace
}  // namespace stoke::wire
