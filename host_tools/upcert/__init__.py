"""upcert host tools: certificates, board transport, provisioning, local AWS IoT stand-in."""

__version__ = "0.1.0"
