# Frozen-module manifest for a generic ESP32 with the upcert device package built in:
#   make -C ports/esp32 BOARD=ESP32_GENERIC FROZEN_MANIFEST=<repo>/boards/esp32_generic/manifest.py
# boot.py, main.py and /upcert.d/* stay on the flash file system. Paths are relative to this file.
include("$(PORT_DIR)/boards/manifest.py")
package("upcert", base_path="../../firmware")
module("board.py")
