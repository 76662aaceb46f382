"""`harness run`, `harness boot`, the library and the pytest plugin share their defaults."""

import inspect

import pytest

from harness import defaults
from harness.check.target import TargetOptions
from harness.cli import build_parser
from harness.pytest_plugin import matrix
from harness.vm.boot import boot_guest


def test_the_clis_take_the_shared_defaults() -> None:
    parser = build_parser()
    run = parser.parse_args(["run"])
    boot = parser.parse_args(["boot", "--arch", "x86_64"])
    assert (run.target, run.transport, run.memory) == (
        defaults.TARGET, defaults.TRANSPORT, defaults.MEMORY_MIB)
    assert boot.memory == defaults.MEMORY_MIB


def test_the_library_takes_the_shared_defaults() -> None:
    options = TargetOptions()
    assert (options.target, options.transport, options.memory_mib) == (
        defaults.TARGET, defaults.TRANSPORT, defaults.MEMORY_MIB)
    parameters = inspect.signature(boot_guest).parameters
    assert parameters["transport"].default == defaults.TRANSPORT
    assert parameters["memory_mib"].default == defaults.MEMORY_MIB


def test_the_plugin_takes_the_shared_defaults(pytester: pytest.Pytester) -> None:
    config = pytester.parseconfig()
    assert config.getoption("--target") == defaults.TARGET
    assert config.getoption("--transport") == defaults.TRANSPORT
    assert [(cell.arch, cell.kernel) for cell in matrix(config)] == [
        (arch, kernel) for kernel in defaults.KERNELS for arch in defaults.ARCHES]
