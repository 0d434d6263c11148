"""Recipe images (`image = "debian:bookworm"` plus `packages`): their identity, which names
their entry in the image store. Pure; the build itself belongs to the image store."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

RECIPE_VERSION = 1  # bump when the way an image is built changes what it contains
VARIANT = "minbase"
MIRRORS = {
    "debian": "http://deb.debian.org/debian",
    "ubuntu": "http://archive.ubuntu.com/ubuntu",
}
RECIPE = re.compile(r"^(?P<distro>[a-z]+):(?P<suite>[a-z][a-z0-9-]*)$")
PACKAGE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")  # Debian policy 5.6.1


def parse_recipe(image: str) -> tuple[str, str] | None:
    """(distribution, suite) when `image` names a recipe cove knows, else None."""
    match = RECIPE.match(image)
    if match is None or match["distro"] not in MIRRORS:
        return None
    return match["distro"], match["suite"]


def identity(distro: str, suite: str, packages: tuple[str, ...], mirror: str | None = None) -> str:
    """The store name of a recipe image: everything that decides its content, hashed."""
    import hashlib

    recipe = {
        "recipe-version": RECIPE_VERSION,
        "distribution": distro,
        "suite": suite,
        "variant": VARIANT,
        "packages": sorted(set(packages)),
        "mirror": mirror or MIRRORS[distro],
    }
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()
    return f"{distro}-{suite}-{digest[:16]}"


# What a system container needs beyond minbase: an init, and D-Bus for machined and logind.
BASE_PACKAGES = ("systemd", "systemd-sysv", "dbus")
KEYRINGS = {
    "debian": "/usr/share/keyrings/debian-archive-keyring.gpg",
    "ubuntu": "/usr/share/keyrings/ubuntu-archive-keyring.gpg",
}


@dataclass(frozen=True)
class Recipe:
    distro: str
    suite: str
    packages: tuple[str, ...]
    mirror: str

    @property
    def identity(self) -> str:
        return identity(self.distro, self.suite, self.packages, self.mirror)

    @property
    def label(self) -> str:
        extra = f" + {', '.join(sorted(set(self.packages)))}" if self.packages else ""
        return f"{self.distro}:{self.suite}{extra}"

    def debootstrap_argv(self, target: str) -> list[str]:
        """The build command (run with a scrubbed environment, as root)."""
        include = ",".join(sorted({*BASE_PACKAGES, *self.packages}))
        return [
            "debootstrap",
            f"--variant={VARIANT}",
            f"--include={include}",
            f"--keyring={KEYRINGS[self.distro]}",
            self.suite,
            target,
            self.mirror,
        ]


def recipe_of(image: str, packages: tuple[str, ...], mirrors: dict[str, str]) -> Recipe | None:
    parsed = parse_recipe(image)
    if parsed is None:
        return None
    distro, suite = parsed
    return Recipe(distro, suite, packages, mirrors.get(distro) or MIRRORS[distro])
