"""The emulated ESP32 board: its host process, pty console and flash/partition settings
(board.py, relay.py, console.py, config.py), and beside it the emulated ATECC608 (atecc*.py)
with its I2C bridge (i2c_bridge.py). The board side is boards/unix/emu/. Imports only the base."""
