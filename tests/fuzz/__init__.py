"""Fuzzing the device's DER/X.509 reader: CPython loader, mutators, corpus, long-run script."""
