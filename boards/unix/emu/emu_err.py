# ESP-IDF error codes as the ESP32 port raises them: OSError(-code, "ESP_ERR_NAME").
# Source: ports/esp32/mphalport.c check_esp_err_(); codes from ESP-IDF esp_err.h and nvs.h.
from micropython import const

ESP_ERR_INVALID_ARG = const(0x102)
ESP_ERR_INVALID_SIZE = const(0x104)
ESP_ERR_NVS_NOT_INITIALIZED = const(0x1101)  # -> OSError(-4353)
ESP_ERR_NVS_NOT_FOUND = const(0x1102)  # -> OSError(-4354)
ESP_ERR_NVS_NOT_ENOUGH_SPACE = const(0x1105)  # -> OSError(-4357)
ESP_ERR_NVS_INVALID_NAME = const(0x1106)  # -> OSError(-4358)
ESP_ERR_NVS_KEY_TOO_LONG = const(0x1109)  # -> OSError(-4361)
ESP_ERR_NVS_INVALID_LENGTH = const(0x110C)  # -> OSError(-4364)
ESP_ERR_NVS_VALUE_TOO_LONG = const(0x110E)  # -> OSError(-4366)

_NAMES = {
    ESP_ERR_INVALID_ARG: "ESP_ERR_INVALID_ARG",
    ESP_ERR_INVALID_SIZE: "ESP_ERR_INVALID_SIZE",
    ESP_ERR_NVS_NOT_INITIALIZED: "ESP_ERR_NVS_NOT_INITIALIZED",
    ESP_ERR_NVS_NOT_FOUND: "ESP_ERR_NVS_NOT_FOUND",
    ESP_ERR_NVS_NOT_ENOUGH_SPACE: "ESP_ERR_NVS_NOT_ENOUGH_SPACE",
    ESP_ERR_NVS_INVALID_NAME: "ESP_ERR_NVS_INVALID_NAME",
    ESP_ERR_NVS_KEY_TOO_LONG: "ESP_ERR_NVS_KEY_TOO_LONG",
    ESP_ERR_NVS_INVALID_LENGTH: "ESP_ERR_NVS_INVALID_LENGTH",
    ESP_ERR_NVS_VALUE_TOO_LONG: "ESP_ERR_NVS_VALUE_TOO_LONG",
}


def esp_error(code):
    """The OSError the ESP32 port raises for an ESP-IDF error code (errno is -code)."""
    return OSError(-code, _NAMES.get(code, "ESP_ERR_0x%X" % code))
