# Device tests for upcert.chain: fixed chains made once with pyca/cryptography (an RSA-2048 root,
# intermediate and leaf as under Amazon Root CA 1; a P-256 root and leaf as under Amazon Root CA 3,
# the leaf signed ECDSA-SHA384). The bulk cases are tests/host/test_chain_vs_cryptography.py.
import gc
from binascii import a2b_base64

from checks import eq, raises, true
from upcert import chain
from upcert.chain import ChainError
from upcert.clock import utc_seconds
from upcert.errors import CLOCK, SERVER

RSA_ROOT = a2b_base64(
    "MIIDPjCCAiagAwIBAgIUXsM4j7D+luZeNMTXn+QmkxdqhFEwDQYJKoZIhvcNAQELBQAwNzEVMBMGA1UECgwMdXBjZXJ0"
    "IHRlc3RzMR4wHAYDVQQDDBV1cGNlcnQgVGVzdCBSb290IENBIDEwHhcNMjYwMTAxMDAwMDAwWhcNMzgwMTAxMDAwMDAw"
    "WjA3MRUwEwYDVQQKDAx1cGNlcnQgdGVzdHMxHjAcBgNVBAMMFXVwY2VydCBUZXN0IFJvb3QgQ0EgMTCCASIwDQYJKoZI"
    "hvcNAQEBBQADggEPADCCAQoCggEBANXM5C1dbqHxvSkse39DU8C2/n2pLEPdIlCXp+0RzKIqf5JPAgkFXiB4PzNRkWBA"
    "/TCB81n5plqCwljbzlj52MORjVfPFiZ3rkvukPRYB4ucaTGRbsX5ttwKgM0KrE1OtvnBP/+3fnWpdfeUSIyio4/qXQOF"
    "o/1F2Obw1rezW22JeDwqMaWxEiMci/XyfIedhEjqbK4Y3pkNlXODH4Fybi0ovhdoYwPuTmWA9aMyvuyZvWnUy4aqFRtt"
    "KOLUkT0BHK6sWsg9pvEqlMzXqpOmbayh70HrZITe6D0BiifkNtwcJES4s78oO+HuJtlFoOtLAF24RC5rY3HF/bvYxWgZ"
    "+CcCAwEAAaNCMEAwDwYDVR0TAQH/BAUwAwEB/zAOBgNVHQ8BAf8EBAMCAYYwHQYDVR0OBBYEFIdoglWw5H87ukAD7ZcD"
    "78X8K0eLMA0GCSqGSIb3DQEBCwUAA4IBAQC4CBcGKz2YRpMV9mwG90Y6cFsAkiI8ulHVfXxmBfXH9Rq8RIdL1GULRf4P"
    "7/d6Rr+z6tVe1cDWc11ehAxIxyGUn5vMZ/1XsgnWRfrDQb/m5OZ8FRsSeaJKRTuEFGZyyNXWD0HB2+UioaipmdzBDI+N"
    "EJbMckBdtyasZhAdr4U8R95+Sa/iF/ats1ffdS/XqqXmO8k8fP2ujuPg6kidQeQns5rSEZCpG1vzGDlHx3b2McjrAz0M"
    "GmDm5+l26lsyKbnu0NKR/IBzvMdTNOVjTUo5Onq3LpjsmbkZEHC2hT2OSpLXNphfSuLiftUtv8gjBJGCgJS0GuUxMNDT"
    "SI2kLW7R"
)
RSA_INT = a2b_base64(
    "MIIDhjCCAm6gAwIBAgIUDbvzN5aFZ3Yp0VBKSkUWyC2n9wAwDQYJKoZIhvcNAQELBQAwNzEVMBMGA1UECgwMdXBjZXJ0"
    "IHRlc3RzMR4wHAYDVQQDDBV1cGNlcnQgVGVzdCBSb290IENBIDEwHhcNMjYwMTAxMDAwMDAwWhcNMzAwMTAxMDAwMDAw"
    "WjA6MRUwEwYDVQQKDAx1cGNlcnQgdGVzdHMxITAfBgNVBAMMGHVwY2VydCBUZXN0IFJTQSAyMDQ4IE0wMTCCASIwDQYJ"
    "KoZIhvcNAQEBBQADggEPADCCAQoCggEBAM0hs+76sbtjanasaYNd3ljjNIX62MUzjg+wCCvuG8nR4lhgUMfjLIdECEuU"
    "5jXMyV1Xkqltqdg4oJEGt5/sU5+ZYZFLkXt+T2CRmIKUm2EcpfSwuG0nMc69p4sC0HZ0bP9pS718DQX8A3Ujudfat3/l"
    "afvQBteq+DTsOl5DO1JV7ogFghb0wJnv/lg6RWfYInnoRiMjftfGOLZQxhTbvFXF1wFYdWrhzbXS16iCoF5sQL7kDawF"
    "3oETnu3C1EGkTrXg+weiYM58+TpWCi2OOj1lzPirvdIu53hzzBAy+wGxAFXY/+W5Y8KB48dWpKfINmkz3nfe8bjYOzN2"
    "r0EY0gECAwEAAaOBhjCBgzASBgNVHRMBAf8ECDAGAQH/AgEAMA4GA1UdDwEB/wQEAwIBhjAdBgNVHSUEFjAUBggrBgEF"
    "BQcDAQYIKwYBBQUHAwIwHQYDVR0OBBYEFHxx7UgVtYNfmU3G+oPY/RXz5m4HMB8GA1UdIwQYMBaAFIdoglWw5H87ukAD"
    "7ZcD78X8K0eLMA0GCSqGSIb3DQEBCwUAA4IBAQBmqjA5ZF6jNgd3f6FwjnjrxfuwhxhDqjy7v4vO8YV9ujbPeqHrXMy0"
    "mwCjG3BgPpULFiibaEX3SYefeDP3iDbwEkfGdNqc9UQsIlGWbcVgf8KaahlNJTOTND+mvLyAsTVgzOXgWAx6SOdolLKJ"
    "id+SWBPgzTq5/5iNZj70V3NmFkNjHPtAwbSiONfLGhnCageBfB/PA91/sEhib0F4OMmf8Rbarp4cOV/pW4nvdnUSRGLZ"
    "vspIfk5QmTiWq3ITsMdRGFXrZf160AEZebb457ErxB4AVXmwd/TKp+NN4jFsq1hbrJrNd/xPlSLTOtomiiClYzf01y7j"
    "lwhRMGKclYs5"
)
RSA_LEAF = a2b_base64(
    "MIIDqTCCApGgAwIBAgIUP5Yq1DRA+xBX49ZeW957qxdbwVswDQYJKoZIhvcNAQELBQAwOjEVMBMGA1UECgwMdXBjZXJ0"
    "IHRlc3RzMSEwHwYDVQQDDBh1cGNlcnQgVGVzdCBSU0EgMjA0OCBNMDEwHhcNMjYwNjAxMDAwMDAwWhcNMjcwNjAxMDAw"
    "MDAwWjAxMRUwEwYDVQQKDAx1cGNlcnQgdGVzdHMxGDAWBgNVBAMMD2lvdC5leGFtcGxlLmNvbTCCASIwDQYJKoZIhvcN"
    "AQEBBQADggEPADCCAQoCggEBAOUZiG4/O7rkEZtpI+UBbnUDfhJVDRGjVbTLLLu/KbuXcw36lcMpGT6KFfWAzGDaSFPN"
    "Orxmm0cs4CLEtPdTO/3Fqeh2RLzq2UsW0cc475UzdoGi/Lkbc42vY5rVg/X71BBrd5H4f86NoXefvSSf9aq7EIWox7g1"
    "li7F5HmhcL0STg71GIYUuYR5rNQER9+Yhs8ltP4tNywVGpFnfvJC1C5pfOw6pGP/G56eesyL2IvRE0+MeEGKlmBoUCUT"
    "buCtX6dt/xvaNqLksbW4pMbJO/PxNQ2gOIJZ29vtU7IenRFTaRiizwhLdiof3D44CQ9TnJ04ikWPcGGsZ6XoXk7SoN0C"
    "AwEAAaOBrzCBrDAMBgNVHRMBAf8EAjAAMA4GA1UdDwEB/wQEAwIFoDAdBgNVHSUEFjAUBggrBgEFBQcDAQYIKwYBBQUH"
    "AwIwLQYDVR0RBCYwJIIPaW90LmV4YW1wbGUuY29tghEqLmlvdC5leGFtcGxlLmNvbTAdBgNVHQ4EFgQULSH9iKzCHIG9"
    "8gCetvDRkFeq3tkwHwYDVR0jBBgwFoAUfHHtSBW1g1+ZTcb6g9j9FfPmbgcwDQYJKoZIhvcNAQELBQADggEBAFxV3AOd"
    "N7BZz9Icks0iAEDur0OHbpOv95b7NrKwIbRYmEsD9/6NvPVoxbVJ9QDVEEff+qNjwFk7dmEB+oM58/yGwmJz7p0hgPNr"
    "BRL8ZnMqB5DFOu3k+vcbhgp/RskFdNLbRx5eO0LDKt2KoRoLbebB2E86wAGgFQ9MAbY7RhtayHyodpk+ntej2YyQjbaS"
    "J8GYfP+wWQ7l7JaAF4gFmCN7uHUmvdeLODPUocaniiJVsyYH9h7/iebabonbbEuY6WwqC3rt5mxQbi17/MnNoBSuH74Z"
    "le4bVoMFRdYmUci+afLFwQc5H2Dxctzkw+G8cHY4bJ4nFw/xQ1HpvnTrUuc="
)
EC_ROOT = a2b_base64(
    "MIIBsTCCAVigAwIBAgIUOduTWMd4g+vYHeShyeWFwFOJ8qgwCgYIKoZIzj0EAwIwNzEVMBMGA1UECgwMdXBjZXJ0IHRl"
    "c3RzMR4wHAYDVQQDDBV1cGNlcnQgVGVzdCBSb290IENBIDMwHhcNMjYwMTAxMDAwMDAwWhcNMzgwMTAxMDAwMDAwWjA3"
    "MRUwEwYDVQQKDAx1cGNlcnQgdGVzdHMxHjAcBgNVBAMMFXVwY2VydCBUZXN0IFJvb3QgQ0EgMzBZMBMGByqGSM49AgEG"
    "CCqGSM49AwEHA0IABC3VJdvq/0AzeYfCjTJuhqhb/VRv+TI+JszzcQ49QIEcLA+8tl6eQLx8kExprcar4S91pcNlCXGx"
    "gq07P3Bc9SSjQjBAMA8GA1UdEwEB/wQFMAMBAf8wDgYDVR0PAQH/BAQDAgGGMB0GA1UdDgQWBBQY9tTrxwLt5tBH2jSK"
    "J3kH7XKN0DAKBggqhkjOPQQDAgNHADBEAiBoJjjiz00koQREbah9J2ahCJT4iVrL1i0gZ5GQlqFtRAIgHCmRN/F/2clf"
    "QlSw/HCHPumBDV72T9mCWAvAWFVLtIE="
)
EC_LEAF = a2b_base64(
    "MIICCzCCAbGgAwIBAgIUGz0wdlW8IA25eCRnv18fJuIThZ8wCgYIKoZIzj0EAwMwNzEVMBMGA1UECgwMdXBjZXJ0IHRl"
    "c3RzMR4wHAYDVQQDDBV1cGNlcnQgVGVzdCBSb290IENBIDMwHhcNMjYwNjAxMDAwMDAwWhcNMjcwNjAxMDAwMDAwWjAw"
    "MRUwEwYDVQQKDAx1cGNlcnQgdGVzdHMxFzAVBgNVBAMMDmVjLmV4YW1wbGUuY29tMFkwEwYHKoZIzj0CAQYIKoZIzj0D"
    "AQcDQgAEP1IWXIJ7yDKjYXVFgq+6paN0Kkz/kXmnNaTaUZfC4cWubQUI4QNwNuzrKg8Z70JPrS7QAHfX6t5PqX1M/UUz"
    "TaOBoTCBnjAMBgNVHRMBAf8EAjAAMA4GA1UdDwEB/wQEAwIFoDAdBgNVHSUEFjAUBggrBgEFBQcDAQYIKwYBBQUHAwIw"
    "HwYDVR0RBBgwFoIOZWMuZXhhbXBsZS5jb22HBMAAAgcwHQYDVR0OBBYEFIEhcp+S54oU/UzHrkRL7kDObcW1MB8GA1Ud"
    "IwQYMBaAFBj21OvHAu3m0EfaNIoneQftco3QMAoGCCqGSM49BAMDA0gAMEUCIQDt0hOStiiZWsmOob1nw8m58Isc0gZD"
    "c/ZIiZraftdGeAIgFPIedi4eUABB8ySPiRSqBQRWR/UhyqASki/s8QCUxrU="
)

NOW = utc_seconds((2027, 1, 15, 12, 0, 0))  # the leaves are valid 2026-06-01..2027-06-01


def _refused(alert, fn, *args, contains=None):
    exc = raises(ChainError, fn, *args, contains=contains)
    eq(exc.alert, alert, "alert (%s)" % exc)
    eq(exc.reason, SERVER, "reason")
    return exc


def test_rsa_chain():
    leaf = chain.verify([RSA_LEAF, RSA_INT], [RSA_ROOT], "abc-ats.iot.example.com", NOW)
    eq(leaf.subject_cn, "iot.example.com", "the leaf is returned")
    eq(leaf.key_type, "RSA", "key")
    true(isinstance(leaf.der, memoryview), "the leaf is read in place, not copied")
    chain.verify([RSA_LEAF, RSA_INT], [RSA_ROOT], "IOT.Example.com.", NOW)


def test_ec_chain_sha384():
    leaf = chain.verify([EC_LEAF], [RSA_ROOT, EC_ROOT], "ec.example.com", NOW)
    eq(leaf.public_key[0], 4, "EC point")
    chain.verify([EC_LEAF], [EC_ROOT], "192.0.2.7", NOW)


def test_order_extras_and_sent_root():
    roots = [EC_ROOT, RSA_ROOT]
    chain.verify([RSA_LEAF, RSA_ROOT, RSA_INT], roots, "iot.example.com", NOW)
    chain.verify([RSA_LEAF, EC_LEAF, EC_ROOT, RSA_INT], roots, "iot.example.com", NOW)
    # Memoryviews over one buffer, as a TLS Certificate message arrives.
    buf = bytearray(RSA_LEAF + RSA_INT)
    mv = memoryview(buf)
    leaf = chain.verify([mv[: len(RSA_LEAF)], mv[len(RSA_LEAF) :]], roots, "iot.example.com", NOW)
    buf[len(RSA_LEAF) - 1] ^= 1
    true(leaf.signature[-1] != RSA_LEAF[-1], "signature is a view into the buffer")


def test_hostname():
    for host in ("x.iot.example.com", "iot.example.com"):
        chain.verify([RSA_LEAF, RSA_INT], [RSA_ROOT], host, NOW)
    for host in ("example.com", "a.b.iot.example.com", "iot.example.org", "192.0.2.7"):
        _refused(42, chain.verify, [RSA_LEAF, RSA_INT], [RSA_ROOT], host, NOW,
                 contains="is not for")
    _refused(42, chain.verify, [EC_LEAF], [EC_ROOT], "192.0.2.8", NOW)
    raises(ValueError, chain.verify, [RSA_LEAF, RSA_INT], [RSA_ROOT], "*.iot.example.com", NOW)


def test_dns_match_rfc6125():
    # RFC 6125 §6.4.3 and its examples; the host is lowercase ASCII without a final dot.
    m = chain._dns_match
    true(m(b"foo.example.com", b"*.example.com"), "wildcard: one label")
    true(m(b"foo.example.com", b"*.EXAMPLE.com"), "case-insensitive")
    true(m(b"example.com", b"example.com."), "final dot")
    true(not m(b"bar.foo.example.com", b"*.example.com"), "one label only")
    true(not m(b"example.com", b"*.example.com"), "not the bare domain")
    true(not m(b"baz1.example.net", b"baz*.example.net"), "no partial wildcard")
    true(not m(b"foobaz.example.net", b"*baz.example.net"), "no partial wildcard")
    true(not m(b"buuz.example.net", b"b*z.example.net"), "no partial wildcard")
    true(not m(b"example.com", b"*.com"), "not a public suffix alone")
    true(not m(b"www.a.example.com", b"www.*.example.com"), "left-most label only")
    true(not m(b"a.b.example.com", b"*.*.example.com"), "one wildcard")


def test_ip_literals():
    eq(chain._ip("192.0.2.7"), b"\xc0\x00\x02\x07", "IPv4")
    eq(chain._ip("2001:db8::1"), b"\x20\x01\x0d\xb8" + bytes(11) + b"\x01", "IPv6")
    eq(chain._ip("[::1]"), bytes(15) + b"\x01", "IPv6 in brackets")
    eq(chain._ip("1:2:3:4:5:6:7:8"), bytes([0, 1, 0, 2, 0, 3, 0, 4, 0, 5, 0, 6, 0, 7, 0, 8]), "full")
    for name in ("iot.example.com", "256.1.1.1", "1.2.3", "1.2.3.4.5", "1.2.3.x"):
        eq(chain._ip(name), None, name)
    for bad in ("1::2::3", "1:2:3:4:5:6:7:8:9", "12345::1", "g::1", "1:2:3:4:5:6:7:8::"):
        raises(ValueError, chain._ip, bad)


def test_validity():
    args = ([RSA_LEAF, RSA_INT], [RSA_ROOT], "iot.example.com")
    _refused(45, chain.verify, *args, utc_seconds((2027, 6, 2)), contains="is expired")
    _refused(45, chain.verify, *args, utc_seconds((2026, 5, 31)), contains="not yet valid")
    _refused(45, chain.verify, *args, utc_seconds((2031, 1, 1)), contains="is expired")
    exc = raises(ChainError, chain.verify, *args, NOW, False)
    eq((exc.alert, exc.reason), (46, CLOCK), "untrusted clock: refused, reason CLOCK")


def test_unknown_ca():
    _refused(48, chain.verify, [RSA_LEAF, RSA_INT], [EC_ROOT], "iot.example.com", NOW,
             contains="no trust anchor")
    _refused(48, chain.verify, [RSA_LEAF], [RSA_ROOT], "iot.example.com", NOW)
    _refused(48, chain.verify, [RSA_LEAF, RSA_INT], [], "iot.example.com", NOW)
    # The intermediate as an anchor is fine; the leaf as a CA is not.
    chain.verify([RSA_LEAF], [RSA_INT], "iot.example.com", NOW)
    _refused(48, chain.verify, [EC_LEAF, RSA_LEAF], [RSA_ROOT, RSA_LEAF], "ec.example.com", NOW)


def _flip(data, i):
    b = bytearray(data)
    b[i] ^= 1
    return bytes(b)


def test_tampered():
    host = "iot.example.com"
    _refused(42, chain.verify, [_flip(RSA_LEAF, -1), RSA_INT], [RSA_ROOT], host, NOW,
             contains="does not verify")
    _refused(42, chain.verify, [RSA_LEAF, _flip(RSA_INT, -1)], [RSA_ROOT], host, NOW,
             contains="does not verify")
    _refused(42, chain.verify, [_flip(EC_LEAF, -3)], [EC_ROOT], "ec.example.com", NOW)
    at = RSA_LEAF.find(b"iot.example.com")
    _refused(42, chain.verify, [_flip(RSA_LEAF, at), RSA_INT], [RSA_ROOT], host, NOW)
    _refused(42, chain.verify, [RSA_LEAF[:-1], RSA_INT], [RSA_ROOT], host, NOW,
             contains="certificate 0")
    _refused(42, chain.verify, [], [RSA_ROOT], host, NOW)
    _refused(43, chain.verify, [RSA_LEAF + bytes(8000)], [RSA_ROOT], host, NOW,
             contains="over 8192")


def test_extensions_read():
    c = chain._parse(RSA_INT, 1)
    eq(chain._extensions(c, None, None, False), (True, 0, 0x86, True, None), "intermediate")
    c = chain._parse(RSA_LEAF, 0)
    eq(chain._extensions(c, b"x.iot.example.com", None, False), (False, None, 0xA0, True, True),
       "leaf")
    eq(chain._sig_alg(c), ("pkcs1", "sha256", 0), "sha256WithRSAEncryption")
    eq(chain._sig_alg(chain._parse(EC_LEAF, 0)), ("ecdsa", "sha384", 0), "ECDSA-SHA384")


def test_memory_keeps_only_the_leaf():
    args = ([RSA_LEAF, RSA_INT], [RSA_ROOT], "iot.example.com", NOW)
    chain.verify(*args)  # loads the modules it needs (rsa)
    gc.collect()
    before = gc.mem_alloc()
    leaf = chain.verify(*args)
    gc.collect()
    kept = gc.mem_alloc() - before
    # The leaf (its fields; the DER is the caller's): 944 bytes on a 32-bit port, 1376 on 64.
    true(kept < 2500, "verify keeps %d bytes besides the leaf" % kept)
    eq(leaf.subject_cn, "iot.example.com", "leaf")
