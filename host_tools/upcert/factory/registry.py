"""The certificate registry the fleet report reads: the local stand-in's, when a cloud lives in
a folder, or AWS IoT's for a region (`fleet report --aws`)."""

from pathlib import Path


def registry(cloud_dir):
    """The Registry of the local stand-in in cloud_dir, or None when there is none."""
    if not (Path(cloud_dir) / "cloud.json").exists():
        return None
    from upcert.cloud.registry import Registry
    from upcert.cloud.standin import Cloud

    return Registry(Cloud.from_state(cloud_dir).registry_path)


class StandinRegistry:
    """The stand-in's registry as the fleet report reads it: its claim certificates (CN
    claim-*, shared by a batch provisioned by claim, no board's identity) left out."""

    source = "local stand-in"
    region = None

    def __init__(self, reg):
        self.reg = reg

    def list(self):
        from upcert.cloud.standin import CLAIM_PREFIX

        return [c for c in self.reg.list() if not (c["thing"] or "").startswith(CLAIM_PREFIX)]


def fleet_registry(cloud_dir):
    """StandinRegistry of the stand-in in cloud_dir, or None when there is none."""
    reg = registry(cloud_dir)
    return None if reg is None else StandinRegistry(reg)


class AwsRegistry:
    """The region's certificates in AWS IoT, as the fleet report reads a registry (list():
    [{cert_id, status, thing, not_after, created}]). The claim certificate `upcert aws setup`
    made is left out: it is on every board provisioned by claim and on none as its identity."""

    source = "AWS IoT"

    def __init__(self, aws, claim_ids=()):
        self.aws, self.claim_ids = aws, set(claim_ids)
        self.region = aws.region

    def list(self):
        from upcert.aws.registry import list_certificates

        return [c for c in list_certificates(self.aws) if c["cert_id"] not in self.claim_ids]


def aws_registry(aws, home):
    """AwsRegistry for aws's region, knowing the claim certificate of `aws setup` when its
    settings are in home."""
    import json

    path = Path(home) / "aws" / aws.region / "aws.json"
    claim = None
    if path.exists():
        claim = json.loads(path.read_text()).get("claim", {}).get("certificate_id")
    return AwsRegistry(aws, [claim] if claim else [])
