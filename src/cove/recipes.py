"""Recipe images (`image = "debian:bookworm"` plus `packages`): their identity, which names
their entry in the image store. Pure; the build itself belongs to the image store."""

from __future__ import annotations

import hashlib
import json
import re

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
