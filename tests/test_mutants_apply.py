"""Every deliberate breakage in tests/mutants.py still matches the code it breaks: a refactor
that moves the text would otherwise drop a guard without a sound (running the mutants takes
minutes; checking that each still applies takes milliseconds)."""

from pathlib import Path

import pytest
from mutants import MUTANTS, ROOT


@pytest.mark.parametrize("mutant", MUTANTS, ids=lambda m: m.name)
def test_each_mutant_still_applies_exactly_once(mutant):
    for path, old, _new in mutant.edits:
        count = (ROOT / path).read_text().count(old)
        assert count == 1, f"{mutant.name}: {path} holds its text {count} times; update it"
    for name in mutant.tests:
        assert (Path(__file__).parent / name).exists(), f"{mutant.name}: no tests/{name}"
