"""CPython stand-in for MicroPython's `micropython` module: just what firmware/ imports."""


def const(x):
    """MicroPython folds const() at compile time; on CPython it is the value itself."""
    return x


def native(f):
    return f


viper = native
