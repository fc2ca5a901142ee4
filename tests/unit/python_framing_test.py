#!/usr/bin/python3
"""Offline tests of api/python/stoke_client.py: the framing against known bytes
(the same vectors as tests/unit/frame_test.cc, so both sides agree), and, when
protoc is available, the handshake and calls against a fake agent thread.

Run: /usr/bin/python3 -m unittest -v python_framing_test   (from tests/unit)
 or: /usr/bin/python3 tests/unit/python_framing_test.py
"""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import unittest

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
sys.path.insert(0, os.path.join(REPO, "api", "python"))

import stoke_client  # noqa: E402
from stoke_client import FrameDecoder, ProtocolError, encode_frame, frame_header  # noqa: E402


class Framing(unittest.TestCase):
    def test_header_is_big_endian_length(self):
        self.assertEqual(frame_header(0x01020304), b"\x01\x02\x03\x04")
        self.assertEqual(frame_header(0), b"\x00\x00\x00\x00")

    def test_known_vector_request_with_id_1(self):
        # Request{id: 1} serializes to 08 01 (what frame_test.cc checks too).
        self.assertEqual(encode_frame(b"\x08\x01"), b"\x00\x00\x00\x02\x08\x01")
        self.assertEqual(FrameDecoder().feed(b"\x00\x00\x00\x02\x08\x01"), [b"\x08\x01"])

    def test_round_trip(self):
        payloads = [b"", b"x", bytes(range(256)) * 40]
        stream = b"".join(encode_frame(p) for p in payloads)
        self.assertEqual(FrameDecoder().feed(stream), payloads)

    def test_split_at_every_byte_boundary(self):
        frame = encode_frame(b"hello, frames")
        for split in range(len(frame) + 1):
            decoder = FrameDecoder()
            frames = decoder.feed(frame[:split]) + decoder.feed(frame[split:])
            self.assertEqual(frames, [b"hello, frames"], split)
            self.assertEqual(decoder.buffered_bytes, 0)

    def test_one_byte_at_a_time(self):
        stream = encode_frame(b"one") + encode_frame(b"two")
        decoder = FrameDecoder()
        frames = []
        for i in range(len(stream)):
            frames += decoder.feed(stream[i:i + 1])
        self.assertEqual(frames, [b"one", b"two"])

    def test_oversized_is_reported_then_input_refused(self):
        decoder = FrameDecoder()
        with self.assertRaisesRegex(ProtocolError, "4294967295"):
            decoder.feed(b"\xff\xff\xff\xff")
        self.assertTrue(decoder.failed)
        with self.assertRaisesRegex(ProtocolError, "refused"):
            decoder.feed(encode_frame(b"fine"))

    def test_caller_limit(self):
        decoder = FrameDecoder(max_frame_bytes=16)
        self.assertEqual(decoder.feed(encode_frame(b"a" * 16)), [b"a" * 16])
        with self.assertRaisesRegex(ProtocolError, "limit of 16 bytes"):
            decoder.feed(frame_header(17))
        with self.assertRaises(ProtocolError):
            encode_frame(b"a" * 17, max_frame_bytes=16)

    def test_read_frame_end_of_stream(self):
        for sent, expected in [(b"", "connection closed$"), (b"\x00\x00", "mid-frame"),
                               (frame_header(10) + b"abc", "mid-frame")]:
            a, b = socket.socketpair()
            with a, b:
                a.sendall(sent)
                a.close()
                with self.assertRaisesRegex(ProtocolError, expected):
                    stoke_client.read_frame(b)


def _generate_api(directory):
    subprocess.run([os.path.join(REPO, "api", "python", "gen.sh"), directory],
                   check=True, stdout=subprocess.DEVNULL)


@unittest.skipUnless(shutil.which("protoc"), "protoc not installed")
class ClientAgainstFakeAgent(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.gen = tempfile.mkdtemp(prefix="stoke-py-gen-")
        _generate_api(cls.gen)
        os.environ["STOKE_PY_GEN"] = cls.gen
        cls.api = stoke_client.load_api()

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.gen, ignore_errors=True)

    def _agent(self, script):
        """A client connected to `script(sock)` running on a thread."""
        client_end, agent_end = socket.socketpair()
        errors = []

        def run():
            try:
                script(agent_end)
            except Exception as e:  # surfaced by the test, not lost in the thread
                errors.append(e)
            finally:
                agent_end.close()

        thread = threading.Thread(target=run)
        thread.start()
        self.addCleanup(lambda: (thread.join(), self.assertEqual(errors, [])))
        return client_end

    def _read_request(self, sock):
        request = self.api.Request()
        request.ParseFromString(stoke_client.read_frame(sock))
        return request

    def _reply(self, sock, response):
        sock.sendall(encode_frame(response.SerializeToString()))

    def _answer_hello(self, sock, version=stoke_client.PROTOCOL_VERSION):
        hello = self._read_request(sock)
        assert hello.HasField("hello") and hello.hello.protocol_version == stoke_client.PROTOCOL_VERSION
        self._reply(sock, self.api.Response(
            id=hello.id, hello=self.api.HelloReply(protocol_version=version, agent_version="fake")))

    def test_handshake_status_and_error_response(self):
        api = self.api

        def agent(sock):
            self._answer_hello(sock)
            status = self._read_request(sock)
            assert status.HasField("get_status")
            self._reply(sock, api.Response(id=status.id, status=api.Status(agent_version="fake", functions=3)))
            missing = self._read_request(sock)
            self._reply(sock, api.Response(id=missing.id, error=api.Error(code=api.Error.NOT_FOUND,
                                                                           message="no function named 'x'")))

        client = stoke_client.Client(sock=self._agent(agent))
        with client:
            self.assertEqual(client.hello.agent_version, "fake")
            self.assertEqual(client.status().functions, 3)
            with self.assertRaises(stoke_client.AgentError) as raised:
                client.get_function("x")
            self.assertEqual(raised.exception.code_name, "NOT_FOUND")

    def test_version_refused(self):
        api = self.api

        def agent(sock):
            hello = self._read_request(sock)
            self._reply(sock, api.Response(id=hello.id, error=api.Error(
                code=api.Error.UNSUPPORTED_VERSION, message="agent speaks version 2")))

        with self.assertRaisesRegex(stoke_client.AgentError, "agent speaks version 2"):
            stoke_client.Client(sock=self._agent(agent))

    def test_refused_peer_gets_the_agents_reason(self):
        api = self.api

        def agent(sock):  # unsolicited refusal, then close, as for a peer not allowed
            self._reply(sock, api.Response(error=api.Error(code=api.Error.PERMISSION_DENIED,
                                                           message="uid 1000 may not use this agent")))

        for _ in range(10):
            with self.assertRaisesRegex(stoke_client.AgentError, "uid 1000 may not use this agent"):
                stoke_client.Client(sock=self._agent(agent))

    def test_other_version_in_reply(self):
        with self.assertRaisesRegex(ProtocolError, "protocol version 2"):
            stoke_client.Client(sock=self._agent(lambda sock: self._answer_hello(sock, version=2)))

    def test_out_of_order_responses_reach_their_waiters(self):
        api = self.api

        def agent(sock):
            self._answer_hello(sock)
            requests = [self._read_request(sock) for _ in range(3)]
            for r in reversed(requests):
                self._reply(sock, api.Response(id=r.id, function=api.Function(name=r.get_function.name)))

        with stoke_client.Client(sock=self._agent(agent)) as client:
            ids = [client.send(api.Request(get_function=api.GetFunction(name=n))) for n in "abc"]
            self.assertEqual(ids, [1, 2, 3])
            self.assertEqual(client.wait_for(ids[0]).function.name, "a")
            self.assertEqual(client.wait_for(ids[2]).function.name, "c")
            self.assertEqual(client.wait_for(ids[1]).function.name, "b")


if __name__ == "__main__":
    unittest.main()
