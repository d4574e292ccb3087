"""suitecheck's judgement, on a stand-in runner: a test that fails in the
module's run and passes alone is flaky (a pass); one that fails alone too
fails the module; a module short of its floor fails."""

from __future__ import annotations

import textwrap

import pytest

from suitecheck import check_module

RUNNER = textwrap.dedent('''
    import json, sys
    args = sys.argv[1:]
    module = args[0]
    alone = args[1:] == ["--test", "m.T.test_b"]
    # test_b fails in the module's run; alone it passes when FLAKY is set.
    rows = [("m.T.test_a", "pass")] if not alone else []
    rows.append(("m.T.test_b", "pass" if alone and FLAKY else "fail"))
    counts = {"pass": 0, "fail": 0, "skip": 0, "n/a": 0}
    for tid, status in rows:
        counts[status] += 1
        print(json.dumps({"module": module, "test": tid, "status": status, "why": "boom", "secs": 0}))
    print(json.dumps({"backend": "x", "summary": {module: counts}}))
''')


def runner(tmp_path, flaky: bool) -> list[str]:
    p = tmp_path / "runner.py"
    p.write_text(f"FLAKY = {flaky}\n" + RUNNER)
    return [str(p)]


def test_a_test_that_passes_alone_is_flaky(tmp_path, capsys):
    check_module(runner(tmp_path, True), "m", "x", floor=2)
    assert "flaky: m.T.test_b failed in the module's run (boom) and passed alone" in capsys.readouterr().out


def test_a_test_that_fails_alone_too_fails_the_module(tmp_path):
    with pytest.raises(AssertionError, match=r"not listed in docs/aio_conformance.md: \['m.T.test_b'\]"):
        check_module(runner(tmp_path, False), "m", "x", floor=1)


def test_a_module_short_of_its_floor_fails(tmp_path):
    with pytest.raises(AssertionError, match=r"floor 3 passes"):
        check_module(runner(tmp_path, True), "m", "x", floor=3)
