"""Store "esp_secure_cert" against partition images made by Espressif's esp-secure-cert-tool
(PyPI esp-secure-cert-tool, `configure_esp_secure_cert.py --skip_flash`, no hardware needed),
read on the emulated board through board.store() and loaded into its tls module."""

import json
import os
import subprocess

from cryptography.hazmat.primitives import serialization
from upcert.board import firmware
from upcert.board.transport import Board
from upcert.emu.board import EmulatedBoard
from upcert.pki import certs
from upcert.pki.ca import LocalCa

from tests.tools import require

SIZE = 0x2000  # the tool's partition size
READ = """
import board, binascii, tls
s = board.store({{"store": {{"kind": "esp_secure_cert", "label": {label!r}}}}})
c, k = s.certificate(), s.private_key()
ctx = tls.SSLContext(tls.PROTOCOL_TLS_CLIENT)
ctx.load_cert_chain(c, k)
print(binascii.hexlify(c).decode(), binascii.hexlify(k).decode())
try:
    s.stage(c, k)
except Exception as e:
    print(type(e).__name__, e)
"""


def _make_image(tool, folder, key_kind, encoding):
    """Run the tool on a fresh key and certificate written in `encoding` (PEM or DER);
    returns (image bytes, certificate DER, key DER in the tool's TraditionalOpenSSL form)."""
    folder.mkdir()
    ca = LocalCa.init(folder / "ca", key_type="ec")
    key = certs.generate_key(key_kind)
    cert = ca.issue_device("dev1", key.public_key())
    fmt = serialization.PrivateFormat.PKCS8
    key_bytes = key.private_bytes(encoding, fmt, serialization.NoEncryption())
    fd = os.open(folder / "key", os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600)
    os.write(fd, key_bytes)
    os.close(fd)
    (folder / "cert").write_bytes(cert.public_bytes(encoding))
    (folder / "ca.crt").write_bytes(ca.certificate.public_bytes(encoding))
    proc = subprocess.run(
        [
            tool,
            "--private-key",
            "key",
            "--device-cert",
            "cert",
            "--ca-cert",
            "ca.crt",
            "--target_chip",
            "esp32",
            "--secure_cert_type",
            "cust_flash_tlv",
            "--skip_flash",
        ],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    image = (folder / "esp_secure_cert_data" / "esp_secure_cert.bin").read_bytes()
    assert len(image) <= SIZE and image[:4] == b"\x11\xba\x5e\xba", image[:16]
    # The tool writes only the TLVs; esptool puts them on an erased partition.
    image += b"\xff" * (SIZE - len(image))
    tool_key = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    return image, certs.cert_to_der(cert), tool_key


def test_images_from_esp_secure_cert_tool(tmp_path):
    tool = require("configure_esp_secure_cert.py")
    require("micropython")
    images = {
        "esp_secure_cert": _make_image(tool, tmp_path / "pem", "ec", serialization.Encoding.PEM),
        "esc_der": _make_image(tool, tmp_path / "der", "rsa", serialization.Encoding.DER),
    }
    state = tmp_path / "board"
    state.mkdir()
    parts = [{"label": "nvs", "type": "data", "subtype": "nvs", "size": 0x6000}]
    parts += [{"label": label, "type": 0x3F, "subtype": 0, "size": SIZE} for label in images]
    parts += [
        {"label": "factory", "type": "app", "subtype": "factory", "size": 0x1F0000},
        {"label": "vfs", "type": "data", "subtype": "fat", "size": 0x200000},
    ]
    (state / "board.json").write_text(json.dumps({"partitions": parts}))
    for label, (image, _, _) in images.items():
        (state / f"part-{label}.bin").write_bytes(image)
    with EmulatedBoard(state) as board, Board(board.port) as conn:
        firmware.install(conn)
        for label, (_, cert_der, key_der) in images.items():
            lines = conn.exec(READ.format(label=label), timeout_s=30).splitlines()
            assert lines[0].split() == [cert_der.hex(), key_der.hex()], label
            assert lines[1].startswith("StoreError") and "read-only" in lines[1], lines[1]
