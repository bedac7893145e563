"""CPython stand-in for MicroPython's `cryptolib`: what firmware/ uses of `cryptolib.aes` (modes
1 ECB and 2 CBC, `encrypt`/`decrypt` into an optional output buffer, CBC chaining across calls),
built on pyca/cryptography. MicroPython's docs: "cryptolib - cryptographic ciphers"."""

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

MODE_ECB = 1
MODE_CBC = 2


class aes:  # noqa: N801 (MicroPython's name)
    """aes(key, mode, IV=None): one object encrypts or decrypts, never both (as on the device)."""

    def __init__(self, key, mode, iv=None):
        if mode == MODE_ECB:
            m = modes.ECB()
        elif mode == MODE_CBC:
            m = modes.CBC(bytes(iv if iv is not None else bytes(16)))
        else:
            raise ValueError("mode")  # CTR (6) is compiled out on the ESP32 port
        self._cipher = Cipher(algorithms.AES(bytes(key)), m)
        self._ctx = None
        self._enc = None

    def _run(self, enc, data, out):
        if len(data) % 16:
            raise ValueError("blksize")
        if self._ctx is None:
            self._enc = enc
            self._ctx = self._cipher.encryptor() if enc else self._cipher.decryptor()
        elif self._enc != enc:
            raise OSError(1)  # MicroPython: an object does one direction only
        got = self._ctx.update(bytes(data))
        if out is None:
            return got
        out[: len(got)] = got
        return None

    def encrypt(self, data, out=None):
        return self._run(True, data, out)

    def decrypt(self, data, out=None):
        return self._run(False, data, out)
