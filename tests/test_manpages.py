"""The manual pages: generated from the parser and the settings tables, kept current in man/,
and read by groff without a warning."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from cove.completion import verbs
from cove.manpage import PAGES
from cove.settings import CONTAINER_SETTINGS, HOST_SETTINGS

MAN = Path(__file__).resolve().parent.parent / "man"


@pytest.mark.parametrize("section", sorted(PAGES))
def test_the_installed_page_is_the_generated_one(section: str) -> None:
    filename, generate = PAGES[section]
    assert (
        MAN / filename
    ).read_text() == generate(), f"man/{filename} is stale: cove man {section} > man/{filename}"


@pytest.mark.parametrize("section", sorted(PAGES))
def test_groff_reads_it_without_a_warning(section: str) -> None:
    filename, _ = PAGES[section]
    result = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", str(MAN / filename)],
                            capture_output=True, text=True)  # fmt: skip
    assert (result.returncode, result.stderr) == (0, "")


def test_every_verb_and_key_is_in_a_page() -> None:
    text = PAGES["1"][1]().replace("\\-", "-")
    for v in verbs():
        assert f"\\fBcove {v.name}" in text, v.name
    keys = PAGES["5"][1]().replace("\\-", "-")
    for s in (*CONTAINER_SETTINGS, *HOST_SETTINGS):
        assert f"\\fB{s.key}\\fR" in keys, s.key


def test_the_package_installs_them() -> None:
    import zipfile

    from tests.conftest import CACHE
    from tests.testhost import wheel

    [built] = wheel(CACHE).glob("cove-*.whl")
    names = zipfile.ZipFile(built).namelist()
    assert any(n.endswith("data/share/man/man1/cove.1") for n in names)
    assert any(n.endswith("data/share/man/man5/cove.toml.5") for n in names)
