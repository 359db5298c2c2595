"""The Python client against a live stack (started by Tests/EndToEndTests/PythonClientTests.swift,
which passes what it seeded in the environment) and against stand-in servers for what a
client must refuse. Run: python3 -m unittest discover -s sdk/python/tests"""
import os
import socket
import ssl
import struct
import tempfile
import threading
import time
import unittest

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from licensing_client import Client, ClientError

import envelope_pb2
import licensing_pb2
import validation_pb2

GATEWAY = os.environ.get("LM_GATEWAY")


class FakeGateway:
    """Answers Validate as the test says: genuine, forged, replayed, altered, slow."""

    def __init__(self, path, tls=None):
        self.path = path
        self.mode = "genuine"
        self.key = Ed25519PrivateKey.generate()
        self.kid = "kid_fake"
        self.public = self.key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        if tls:
            self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.listener.bind(("127.0.0.1", 0))
            self.tls = tls
        else:
            self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.listener.bind(path)
            self.tls = None
        self.listener.listen(8)
        self.running = True
        threading.Thread(target=self.serve, daemon=True).start()

    @property
    def port(self):
        return self.listener.getsockname()[1]

    def serve(self):
        while self.running:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self.handle, args=(connection,), daemon=True).start()

    def handle(self, connection):
        try:
            if self.tls:
                connection = self.tls.wrap_socket(connection, server_side=True)
            while True:
                header = connection.recv(4)
                if len(header) < 4:
                    return
                (length,) = struct.unpack(">I", header)
                data = b""
                while len(data) < length:
                    data += connection.recv(length - len(data))
                request = envelope_pb2.Envelope()
                request.ParseFromString(data)
                validate = validation_pb2.ValidateRequest()
                validate.ParseFromString(request.payload)
                if self.mode == "slow":
                    time.sleep(3)
                now = int(time.time())
                nonce = b"\x07" * 16 if self.mode == "replayed" else validate.nonce
                statement = validation_pb2.ValidationStatement(version=1, reason=licensing_pb2.REASON_CODE_VALID, license_id="lic_1",
                                                               features=["render"], server_time=now, nonce=nonce).SerializeToString()
                signature = bytearray(self.key.sign(statement))
                if self.mode == "forged":
                    signature[0] ^= 1
                response = validation_pb2.ValidateResponse(reason=licensing_pb2.REASON_CODE_VALID, valid=True,
                                                           license_id="lic_2" if self.mode == "altered" else "lic_1",
                                                           server_time=now, kid=self.kid, signature=bytes(signature), statement=statement)
                answer = envelope_pb2.Envelope(call_id=request.call_id, kind=envelope_pb2.FRAME_KIND_RESPONSE, payload=response.SerializeToString())
                frame = answer.SerializeToString()
                connection.sendall(struct.pack(">I", len(frame)) + frame)
        except (OSError, ssl.SSLError):
            return
        finally:
            connection.close()

    def stop(self):
        self.running = False
        try:
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()
        if self.path and os.path.exists(self.path):
            os.unlink(self.path)


class RefusalTests(unittest.TestCase):
    def setUp(self):
        self.folder = tempfile.mkdtemp()
        self.fake = FakeGateway(os.path.join(self.folder, "fake.sock"))
        self.now = [int(time.time())]
        self.client = Client("unix:" + os.path.join(self.folder, "fake.sock"), "lmk_test", public_keys={self.fake.kid: self.fake.public},
                             timeout=1.0, offline_grace_seconds=3 * 86400, clock=lambda: self.now[0])

    def tearDown(self):
        self.client.close()
        self.fake.stop()

    def test_forged_replayed_and_altered_answers_are_refused(self):
        self.assertTrue(self.client.validate("any").valid)
        for mode, words in (("forged", "does not verify"), ("replayed", "replay"), ("altered", "differ from its signed statement")):
            self.fake.mode = mode
            with self.assertRaises(ClientError) as caught:
                self.client.validate("any")
            self.assertEqual(caught.exception.code, "unverified", mode)
            self.assertIn(words, caught.exception.message, mode)

    def test_a_key_outside_the_pinned_set_is_refused(self):
        stranger = Client("unix:" + os.path.join(self.folder, "fake.sock"), "lmk_test", public_keys={"kid_other": b"\x01" * 32})
        with self.assertRaises(ClientError) as caught:
            stranger.validate("any")
        self.assertIn("not in the public key set", caught.exception.message)
        stranger.close()

    def test_a_deadline_is_kept(self):
        self.fake.mode = "slow"
        started = time.monotonic()
        with self.assertRaises(ClientError) as caught:
            self.client.validate("never-seen")
        self.assertEqual(caught.exception.code, "deadline_exceeded")
        self.assertLess(time.monotonic() - started, 2.9)

    def test_offline_grace_is_honoured_then_ends(self):
        self.assertTrue(self.client.validate("key-1", "fp").valid)
        self.fake.stop()
        self.client.close()
        offline = self.client.validate("key-1", "fp")
        self.assertTrue(offline.valid)
        self.assertEqual(offline.offline_since, self.now[0])
        self.now[0] += 3 * 86400 + 1
        with self.assertRaises(ClientError) as caught:
            self.client.validate("key-1", "fp")
        self.assertIn("offline grace ended", caught.exception.message)
        with self.assertRaises(ClientError):
            self.client.validate("key-never-validated", "fp")


@unittest.skipUnless(os.environ.get("LM_CERTS"), "needs LM_CERTS (two folders made by deploy/make-certs)")
class TLSTests(unittest.TestCase):
    def test_a_certificate_from_another_ca_is_refused(self):
        certs = os.environ["LM_CERTS"]
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(os.path.join(certs, "real", "server.pem"), os.path.join(certs, "real", "server.key"))
        fake = FakeGateway(None, tls=context)
        try:
            trusting = Client(f"127.0.0.1:{fake.port}", "lmk_test", ca_file=os.path.join(certs, "real", "ca.pem"), public_keys={fake.kid: fake.public})
            self.assertTrue(trusting.validate("any").valid)
            trusting.close()
            other = Client(f"127.0.0.1:{fake.port}", "lmk_test", ca_file=os.path.join(certs, "other", "ca.pem"), public_keys={fake.kid: fake.public})
            with self.assertRaises(ClientError) as caught:
                other.validate("any")
            self.assertEqual(caught.exception.code, "unavailable")
            self.assertIn("TLS", caught.exception.message)
            other.close()
        finally:
            fake.stop()
        with self.assertRaises(ClientError):
            Client("127.0.0.1:1", "lmk_test")


@unittest.skipUnless(GATEWAY, "needs LM_GATEWAY and the seeded ids (run by PythonClientTests.swift)")
class LiveStackTests(unittest.TestCase):
    def test_the_happy_path(self):
        issuer = Client(GATEWAY, os.environ["LM_ISSUER_KEY"])
        issued = issuer.issue_license(os.environ["LM_POLICY"], os.environ["LM_CUSTOMER"], idempotency_key="py-order-1")
        again = issuer.issue_license(os.environ["LM_POLICY"], os.environ["LM_CUSTOMER"], idempotency_key="py-order-1")
        self.assertEqual(again.license.id, issued.license.id)
        pinned = issuer.public_keys_set()
        product = Client(GATEWAY, os.environ["LM_PRODUCT_KEY"], public_keys=pinned)
        key = issued.license_key
        self.assertEqual(product.activate(key, "py-fp-1", "Build box").reason, licensing_pb2.REASON_CODE_VALID)
        answer = product.validate(key, "py-fp-1", "render")
        self.assertTrue(answer.valid)
        self.assertEqual(answer.reason, "VALID")
        self.assertEqual(answer.features, ["render"])
        # A seat kept by heartbeats past its 3-second lease.
        seat = product.checkout_seat(key, "py-proc-1", ttl_seconds=3)
        time.sleep(5)
        self.assertIsNone(seat.problem)
        with self.assertRaises(ClientError):
            product.checkout_seat(key, "py-proc-2")
        seat.check_in()
        usage = product.usage_recorder(key)
        for _ in range(3):
            usage.record("render", 5)
        self.assertEqual(usage.flush(), 3)
        issuer.revoke_license(issued.license.id, "refund")
        # A revocation reaches validation within its feed interval (a grant at once).
        deadline = time.monotonic() + 10
        revoked = product.validate(key, "py-fp-1", "render")
        while revoked.reason != "REVOKED" and time.monotonic() < deadline:
            time.sleep(0.1)
            revoked = product.validate(key, "py-fp-1", "render")
        self.assertFalse(revoked.valid)
        self.assertEqual(revoked.reason, "REVOKED")
        # Errors are codes with messages.
        with self.assertRaises(ClientError) as caught:
            issuer.revoke_license("lic_nothing", "x")
        self.assertEqual(caught.exception.code, "not_found")
        issuer.close()
        product.close()


if __name__ == "__main__":
    unittest.main()
