# upcert device package: a rotating X.509 identity for MicroPython boards on AWS IoT Core.
# Modules are imported on demand (one job each); nothing happens at import time.
