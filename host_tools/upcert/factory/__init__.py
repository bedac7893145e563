"""The production line: per-board flash images in ESP-IDF's own formats, flashing with esptool,
batch provisioning with an inventory, and the fleet's expiry view."""
