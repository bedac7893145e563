# A local TCP listener that plays a misbehaving TLS server (silent, closing, not TLS) for the
# connector/diagnose tests, and a context wrapper that lets it act between TCP and TLS.
import random
import socket


def listener():
    """(listening socket, port) on 127.0.0.1; the unix port has no getsockname()."""
    while True:
        port = 20000 + random.getrandbits(14)
        s = socket.socket()
        try:
            s.bind(socket.getaddrinfo("127.0.0.1", port)[0][-1])
        except OSError:
            s.close()
            continue
        s.listen(2)
        return s, port


class Hook:
    """SSLContext stand-in: runs step() after the TCP connect, then the real wrap_socket."""

    def __init__(self, ctx, step):
        self.ctx = ctx
        self.step = step
        self.hostname = None

    def wrap_socket(self, sock, server_hostname=None):
        self.hostname = server_hostname
        self.step()
        return self.ctx.wrap_socket(sock, server_hostname=server_hostname)
