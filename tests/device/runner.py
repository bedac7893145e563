# Device test runner, run by the MicroPython unix port (never CPython):
#   micropython tests/device/runner.py tests/device/test_x.py [test_name ...]
# Imports the module and calls each test_* function (or only the named ones), in name order.
# Before each test it prints a delimiter line "=== RUN name", then the test's own output, then
# "PASS name" or "FAIL name: Type message" followed by the traceback; it ends with
# "N passed, N failed" and exits 1 when a test failed, 2 when the module cannot be imported.
# tests/device/test_device.py runs each module once and splits this output per test function.
import gc
import os
import sys

DELIM = "=== RUN "


def _default_path():
    """Run by hand without MICROPYPATH: the path test_device.py gives (fakes first)."""
    if os.getenv("MICROPYPATH") is not None:
        return
    here = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
    root = here + "/../.."
    for i, folder in enumerate((here + "/fakes", root + "/firmware", root + "/.build/deps")):
        sys.path.insert(1 + i, folder)


def main(path, names=None):
    name = path.rsplit("/", 1)[-1]
    if name.endswith(".py"):
        name = name[:-3]
    folder = path.rsplit("/", 1)[0] if "/" in path else "."
    if folder not in sys.path:
        sys.path.insert(0, folder)
    try:
        mod = __import__(name)
    except BaseException as exc:  # a SyntaxError or a failing import: no test can run
        print("ERROR importing %s: %s %s" % (path, type(exc).__name__, exc))
        sys.print_exception(exc)
        return 2
    found = sorted(attr for attr in dir(mod) if attr.startswith("test_"))
    if names:
        wanted = sorted(set(names))
    else:
        wanted = found
    passed = failed = 0
    for attr in wanted:
        print(DELIM + attr)
        if attr not in found:
            failed += 1
            print("FAIL %s: no function %s in %s" % (attr, attr, path))
            continue
        try:
            result = getattr(mod, attr)()
            if type(result).__name__ == "generator":
                raise AssertionError("returned a generator: its body never ran")
            passed += 1
            print("PASS", attr)
        except Exception as exc:
            failed += 1
            print("FAIL", attr + ":", type(exc).__name__, exc)
            sys.print_exception(exc)
        gc.collect()
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    if len(sys.argv) < 2:
        print("usage: micropython runner.py tests/device/test_x.py [test_name ...]")
        sys.exit(2)
    _default_path()
    sys.exit(main(sys.argv[1], sys.argv[2:]))
