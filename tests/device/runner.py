# Device test runner, run by the MicroPython unix port: `micropython runner.py test_x.py`.
# Imports the module, calls each test_* function, prints PASS/FAIL lines and a closing count.
import gc
import sys


def main(path):
    name = path.rsplit("/", 1)[-1]
    if name.endswith(".py"):
        name = name[:-3]
    folder = path.rsplit("/", 1)[0] if "/" in path else "."
    if folder not in sys.path:
        sys.path.insert(0, folder)
    mod = __import__(name)
    passed = failed = 0
    for attr in sorted(dir(mod)):
        if not attr.startswith("test_"):
            continue
        fn = getattr(mod, attr)
        try:
            fn()
            passed += 1
            print("PASS", attr)
        except Exception as exc:
            failed += 1
            print("FAIL", attr + ":", type(exc).__name__, exc)
            sys.print_exception(exc)
        gc.collect()
    print("%d passed, %d failed" % (passed, failed))
    return failed


if __name__ == "__main__":
    sys.exit(1 if main(sys.argv[1]) else 0)
