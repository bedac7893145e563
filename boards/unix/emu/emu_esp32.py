# `esp32` stand-in: the NVS and Partition classes of the ESP32 port, emulated over files.
from emu_nvs import NVS  # noqa: F401
from emu_partition import Partition  # noqa: F401
