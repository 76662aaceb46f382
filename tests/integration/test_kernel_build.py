"""Real kernel builds (minutes each when cold, a cache hit afterwards).

The matrix is the plugin's arch x kernel cell (--kernel/--arch, default:
Debian 5.10 and 6.1 for x86_64 and arm64), e.g.
``pytest -m build --kernel /path/to/linux-4.8.15 --arch arm64``.
"""

import subprocess
import time
from pathlib import Path

import pytest

from harness.errors import HarnessError
from harness.kernel.build import BuildPlan, build_kernel, plan_build, srcarch
from harness.kernel.config import (
    Fragment,
    configure,
    parse_dotconfig,
    parse_fragment,
    resolve_fragments,
)
from harness.kernel.module_fixups import apply_module_fixups
from harness.kernel.source import tree_fingerprint
from harness.pytest_plugin import Cell, cell_fragments

pytestmark = pytest.mark.build

REQUIRED = ("COMPACTION", "MIGRATION", "MODULES", "VM_EVENT_COUNTERS")
EXTRAS = ("zram", "balloon", "hugetlb", "debug")

HELLO = """\
#include <linux/module.h>
#include <linux/kernel.h>
static int __init hello_init(void) { printk(KERN_INFO "hello\\n"); return 0; }
static void __exit hello_exit(void) { }
module_init(hello_init);
module_exit(hello_exit);
MODULE_LICENSE("GPL");
"""


@pytest.fixture
def spec(harness_cell: Cell) -> str:
    return harness_cell.kernel


@pytest.fixture
def arch(harness_cell: Cell) -> str:
    return harness_cell.arch


@pytest.fixture
def fragments(pytestconfig: pytest.Config) -> tuple[str, ...]:
    """The cell kernel's fragments, so these tests build (or hit) the suite's kernel."""
    return cell_fragments(pytestconfig)


def test_build_keeps_options_and_second_call_is_a_hit(spec: str, arch: str,
                                                      fragments: tuple[str, ...]) -> None:
    plan = plan_build(spec, arch, fragments)
    before = tree_fingerprint(plan.source.path)
    build = build_kernel(spec, arch, fragments)
    assert tree_fingerprint(plan.source.path) == before, "the build wrote into the source"
    config = parse_dotconfig(build.config.read_text())
    for symbol in REQUIRED:
        assert config.get(symbol) == "y", f"CONFIG_{symbol} is {config.get(symbol)}"
    assert build.image.stat().st_size > 500_000
    assert build.release.startswith(".".join(map(str, build.version[:2])))

    started = time.monotonic()
    again = build_kernel(spec, arch, fragments)
    assert again.cached and time.monotonic() - started < 2.0
    assert (again.image, again.release) == (build.image, build.release)


def test_module_builds_against_the_cached_tree(spec: str, arch: str,
                                              fragments: tuple[str, ...], tmp_path: Path) -> None:
    build = build_kernel(spec, arch, fragments)
    (tmp_path / "hello.c").write_text(HELLO)
    (tmp_path / "Kbuild").write_text("obj-m := hello.o\n")
    done = subprocess.run(["make", "-C", str(build.build_dir), f"M={tmp_path}",
                           *build.make_args], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    module = tmp_path / "hello.ko"
    apply_module_fixups(module, build.module_fixups)
    if "x86_64_plt32_to_pc32" in build.module_fixups:
        relocations = subprocess.run(["readelf", "-rW", str(module)], capture_output=True,
                                     text=True, check=True).stdout
        assert "R_X86_64_PLT32" not in relocations


def _configure_only(plan: BuildPlan, out: Path, fragments: list[Fragment]) -> dict[str, str]:
    """tinyconfig + fragments + olddefconfig for ``plan`` in ``out`` (no compile)."""
    out.mkdir()
    with (out / "config.log").open("w") as log:
        def make(targets: object, status: object = None) -> None:
            subprocess.run(["make", "-C", str(plan.source.path), f"O={out}", *plan.make_args,
                            *targets], check=True, stdout=log, stderr=subprocess.STDOUT)  # type: ignore[misc]

        configure(plan.source.path, out, srcarch(plan.arch), make, fragments, log)
    return parse_dotconfig((out / ".config").read_text())


def test_every_shipped_fragment_survives(spec: str, arch: str, tmp_path: Path) -> None:
    plan = plan_build(spec, arch, EXTRAS)
    config = _configure_only(plan, tmp_path / "o", list(plan.fragments))
    # Balloon migration is BALLOON_COMPACTION before 7.0, BALLOON_MIGRATION after.
    for names in (("ZRAM",), ("ZSMALLOC",), ("BALLOON_COMPACTION", "BALLOON_MIGRATION"),
                  ("HUGETLBFS",), ("DEBUG_VM",), ("KASAN",), ("SMP",), ("DETECT_HUNG_TASK",)):
        assert any(config.get(name) == "y" for name in names), (
            f"none of CONFIG_{names} is y: {[config.get(name) for name in names]}")
    assert not list(plan.source.path.glob(".tmp.config*")), "merge_config.sh wrote into the tree"


def test_dropped_option_is_named_by_the_real_kconfig(
    spec: str, arch: str, tmp_path: Path
) -> None:
    plan = plan_build(spec, arch)
    broken = tmp_path / "broken.config"
    broken.write_text("# CONFIG_PCI is not set\nCONFIG_VIRTIO_PCI=y\n")
    fragments = [*resolve_fragments(arch),
                 Fragment(str(broken), broken, parse_fragment(broken.read_text(), "broken"))]
    with pytest.raises(HarnessError, match=r"CONFIG_VIRTIO_PCI wanted y, got not set "
                                           r"\(unmet dependency: [^)]*PCI"):
        _configure_only(plan, tmp_path / "o", fragments)


@pytest.mark.needs_program("ccache")
def test_ccache_is_used(spec: str, arch: str, fragments: tuple[str, ...]) -> None:
    build = build_kernel(spec, arch, fragments)
    log = (build.build_dir.parent / "build.log").read_text()
    assert "CC=ccache " in log
