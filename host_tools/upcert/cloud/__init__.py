"""The local stand-in for AWS IoT Core: mosquitto configured like it (standin.py), its port 443
(alpn.py, HAProxy), the identity plugin (plugin/), the provisioning service (service.py, run by
daemon.py) with the registry, jobs, quotas and test faults it uses (registry.py, jobs.py,
limits.py, faults.py, cbor.py), what the CLI does to it (admin.py) and the wire tap
(wiretap.py). Imports pki and the base, never board or emu."""
