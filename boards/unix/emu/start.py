# Entry point of the emulated ESP32, run by the unix port as `micropython -i start.py` from
# the emulator host (host_tools/upcert/emu/relay.py). Binds no names: the REPL starts clean.
__import__("sys").path.insert(0, __file__.rsplit("/", 1)[0])
__import__("emu_boot").boot(globals())
