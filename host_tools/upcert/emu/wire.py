"""A TCP relay between an emulated board and its broker, for the faults that live on the wire
rather than in the board: a connection that stalls (both directions go silent, nothing is reset:
as when a path drops every packet) and a connection reset. Give the board the relay's port as
its endpoint's port (the server certificate names localhost, so TLS checks still pass).

    wire = Wire("127.0.0.1", broker_port).start()
    wire.stall()    # connections open now never carry another byte; new ones work
    wire.reset()    # connections open now are reset (RST)
"""

import socket
import struct
import threading


class _Pair:
    def __init__(self, client, upstream):
        self.client, self.upstream = client, upstream
        self.stalled = False
        self.closed = False

    def close(self, rst=False):
        if self.closed:
            return
        self.closed = True
        for s in (self.client, self.upstream):
            try:
                if rst:  # SO_LINGER 0: close() sends RST
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                else:
                    s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                s.close()
            except OSError:
                pass


class Wire:
    """Relay 127.0.0.1:<port> -> (target_host, target_port), one thread per direction."""

    def __init__(self, target_host, target_port, port=0):
        self.target = (target_host, target_port)
        self._srv = self._listener(port)
        self.port = self._srv.getsockname()[1]
        self._pairs = []
        self._lock = threading.Lock()
        self._stop = False
        self.connections = 0  # accepted so far

    @staticmethod
    def _listener(port):
        srv = socket.socket()
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("127.0.0.1", port))
        return srv

    def start(self):
        self._srv.listen(32)
        threading.Thread(target=self._accept, args=(self._srv,), daemon=True,
                         name=f"wire-{self.port}").start()
        return self

    def pause(self):
        """Stop listening: new connections are refused (ECONNREFUSED, as from a host whose
        broker is down); open ones carry on."""
        srv, self._srv = self._srv, None
        if srv:
            srv.close()

    def resume(self):
        """Listen again on the same port."""
        if self._srv is None and not self._stop:
            self._srv = self._listener(self.port)
            self.start()

    def stop(self):
        """Stop listening and close every connection."""
        self._stop = True
        self.pause()
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for p in pairs:
            p.close()

    def open_connections(self):
        """Connections relayed now (stalled ones included)."""
        with self._lock:
            return sum(1 for p in self._pairs if not p.closed)

    def stall(self):
        """Every connection open now stops carrying data both ways, without a FIN or RST: the
        board must find out by its own timeouts (PUBACK, keepalive). It is closed once the board
        closes its side; the broker times it out by its keepalive. Returns how many stalled."""
        with self._lock:
            pairs = [p for p in self._pairs if not p.closed]
        for p in pairs:
            p.stalled = True
        return len(pairs)

    def reset(self):
        """Reset (RST) every connection open now; returns how many."""
        with self._lock:
            pairs = [p for p in self._pairs if not p.closed]
        for p in pairs:
            p.close(rst=True)
        return len(pairs)

    def _accept(self, srv):
        while not self._stop:
            try:
                client, _ = srv.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=10)
                upstream.settimeout(None)
            except OSError:
                client.close()  # the broker is down: the board sees its connection closed
                continue
            pair = _Pair(client, upstream)
            with self._lock:
                self._pairs = [p for p in self._pairs if not p.closed] + [pair]
                self.connections += 1
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(pair, src, dst), daemon=True).start()

    def _pump(self, pair, src, dst):
        while True:
            try:
                data = src.recv(16384)
            except OSError:
                data = b""
            if not data:
                # A stalled connection's broker side stays silent (no FIN reaches the board);
                # the board's own close ends it.
                if not (pair.stalled and src is pair.upstream):
                    pair.close()
                return
            if pair.stalled:
                continue  # the bytes are lost on the way
            try:
                dst.sendall(data)
            except OSError:
                pair.close()
                return
