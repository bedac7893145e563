"""The local stand-in's certificate registry, when a cloud lives in a folder."""

from pathlib import Path


def registry(cloud_dir):
    """The Registry of the local stand-in in cloud_dir, or None when there is none."""
    if not (Path(cloud_dir) / "cloud.json").exists():
        return None
    from upcert.cloud.registry import Registry
    from upcert.cloud.standin import Cloud

    return Registry(Cloud.from_state(cloud_dir).registry_path)
