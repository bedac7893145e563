# Certificate signature algorithms (RFC 4055, RFC 5758 §3) -> the names AWS IoT accepts (AWS IoT
# Developer Guide, "X.509 client certificates"). The one table: x509.py and the checks of an
# issued certificate (rotate.py, claim.py) import it, the host reads it from this file
# (host_tools/upcert/pki/algorithms.py). Not loaded for a TLS handshake.
SIG_ALGS = {
    "1.2.840.113549.1.1.11": "SHA256WITHRSA",
    "1.2.840.113549.1.1.12": "SHA384WITHRSA",
    "1.2.840.113549.1.1.13": "SHA512WITHRSA",
    "1.2.840.113549.1.1.10": "RSASSAPSS",
    "2.16.840.1.101.3.4.3.2": "DSA_WITH_SHA256",
    "1.2.840.10045.4.3.2": "ECDSA-WITH-SHA256",
    "1.2.840.10045.4.3.3": "ECDSA-WITH-SHA384",
    "1.2.840.10045.4.3.4": "ECDSA-WITH-SHA512",
}
