"""The pytest plugin as a suite outside this repository meets it (no VM).

pytester runs pytest in a temporary directory with no ini file, so nothing of
this repository's pyproject.toml is seen: only what the plugin registers itself.
"""

import pytest

SUITE = """
import pytest

@pytest.mark.vm
def test_marked_by_hand():
    pass

@pytest.mark.build
def test_marked_build():
    pass

def test_needs_a_guest(guest):
    raise AssertionError("deselected: must never run")
"""


def test_markers_work_under_strict_markers(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_outside=SUITE)
    result = pytester.runpytest("--strict-markers", "-m", "not vm", "--arch", "x86_64",
                                "--kernel", "debian:5.10")
    result.assert_outcomes(passed=1, deselected=2)
    assert "not found in `markers`" not in result.stdout.str() + result.stderr.str()


def test_plugin_marks_guest_tests_vm(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_outside=SUITE)
    result = pytester.runpytest("--strict-markers", "--collect-only", "-q", "-m", "vm",
                                "--arch", "x86_64", "--kernel", "debian:5.10")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["*test_marked_by_hand",
                                 "*test_needs_a_guest[[]x86_64-debian:5.10[]]"])


def test_markers_are_listed(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.vm: boots a real kernel*",
                                 "@pytest.mark.build: builds real kernels*"])


def test_run_scenario_is_offered(pytester: pytest.Pytester) -> None:
    """A user's suite gets the fixture that runs any scenario as ``harness run`` does."""
    result = pytester.runpytest("--fixtures")
    result.stdout.fnmatch_lines(["run_scenario*", "*Factory: run a scenario*"])
