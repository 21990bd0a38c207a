#!/usr/bin/env python3
"""A CycloneDX 1.5 SBOM for one pushed container image, from what is in it.

usage: image_sbom.py IMAGE@DIGEST BINARY_SBOM_DIR > OUT.cdx.json

No image scanner installs here, so the SBOM is put together from the image itself:
its Debian packages (dpkg's status file, when the image has one; else the list the
image's build wrote to /usr/share/flowforge/debian-packages of the packages it copied
files from) and, for each program
in /usr/local/bin that FlowForge builds, the crates compiled into it (cargo-cyclonedx's
SBOM of that binary, in BINARY_SBOM_DIR). Each component keeps a package URL, so any
vulnerability database can be matched against the file later.
"""

import io
import json
import subprocess
import sys
import tarfile
import uuid
from datetime import datetime, timezone
from pathlib import Path


def docker(*args: str) -> bytes:
    return subprocess.run(["docker", *args], check=True, capture_output=True).stdout


def copy_out(container: str, path: str) -> tarfile.TarFile | None:
    """PATH from the stopped container, as the tar stream `docker cp` gives; None if absent."""
    out = subprocess.run(["docker", "cp", f"{container}:{path}", "-"], capture_output=True)
    return tarfile.open(fileobj=io.BytesIO(out.stdout)) if out.returncode == 0 else None


def debian_package(name: str, version: str, arch: str) -> dict:
    return {
        "type": "library",
        "bom-ref": f"deb:{name}@{version}",
        "name": name,
        "version": version,
        "purl": f"pkg:deb/debian/{name}@{version}?arch={arch}&distro=debian-12",
    }


def dpkg_status(status: str) -> list[dict]:
    """The installed packages in dpkg's status file."""
    packages = []
    for stanza in status.split("\n\n"):
        fields = {}
        for line in stanza.splitlines():
            if line and not line[0].isspace() and ":" in line:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        if "installed" in fields.get("Status", "") and "Package" in fields:
            packages.append(debian_package(fields["Package"], fields.get("Version", ""), fields.get("Architecture", "")))
    return packages


def package_lists(archive: tarfile.TarFile) -> list[dict]:
    """Lines of `PACKAGE VERSION ARCH` (dpkg-query's output at build time)."""
    packages = {}
    for member in archive.getmembers():
        if member.isfile():
            for line in archive.extractfile(member).read().decode().splitlines():
                if len(fields := line.split()) == 3:
                    packages[fields[0]] = debian_package(*fields)
    return list(packages.values())


def crates(binary: str, sbom_dir: Path) -> list[dict]:
    """The crates in one of FlowForge's binaries, from cargo-cyclonedx's SBOM of it."""
    for candidate in sorted(sbom_dir.glob(f"{binary}_bin.cdx.json")):
        components = json.loads(candidate.read_text()).get("components", [])
        for c in components:
            # Refs unique within this document: two binaries share most crates.
            c["bom-ref"] = f"{binary}:{c.get('bom-ref', c.get('purl', c['name']))}"
            c.pop("dependencies", None)
        return components
    return []


def main() -> None:
    reference, sbom_dir = sys.argv[1], Path(sys.argv[2])
    name, _, digest = reference.partition("@")
    info = json.loads(docker("image", "inspect", reference))[0]
    labels = info["Config"].get("Labels") or {}
    container = docker("create", reference, "sbom").decode().strip()
    try:
        components = []
        status = copy_out(container, "/var/lib/dpkg/status")
        if status:
            components += dpkg_status(status.extractfile(status.getmembers()[0]).read().decode())
        elif lists := copy_out(container, "/usr/share/flowforge/debian-packages"):
            components += package_lists(lists)
        binaries = copy_out(container, "/usr/local/bin")
        if binaries:
            for member in binaries.getmembers():
                components += crates(Path(member.name).name, sbom_dir)
    finally:
        docker("rm", container)
    repository = name.rsplit("/", 1)
    bom = {
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": f"urn:uuid:{uuid.uuid4()}",
        "version": 1,
        "metadata": {
            "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "tools": {"components": [{"type": "application", "name": "flowforge image_sbom.py"}]},
            "component": {
                "type": "container",
                "bom-ref": reference,
                "name": repository[-1],
                "version": labels.get("org.opencontainers.image.version", ""),
                "hashes": [{"alg": "SHA-256", "content": digest.removeprefix("sha256:")}],
                "purl": f"pkg:oci/{repository[-1]}@{digest.replace(':', '%3A')}?repository_url={name}",
                "properties": [{"name": f"label:{k}", "value": v} for k, v in sorted(labels.items())],
            },
        },
        "components": components,
    }
    json.dump(bom, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
