"""A loopback TCP relay that watches a TLS connection: bytes each way, SNI, offered suites and
the version and suite the server chose (read from the plaintext ClientHello/ServerHello).

The device's `tls` module cannot report the negotiated suite, so the demo and the benchmarks read
it off the wire instead.
"""

import socket
import struct
import threading
from dataclasses import dataclass, field

# TLS cipher suite ids (IANA registry; RFC 5246 App. A.5, RFC 4492 §6, RFC 5289 §3), the AWS IoT
# TLS 1.2 list (AWS IoT Developer Guide, "Transport security in AWS IoT Core") in OpenSSL names.
SUITES = {
    0xC02B: "ECDHE-ECDSA-AES128-GCM-SHA256", 0xC02F: "ECDHE-RSA-AES128-GCM-SHA256",
    0xC023: "ECDHE-ECDSA-AES128-SHA256", 0xC027: "ECDHE-RSA-AES128-SHA256",
    0xC009: "ECDHE-ECDSA-AES128-SHA", 0xC013: "ECDHE-RSA-AES128-SHA",
    0xC02C: "ECDHE-ECDSA-AES256-GCM-SHA384", 0xC030: "ECDHE-RSA-AES256-GCM-SHA384",
    0xC024: "ECDHE-ECDSA-AES256-SHA384", 0xC028: "ECDHE-RSA-AES256-SHA384",
    0xC00A: "ECDHE-ECDSA-AES256-SHA", 0xC014: "ECDHE-RSA-AES256-SHA",
    0x009C: "AES128-GCM-SHA256", 0x003C: "AES128-SHA256", 0x002F: "AES128-SHA",
    0x009D: "AES256-GCM-SHA384", 0x003D: "AES256-SHA256", 0x0035: "AES256-SHA",
}
VERSIONS = {0x0301: "TLS 1.0", 0x0302: "TLS 1.1", 0x0303: "TLS 1.2", 0x0304: "TLS 1.3"}


def suite_name(code):
    return SUITES.get(code, f"0x{code:04X}")


@dataclass
class Session:
    """What one relayed connection showed."""

    bytes_up: int = 0
    bytes_down: int = 0
    sni: str = None
    offered: list = field(default_factory=list)
    version: str = None
    suite: str = None
    closed: bool = False


def _handshake(buf, want_type):
    """The body of the first handshake message of want_type in buf, or None if incomplete."""
    if len(buf) < 5 or buf[0] != 0x16:
        return None
    rec_len = struct.unpack(">H", buf[3:5])[0]
    if len(buf) < 5 + rec_len:
        return None
    body = buf[5:5 + rec_len]
    if len(body) < 4 or body[0] != want_type:
        return None
    hs_len = int.from_bytes(body[1:4], "big")
    return body[4:4 + hs_len]


def parse_client_hello(body):
    """(sni, [suite ids]) from a ClientHello body (RFC 5246 §7.4.1.2, RFC 6066 §3)."""
    p = 2 + 32
    p += 1 + body[p]
    n = struct.unpack(">H", body[p:p + 2])[0]
    suites = [struct.unpack(">H", body[p + 2 + i:p + 4 + i])[0] for i in range(0, n, 2)]
    p += 2 + n
    p += 1 + body[p]
    sni = None
    if p + 2 <= len(body):
        end = p + 2 + struct.unpack(">H", body[p:p + 2])[0]
        p += 2
        while p + 4 <= end:
            etype, elen = struct.unpack(">HH", body[p:p + 4])
            if etype == 0:  # server_name: list len, type 0 host_name, name len, name
                sni = body[p + 9:p + 9 + struct.unpack(">H", body[p + 7:p + 9])[0]].decode()
            p += 4 + elen
    return sni, suites


def parse_server_hello(body):
    """(version, suite id) from a ServerHello body (RFC 5246 §7.4.1.3)."""
    version = struct.unpack(">H", body[0:2])[0]
    p = 2 + 32
    p += 1 + body[p]
    return version, struct.unpack(">H", body[p:p + 2])[0]


class WireTap:
    """Relay 127.0.0.1:<port> -> target, recording a Session per connection."""

    def __init__(self, target_host, target_port):
        self.target = (target_host, target_port)
        self.sessions = []
        self._srv = socket.socket()
        self._srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._srv.bind(("127.0.0.1", 0))
        self.port = self._srv.getsockname()[1]
        self._stop = False

    def start(self):
        self._srv.listen(16)
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def stop(self):
        self._stop = True
        self._srv.close()

    def _accept(self):
        while not self._stop:
            try:
                client, _ = self._srv.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=10)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            s = Session()
            self.sessions.append(s)
            threading.Thread(target=self._pump, args=(client, upstream, s, True),
                             daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, s, False),
                             daemon=True).start()

    def _pump(self, src, dst, s, up):
        head = b""
        while True:
            try:
                data = src.recv(16384)
            except OSError:
                data = b""
            if not data:
                s.closed = True
                for sock in (src, dst):
                    try:
                        sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                return
            if len(head) < 16384 and (s.offered == [] if up else s.suite is None):
                head += data
                try:
                    if up:
                        body = _handshake(head, 1)
                        if body is not None:
                            s.sni, s.offered = parse_client_hello(body)
                    else:
                        body = _handshake(head, 2)
                        if body is not None:
                            v, c = parse_server_hello(body)
                            s.version, s.suite = VERSIONS.get(v, hex(v)), suite_name(c)
                except (IndexError, struct.error, UnicodeDecodeError):
                    head = b"\xff" * 16384  # not TLS as expected: stop looking
            if up:
                s.bytes_up += len(data)
            else:
                s.bytes_down += len(data)
            try:
                dst.sendall(data)
            except OSError:
                return
