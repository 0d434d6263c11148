"""cove doctor's pure parts, on a card directory of the test's own."""

from __future__ import annotations

import marshal
from pathlib import Path

import pytest

from cove import quickstart
from cove.doctor import Doctor
from cove.model import Config


def test_launch_cards_of_files_that_are_gone_are_leftovers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cards = tmp_path / "cards"
    cards.mkdir()
    monkeypatch.setattr(quickstart, "CARD_DIR", str(cards))
    present = tmp_path / "present.toml"
    present.write_text("")
    kept = Path(quickstart.card_path(str(present), "kept"))
    kept.write_bytes(marshal.dumps({"config": str(present), "name": "kept"}))
    (cards / "bbbb0000-gone").write_bytes(marshal.dumps({"config": "/no/such/cove.toml",
                                                         "name": "gone"}))  # fmt: skip
    (cards / "cccc0000-junk").write_bytes(b"not a card")
    # A card of a present file under another name than cove looks for (an older naming).
    (cards / "dddd0000-old").write_bytes(marshal.dumps({"config": str(present), "name": "old"}))
    doctor = Doctor(Config(path=str(present)), backend=None, facts=None)  # type: ignore[arg-type]
    found = doctor._cards()
    names = sorted(Path(f.what).name for f in found)
    assert names == ["bbbb0000-gone", "cccc0000-junk", "dddd0000-old"]
    doctor.fix(found)
    assert [p.name for p in cards.iterdir()] == [kept.name]
