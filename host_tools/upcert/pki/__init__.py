"""Keys and certificates on the host: loading and checking credentials (certs.py), the local
development CA (ca.py), `upcert cert inspect` (inspect.py) and AWS IoT's signature algorithm
table (algorithms.py, read from the device's own reader). Imports only the base (errors, paths,
validate): every other part may use it."""
