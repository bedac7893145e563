"""One board over its serial line: the raw-REPL transport built on mpremote (transport.py), what
firmware a board needs and installing it (firmware.py, deps.py), provisioning an identity
(provision.py) and the ATECC608 on a board (chip.py), each step a call into the device's
upcert.hostcalls. Imports pki and the base, never emu or cloud: a registry is passed in."""
