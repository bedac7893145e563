# The test_*.py files here are MicroPython modules: pytest must not import them under CPython;
# test_device.py runs each of them on the unix port instead.
from pathlib import Path

collect_ignore = [p.name for p in Path(__file__).parent.glob("test_*.py") if p.name != "test_device.py"]
