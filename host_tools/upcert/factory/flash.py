"""`upcert flash-firmware`: MicroPython and a board's images written by esptool's Python API.

Kept a thin call into esptool, since it cannot be tested without a chip (the emulated board has
no ROM bootloader): erase-flash, write-flash of MicroPython's firmware.bin at the board's
firmware offset, write-flash of the partition table and images at the manifest's offsets (a
second call, so the table replaces the one inside firmware.bin), verify-flash of those (esptool
reads back each region's MD5 from the chip), then the REPL is awaited and `board status` read.
What is tested is plan(): the esptool arguments made from a manifest, and its refusals.
"""

import time
from pathlib import Path

from upcert.errors import UpcertError


def plan(port, firmware, images=None, *, baud=460800, erase=True, board="esp32_generic"):
    """The esptool argument lists, in order, for writing `firmware` (and the image folder)."""
    from upcert.factory import image

    fw = Path(firmware)
    if not fw.is_file():
        raise UpcertError(f"firmware {fw} not found: download MicroPython's firmware.bin for "
                          "the board (micropython.org/download)")
    head = fw.read_bytes()[:1]
    if head != b"\xe9":
        raise UpcertError(f"{fw} is not an ESP32 firmware image (it should start with 0xE9, "
                          "the image magic): give MicroPython's firmware.bin, not a .uf2/.elf")
    manifest = image.read_manifest(images) if images else None
    if manifest and manifest["board"] != board:
        board = manifest["board"]
    settings = image.board_settings(board)
    chip = manifest["chip"] if manifest else settings["chip"]
    size = manifest["flash_size"] if manifest else settings["flash_size"]
    base = ["--chip", chip, "--port", port, "--baud", str(int(baud))]
    calls = []
    if erase:
        calls.append(base + ["erase-flash"])
    calls.append(base + ["write-flash", "--flash-size", size,
                         f"{settings['firmware_offset']:#x}", str(fw)])
    if manifest:
        regions = []
        for f in sorted(manifest["files"], key=lambda f: f["offset"]):
            regions += [f"{f['offset']:#x}", str(Path(images) / f["file"])]
        calls.append(base + ["write-flash", "--flash-size", size] + regions)
        calls.append(base + ["verify-flash"] + regions)
    return calls


def run(calls, port, log=print, boot_wait_s=5):
    """Run the esptool calls, then wait for MicroPython's REPL and return `board status`."""
    import esptool

    from upcert.board.provision import status

    for args in calls:
        log("esptool " + " ".join(args))
        try:
            esptool.main(args)
        except (esptool.FatalError, OSError) as e:
            raise UpcertError(f"esptool {args[6] if len(args) > 6 else ''} failed on {port}: "
                              f"{e}") from None
        except SystemExit as e:
            if e.code:
                raise UpcertError(f"esptool stopped with code {e.code} on {port}") from None
    time.sleep(1)
    return status(port, boot_wait_s=boot_wait_s)
