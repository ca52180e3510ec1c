"""Every deliberate breakage in tests/mutants.py still matches the code it breaks, and every
test it names still exists: a refactor that moves the text or renames the test would otherwise
drop a guard without a sound (running the mutants takes minutes, CI does it after the tests;
checking that each still applies takes milliseconds)."""

import re
from pathlib import Path

import pytest
from mutants import MUTANTS, ROOT, file_of

TESTS = Path(__file__).parent


@pytest.mark.parametrize("mutant", MUTANTS, ids=lambda m: m.name)
def test_each_mutant_still_applies_exactly_once(mutant):
    mutated: dict[str, str] = {}
    for path, old, new in mutant.edits:
        text = mutated.get(path) or (ROOT / path).read_text()
        count = text.count(old)
        assert count == 1, f"{mutant.name}: {path} holds its text {count} times; update it"
        mutated[path] = text.replace(old, new)
    for path, text in mutated.items():
        # a mutant that does not compile fails every test: "caught" while proving nothing
        compile(text, f"{path} ({mutant.name})", "exec")
    assert mutant.tests, f"{mutant.name} names no test"
    for test in mutant.tests:
        path = TESTS / file_of(test)
        assert path.exists(), f"{mutant.name}: no tests/{file_of(test)}"
        if "::" in test:  # file.py::test_name[params]: the function must still be defined
            name = test.split("::")[1].split("[")[0]
            assert re.search(rf"^def {name}\(", path.read_text(), re.M), (
                f"{mutant.name}: tests/{file_of(test)} defines no {name}"
            )


def test_mutant_names_are_unique():
    names = [m.name for m in MUTANTS]
    assert len(names) == len(set(names))
