"""The client: one connection to the gateway, calls serialized by a lock (thread-safe)."""
import os
import socket
import ssl
import struct
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

import envelope_pb2
import gateway_pb2  # noqa: F401  (registers the gateway's messages)
import issuance_pb2
import licensing_pb2
import usage_pb2
import validation_pb2

MAX_FRAME = 4 << 20
STATUS_NAMES = {value: name[len("STATUS_CODE_"):].lower() for name, value in envelope_pb2.StatusCode.items()}
REASON_NAMES = {value: name[len("REASON_CODE_"):] for name, value in licensing_pb2.ReasonCode.items()}


class ClientError(Exception):
    """A call that failed: `code` ("unavailable", "not_found", ..., or "unverified" for an
    answer that failed its checks) and a message for a person."""

    RETRYABLE = {"unavailable", "deadline_exceeded", "resource_exhausted"}

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message

    @property
    def retryable(self) -> bool:
        return self.code in self.RETRYABLE


@dataclass
class Validation:
    """What a signed statement said; `offline_since` is set when the gateway could not be
    reached and an earlier verified answer is honoured under the offline grace."""
    reason: str
    valid: bool
    license_id: str
    expires_at: int
    grace_ends_at: int
    features: List[str]
    server_time: int
    offline_since: Optional[int] = None


class Client:
    """endpoint: "unix:/path/gateway.sock" or "host:port" (TLS, verified against `ca_file`).
    public_keys: kid -> raw Ed25519 public key (32 bytes), the keys answers must be signed by.
    clock: seconds since the epoch (tests inject one)."""

    def __init__(self, endpoint: str, api_key: str, ca_file: Optional[str] = None, public_keys: Optional[Dict[str, bytes]] = None,
                 timeout: float = 10.0, offline_grace_seconds: int = 0, max_clock_skew_seconds: int = 300,
                 clock: Callable[[], int] = lambda: int(time.time())):
        self.endpoint = endpoint
        self.api_key = api_key
        self.ca_file = ca_file
        self.public_keys = dict(public_keys or {})
        self.timeout = timeout
        self.offline_grace_seconds = offline_grace_seconds
        self.max_clock_skew_seconds = max_clock_skew_seconds
        self.clock = clock
        self._lock = threading.Lock()
        self._socket = None
        self._call_id = 0
        self._last_verified = {}
        if not endpoint.startswith("unix:") and not ca_file:
            raise ClientError("invalid_argument", "a TCP gateway needs ca_file: the CA its certificate must chain to")

    # -- connection and framing ------------------------------------------------------

    def _connect(self):
        if self.endpoint.startswith("unix:"):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            sock.connect(self.endpoint[len("unix:"):])
            return sock
        host, _, port = self.endpoint.rpartition(":")
        raw = socket.create_connection((host, int(port)), timeout=self.timeout)
        context = ssl.create_default_context(cafile=self.ca_file)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context.wrap_socket(raw, server_hostname=host)

    def close(self):
        with self._lock:
            if self._socket is not None:
                self._socket.close()
                self._socket = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _read_exactly(self, count: int) -> bytes:
        data = b""
        while len(data) < count:
            chunk = self._socket.recv(count - len(data))
            if not chunk:
                raise ConnectionError("the gateway closed the connection")
            data += chunk
        return data

    def call(self, method: str, request, response_type, idempotency_key: Optional[str] = None):
        """One unary call: `method` like "licensing.v1.Validation/Validate"."""
        deadline = time.monotonic() + self.timeout
        with self._lock:
            self._call_id += 1
            envelope = envelope_pb2.Envelope(
                call_id=self._call_id, kind=envelope_pb2.FRAME_KIND_REQUEST, method=method, payload=request.SerializeToString(),
                timeout_micros=int(self.timeout * 1_000_000))
            envelope.metadata.add(key="authorization", value=self.api_key)
            if idempotency_key:
                envelope.metadata.add(key="idempotency-key", value=idempotency_key)
            frame = envelope.SerializeToString()
            try:
                if self._socket is None:
                    self._socket = self._connect()
                self._socket.settimeout(max(deadline - time.monotonic(), 0.001))
                self._socket.sendall(struct.pack(">I", len(frame)) + frame)
                while True:
                    self._socket.settimeout(max(deadline - time.monotonic(), 0.001))
                    (length,) = struct.unpack(">I", self._read_exactly(4))
                    if length > MAX_FRAME:
                        raise ConnectionError(f"a frame of {length} bytes is over the 4 MiB limit")
                    answer = envelope_pb2.Envelope()
                    answer.ParseFromString(self._read_exactly(length))
                    if answer.call_id == self._call_id:
                        break
            except socket.timeout:
                self._drop()
                raise ClientError("deadline_exceeded", f"{method} did not answer within {self.timeout} s")
            except ssl.SSLError as error:
                self._drop()
                raise ClientError("unavailable", f"TLS with the gateway failed: {error}")
            except (OSError, ConnectionError) as error:
                self._drop()
                raise ClientError("unavailable", f"the gateway cannot be reached: {error}")
        if answer.status.code != envelope_pb2.STATUS_CODE_OK:
            raise ClientError(STATUS_NAMES.get(answer.status.code, "unknown"), answer.status.message)
        response = response_type()
        response.ParseFromString(answer.payload)
        return response

    def _drop(self):
        if self._socket is not None:
            try:
                self._socket.close()
            finally:
                self._socket = None

    # -- validation ------------------------------------------------------------------

    def validate(self, key: str, fingerprint: str = "", feature: str = "") -> Validation:
        """Validates with a fresh nonce and verifies the signed answer; see the SDK docs."""
        nonce = os.urandom(16)
        grace_key = (key, fingerprint, feature)
        try:
            response = self.call("licensing.v1.Validation/Validate",
                                 validation_pb2.ValidateRequest(license_key=key, fingerprint=fingerprint, feature=feature, nonce=nonce),
                                 validation_pb2.ValidateResponse)
        except ClientError as error:
            if error.code in ("unavailable", "deadline_exceeded"):
                return self._offline(grace_key, error)
            raise
        statement = self.verify(response, nonce)
        reason = REASON_NAMES.get(statement.reason, "UNSPECIFIED")
        result = Validation(reason=reason, valid=reason in ("VALID", "IN_GRACE"), license_id=statement.license_id,
                            expires_at=statement.expires_at, grace_ends_at=statement.grace_ends_at, features=list(statement.features),
                            server_time=statement.server_time)
        if result.valid:
            self._last_verified[grace_key] = (result, self.clock())
        else:
            self._last_verified.pop(grace_key, None)
        return result

    def verify(self, response, nonce: bytes):
        """The signed statement of an answer, or ClientError("unverified", why)."""
        if not response.statement or not response.signature:
            raise ClientError("unverified", "the answer is not signed")
        raw = self.public_keys.get(response.kid)
        if raw is None:
            raise ClientError("unverified", f"the answer was signed by key {response.kid}, which is not in the public key set")
        try:
            Ed25519PublicKey.from_public_bytes(raw).verify(response.signature, response.statement)
        except InvalidSignature:
            raise ClientError("unverified", "the answer's signature does not verify: forged or altered")
        statement = validation_pb2.ValidationStatement()
        statement.ParseFromString(response.statement)
        if statement.nonce != nonce:
            raise ClientError("unverified", "the answer is for another request (nonce differs): a replay")
        if abs(statement.server_time - self.clock()) > self.max_clock_skew_seconds:
            raise ClientError("unverified", f"the answer was made at {statement.server_time}, too far from now")
        if statement.reason != response.reason or statement.license_id != response.license_id:
            raise ClientError("unverified", "the answer's fields differ from its signed statement")
        return statement

    def _offline(self, grace_key, error: ClientError) -> Validation:
        stored = self._last_verified.get(grace_key)
        if not self.offline_grace_seconds or stored is None:
            raise error
        result, verified_at = stored
        now = self.clock()
        if now - verified_at > self.offline_grace_seconds:
            raise ClientError("unavailable", f"the gateway cannot be reached and the offline grace ended at {verified_at + self.offline_grace_seconds} ({error.message})")
        end = result.grace_ends_at or result.expires_at
        expired = result.expires_at != 0 and end <= now
        return Validation(reason="EXPIRED" if expired else result.reason, valid=not expired, license_id=result.license_id,
                          expires_at=result.expires_at, grace_ends_at=result.grace_ends_at, features=result.features,
                          server_time=result.server_time, offline_since=verified_at)

    # -- machines, seats, usage --------------------------------------------------------

    def activate(self, key: str, fingerprint: str, machine_name: str = "", platform: str = ""):
        return self.call("licensing.v1.Validation/Activate",
                         validation_pb2.ActivateRequest(license_key=key, fingerprint=fingerprint, machine_name=machine_name, platform=platform),
                         validation_pb2.ActivateResponse)

    def deactivate(self, key: str, fingerprint: str) -> bool:
        return self.call("licensing.v1.Validation/Deactivate", validation_pb2.DeactivateRequest(license_key=key, fingerprint=fingerprint),
                         validation_pb2.DeactivateResponse).deactivated

    def checkout_seat(self, key: str, client_id: str, user: str = "", ttl_seconds: int = 0) -> "Seat":
        answer = self.call("licensing.v1.Validation/CheckoutSeat",
                           validation_pb2.CheckoutSeatRequest(license_key=key, client_id=client_id, user=user, ttl_seconds=ttl_seconds),
                           validation_pb2.SeatLeaseResponse)
        if answer.reason != licensing_pb2.REASON_CODE_VALID:
            raise ClientError("failed_precondition", f"no seat: {REASON_NAMES.get(answer.reason)} {answer.detail}")
        return Seat(self, key, answer.lease)

    def usage_recorder(self, key: str, max_batch: int = 500) -> "UsageRecorder":
        return UsageRecorder(self, key, max_batch)

    # -- issuers ------------------------------------------------------------------------

    def issue_license(self, policy_id: str, customer_id: str, idempotency_key: Optional[str] = None):
        return self.call("licensing.v1.Issuance/IssueLicense", issuance_pb2.IssueLicenseRequest(policy_id=policy_id, customer_id=customer_id),
                         issuance_pb2.IssueLicenseResponse, idempotency_key)

    def renew_license(self, license_id: str, idempotency_key: Optional[str] = None):
        return self.call("licensing.v1.Issuance/RenewLicense", issuance_pb2.RenewLicenseRequest(id=license_id), licensing_pb2.License, idempotency_key)

    def suspend_license(self, license_id: str, reason: str):
        return self.call("licensing.v1.Issuance/SuspendLicense", issuance_pb2.LicenseTransitionRequest(id=license_id, reason=reason), licensing_pb2.License)

    def revoke_license(self, license_id: str, reason: str):
        return self.call("licensing.v1.Issuance/RevokeLicense", issuance_pb2.LicenseTransitionRequest(id=license_id, reason=reason), licensing_pb2.License)

    def record_payment(self, billing_ref: str, period_start: int, period_end: int, amount_minor: int, currency: str, payment_id: str):
        request = issuance_pb2.RecordPaymentRequest(billing_ref=billing_ref, period_start=period_start, period_end=period_end,
                                                    amount_minor=amount_minor, currency=currency, payment_id=payment_id)
        return self.call("licensing.v1.Issuance/RecordPayment", request, licensing_pb2.Subscription, f"payment:{payment_id}")

    def public_keys_set(self) -> Dict[str, bytes]:
        keys = self.call("licensing.v1.Issuance/ListPublicKeys", issuance_pb2.ListPublicKeysRequest(), issuance_pb2.PublicKeySet)
        return {key.kid: key.public_key for key in keys.keys}


class Seat:
    """A floating seat kept by a background thread's heartbeats until check_in()."""

    def __init__(self, client: Client, key: str, lease):
        self.client = client
        self.key = key
        self.lease = lease
        self.problem: Optional[ClientError] = None
        self._stop = threading.Event()
        ttl = max(lease.expires_at - lease.acquired_at, 3)
        self._thread = threading.Thread(target=self._beat, args=(ttl / 3,), daemon=True)
        self._thread.start()

    def _beat(self, interval: float):
        while not self._stop.wait(interval):
            try:
                answer = self.client.call("licensing.v1.Validation/HeartbeatSeat",
                                          validation_pb2.SeatLeaseRequest(lease_id=self.lease.lease_id, license_key=self.key),
                                          validation_pb2.SeatLeaseResponse)
                self.problem = None if answer.reason == licensing_pb2.REASON_CODE_VALID else ClientError("failed_precondition", "the seat was lost")
            except ClientError as error:
                self.problem = error

    def check_in(self):
        self._stop.set()
        self._thread.join()
        self.client.call("licensing.v1.Validation/CheckinSeat", validation_pb2.SeatLeaseRequest(lease_id=self.lease.lease_id, license_key=self.key),
                         validation_pb2.SeatLeaseResponse)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.check_in()


class UsageRecorder:
    """Buffers usage events (each with an id, so a resent batch counts once)."""

    def __init__(self, client: Client, key: str, max_batch: int):
        self.client = client
        self.key = key
        self.max_batch = min(max(max_batch, 1), 1000)
        self._pending = []
        self._lock = threading.Lock()

    def record(self, feature: str, quantity: int = 1, user: str = "") -> bool:
        with self._lock:
            self._pending.append(usage_pb2.UsageEvent(event_id=str(uuid.uuid4()), license_key=self.key, feature=feature, quantity=quantity,
                                                      occurred_at=self.client.clock(), user=user))
            return len(self._pending) >= self.max_batch

    def flush(self) -> int:
        accepted = 0
        while True:
            with self._lock:
                batch = self._pending[:self.max_batch]
            if not batch:
                return accepted
            answer = self.client.call("licensing.v1.Usage/RecordUsage", usage_pb2.RecordUsageRequest(events=batch), usage_pb2.RecordUsageResponse)
            with self._lock:
                del self._pending[:len(batch)]
            accepted += answer.accepted
