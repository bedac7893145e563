# Test vectors made once with pyca/cryptography (see tests/host/test_x509_vs_cryptography.py for
# the generated, compared-in-bulk checks). Public test certificates only; no private keys.
from binascii import a2b_base64

EC_DER = a2b_base64(
    "MIIBPDCB46ADAgECAgYSNKvNVngwCgYIKoZIzj0EAwIwKjEPMA0GA1UECgwGdXBjZXJ0MRcwFQYDVQQDDA51cGNl"
    "cnQgdGVzdCBDQTAeFw0yNjAxMDEwMDAwMDBaFw00OTEyMzEyMzU5NTlaMA8xDTALBgNVBAMMBGRldjEwWTATBgcq"
    "hkjOPQIBBggqhkjOPQMBBwNCAAT3JLii3POIn5btS/7qrZn94cyFaRhjA0Tmr8x5LRxAccXI1U9B8kaV3npRUZFl"
    "NyXobh37082eBnXSa1cXM0S0oxAwDjAMBgNVHRMBAf8EAjAAMAoGCCqGSM49BAMCA0gAMEUCIQDcwZqly/44tHX/"
    "X72JLXvTMjkg7l1uY4jx0G1ADIxqJwIgTUJiTfzGyvdIRZSFyTltlpSe/b5z5hfDS+NMZ45Eels="
)
EC_EXPECT = {
    "serial": "1234abcd5678",
    "subject_cn": "dev1",
    "issuer_cn": "upcert test CA",
    "not_before_tuple": (2026, 1, 1, 0, 0, 0),
    "not_after_tuple": (2049, 12, 31, 23, 59, 59),
    "not_after_unix": 2524607999,
    "key_type": "EC",
    "key_bits": 256,
    "public_key_sha256": "5c1d5e7f5d962800891a5543b77a6a94f576b6beaa8db421c30b11bb591d7fde",
    "sig_alg": "ECDSA-WITH-SHA256",
    "cert_id": "954ae69b4763ca7ad96eb0071f6bf62e9ce6d6fed27b3780127c9d704aaf85eb",
}

RSA_DER = a2b_base64(
    "MIICwjCCAaqgAwIBAgIBBzANBgkqhkiG9w0BAQwFADAjMQ8wDQYDVQQKDAZ1cGNlcnQxEDAOBgNVBAMMB3JzYS1k"
    "ZXYwIBcNOTkwNjMwMTIwMDAwWhgPMjA1MTAzMDQwNTA2MDdaMBIxEDAOBgNVBAMMB3JzYS1kZXYwggEiMA0GCSqG"
    "SIb3DQEBAQUAA4IBDwAwggEKAoIBAQC9tFRXIPy4K0OMkw7wjke81mxIwlIjYG2yEqqxv9jH4N/x4L6/V7lnXBbu"
    "HjRkOPYYNpMIG8nXa6jA2KKbBJjvPuTRQN3JSe1aw/0rSl5e80XCKNomn7DzyEeSKgByCWHWctE3wOYj3FvoFr0Z"
    "UgrCzwxT5btsO3Gq2X/cIA8+wXHGyUFqO4naZDF8ahPTbTbe2yuvqEfNPRA4u8lLVpD5JeGMiAoBYK7CK8w9Xddz"
    "8ijFvZSPsfPCiIayYMQVueiGz2u7N+tQaokPxLTCHPZRotv+czVHVpJvtV4tlTEAnU5sMRaHjskE3Rn4GXO6QeQX"
    "NlmI8LP9Ti2tioTLcs1FAgMBAAGjEDAOMAwGA1UdEwEB/wQCMAAwDQYJKoZIhvcNAQEMBQADggEBAJZSVLURavHr"
    "t5i26kJQ0iPvdFj3ugOGIocT5VNC2Mc/wczvXzQ9gu0/tJ0HRsoSpUitzhczKqfB/rZWKP13DjmqYej+XHmBQJtQ"
    "xzNLcTYX4loG+BxrfATVbzitG0/sdiOpS9d01npM3PWBo+s7J154WqioqH7I9tLRoX8Y03F3BtBTjCc+Xt7wYXns"
    "7vtXAp2GsNEqXbwX9G+vXsA4mxypffOvXTxEjJ8cg79C9x3JxydSo4WmCtW/Lvr34+ksinDJrLNtGynLk+rhceLu"
    "gBNpKrPfoi6S7logSXpEBHpikjEZxq/z+411f4Z8pcJ/1SJxpMIZ1mYeUfbZ1sxKQK0="
)
RSA_EXPECT = {
    "serial": "7",
    "subject_cn": "rsa-dev",
    "issuer_cn": "rsa-dev",
    "not_before_tuple": (1999, 6, 30, 12, 0, 0),
    "not_after_tuple": (2051, 3, 4, 5, 6, 7),
    "not_after_unix": 2561519167,
    "key_type": "RSA",
    "key_bits": 2048,
    "public_key_sha256": "a9eb7dcf2637d9e1718ca48365732a7b52e7ab9f6206d7610150b1c0bf1fe8ab",
    "sig_alg": "SHA384WITHRSA",
    "cert_id": "7ef63cee4a369219bec4d8c92b3303c8073e7eac9bd1bd7571d50fde38bbe3d0",
}
