"""The field day: N emulated boards against the local stand-in while faults land at random
(Wi-Fi drops, DNS failures, stalled connections, slow connects, broker and provisioning-service
restarts, power cuts, rotations by jobs and by short certificates), then a report of what was
lost and how long each recovery took (run.py drives it, report.py reads what happened)."""

# Fault kinds, in the order the first round injects them (then at random).
KINDS = ("wifi", "dns", "stall", "slow", "broker", "service", "power", "job", "expiry")
# Kinds that break a board's connection: its recovery is its first telemetry acknowledged on a
# connection made after the fault began.
BREAKS = ("wifi", "dns", "stall", "slow", "broker", "power")
