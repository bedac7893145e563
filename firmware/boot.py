# boot.py: runs first on every boot (ESP32 convention). upcert needs nothing here: main.py starts
# the agent, and the board drops to the REPL if main.py returns. Keep it empty so a bad edit to
# the device package cannot stop the board from reaching the REPL.
