"""The module build stage against fake kernel trees: API probe, refusal, cache, errors,
and forks of the driver (``source_dir``, ``harness run --driver-source``).

The fake build directory's Makefile stands in for Kbuild (records how it was
called and writes a .ko), so these tests check the stage's own logic without
a kernel; tests/integration/test_driver.py builds against real ones.
"""

import shutil
from pathlib import Path

import pytest

from harness import cli, module
from harness.artifacts import KernelBuild
from harness.errors import HarnessError

AOPS_FS_H = """struct address_space_operations {
	int (*migratepage) (struct address_space *,
			struct page *, struct page *, enum migrate_mode);
	bool (*isolate_page)(struct page *, isolate_mode_t);
	void (*putback_page)(struct page *);
};
"""
AOPS_MIGRATE_H = """extern void __SetPageMovable(struct page *page, struct address_space *mapping);
extern void __ClearPageMovable(struct page *page);
"""
OPS_MIGRATE_H = """struct movable_operations {
	bool (*isolate_page)(struct page *, isolate_mode_t);
};
void __SetPageMovable(struct page *page, const struct movable_operations *ops);
void __ClearPageMovable(struct page *page);
"""
REMOVED_MIGRATE_H = """struct movable_operations {
	bool (*isolate_page)(struct page *, isolate_mode_t);
};
int set_movable_ops(const struct movable_operations *ops, enum pagetype type);
"""
# 7.2's include/linux/balloon.h (6.17 .. 6.x: the same in balloon_compaction.h).
BALLOON_H = """struct balloon_dev_info {
	int (*migratepage)(struct balloon_dev_info *, struct page *newpage,
			struct page *page, enum migrate_mode mode);
};
void balloon_page_enqueue(struct balloon_dev_info *b_dev_info,
		struct page *page);
"""
MODE_H = "enum migrate_mode {\n\tMIGRATE_SYNC,\n\tMIGRATE_SYNC_NO_COPY,\n};\n"

GOOD_MAKEFILE = """modules:
\t@echo "$(M) $(ARCH)" >> $(CURDIR)/calls
\t@echo "  CC [M]  $(M)/movable_sample.o"
\t@printf 'fake module' > $(M)/movable_sample.ko
"""
BAD_MAKEFILE = """modules:
\t@echo "$(M)/movable_sample.c:12:1: error: unknown type name 'isolate_mode_t'"
\t@exit 2
"""


def fake_tree(root: Path, headers: dict[str, str]) -> Path:
    """A kernel source tree holding only the named include/linux headers."""
    include = root / "src" / "include" / "linux"
    include.mkdir(parents=True)
    for name, text in headers.items():
        (include / name).write_text(text)
    return root / "src"


def fake_kernel(root: Path, headers: dict[str, str], makefile: str = GOOD_MAKEFILE,
                fixups: tuple[str, ...] = ()) -> KernelBuild:
    """An O= build directory linking a fake source tree, as the build stage leaves it."""
    src = fake_tree(root, headers)
    build = root / "build"
    build.mkdir()
    (build / "source").symlink_to(src)
    (build / "Makefile").write_text(makefile)
    (build / ".config").write_text("CONFIG_COMPACTION=y\n")
    return KernelBuild(
        arch="x86_64", spec="tests:fake", release="4.8.15", version=(4, 8, 15),
        image=build / "bzImage", build_dir=build, config=build / ".config",
        system_map=build / "System.map", make_args=("ARCH=x86_64",),
        module_fixups=fixups, cached=False, seconds=0.0,
    )


AOPS = {"fs.h": AOPS_FS_H, "migrate.h": AOPS_MIGRATE_H}


def test_probe_names_each_era_by_its_headers(tmp_path: Path) -> None:
    eras = {
        "aops": ({"fs.h": AOPS_FS_H, "migrate.h": AOPS_MIGRATE_H}, "MS_API_AOPS"),
        "ops": ({"fs.h": "", "migrate.h": OPS_MIGRATE_H, "migrate_mode.h": MODE_H},
                "MS_API_MOVABLE_OPS"),
        "removed": ({"fs.h": "", "migrate.h": REMOVED_MIGRATE_H}, "MS_API_REMOVED"),
        "balloon": ({"fs.h": "", "migrate.h": REMOVED_MIGRATE_H, "balloon.h": BALLOON_H},
                    "MS_API_BALLOON"),
        "balloon-6.x": ({"fs.h": "", "migrate.h": REMOVED_MIGRATE_H,
                         "balloon_compaction.h": BALLOON_H}, "MS_API_BALLOON"),
        "old": ({"fs.h": "struct address_space_operations {};\n", "migrate.h": ""},
                "MS_API_NONE"),
    }
    for name, (headers, api) in eras.items():
        assert module.probe_api(fake_tree(tmp_path / name, headers)).api == api, name
    ops = module.probe_api(tmp_path / "ops" / "src")
    assert ops.flags == ("MS_HAVE_MIGRATE_SYNC_NO_COPY",)
    assert module.probe_api(tmp_path / "aops" / "src").flags == ()
    # The header moved in 7.0; the driver includes whichever the probe found.
    assert module.probe_api(tmp_path / "balloon" / "src").flags == ("MS_HAVE_BALLOON_H",)
    assert module.probe_api(tmp_path / "balloon-6.x" / "src").flags == ()


def test_probe_finds_kmap_local_page_in_any_highmem_header(tmp_path: Path) -> None:
    tree = fake_tree(tmp_path, {"migrate.h": OPS_MIGRATE_H,
                                "highmem-internal.h": "static inline void *kmap_local_page("})
    assert "MS_HAVE_KMAP_LOCAL_PAGE" in module.probe_api(tree).flags


def test_removed_api_is_refused_before_building_and_points_at_in_tree_scenarios(
        tmp_path: Path, isolated_cache: Path) -> None:
    kernel = fake_kernel(tmp_path, {"migrate.h": REMOVED_MIGRATE_H})
    with pytest.raises(HarnessError) as caught:
        module.build_module(kernel)
    message = str(caught.value)
    assert "6.17" in message and "zram" in message and "balloon API" in message
    assert "\n" not in message
    assert not (kernel.build_dir / "calls").exists()


def test_kernel_without_the_api_is_refused(tmp_path: Path, isolated_cache: Path) -> None:
    kernel = fake_kernel(tmp_path, {"migrate.h": "", "fs.h": ""})
    with pytest.raises(HarnessError, match="4.8 or later"):
        module.build_module(kernel)


def test_build_dir_without_headers_says_to_rebuild(tmp_path: Path, isolated_cache: Path) -> None:
    kernel = fake_kernel(tmp_path, AOPS)
    shutil.rmtree(tmp_path / "src" / "include")
    with pytest.raises(HarnessError, match="harness build"):
        module.build_module(kernel)


def test_build_happens_in_the_cache_and_is_reused(tmp_path: Path, isolated_cache: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    applied: list[tuple[str, tuple[str, ...]]] = []
    monkeypatch.setattr(module, "apply_module_fixups",
                        lambda ko, fixups: applied.append((ko.name, fixups)))
    kernel = fake_kernel(tmp_path, AOPS, fixups=("x86_64_plt32_to_pc32",))

    first = module.build_module(kernel)
    assert first.path.read_bytes() == b"fake module"
    assert first.name == "movable_sample"
    assert first.movable_api == "aops"
    assert first.kernel_release == "4.8.15"
    assert applied == [("movable_sample.ko", ("x86_64_plt32_to_pc32",))]
    calls = (kernel.build_dir / "calls").read_text().splitlines()
    module_dir, arch = calls[0].split()
    assert Path(module_dir).is_relative_to(isolated_cache)
    assert arch == "x86_64"
    assert not list(module.module_source_dir().glob("*.ko"))
    assert not (first.path.parent / "build").exists()

    again = module.build_module(kernel)
    assert again == first
    assert len((kernel.build_dir / "calls").read_text().splitlines()) == 1

    module.build_module(kernel, force=True)
    assert len((kernel.build_dir / "calls").read_text().splitlines()) == 2


def test_new_kernel_config_misses_the_cache(tmp_path: Path, isolated_cache: Path) -> None:
    kernel = fake_kernel(tmp_path, AOPS)
    first = module.build_module(kernel)
    kernel.config.write_text("CONFIG_COMPACTION=y\nCONFIG_DEBUG_VM=y\n")
    second = module.build_module(kernel)
    assert second.path != first.path
    assert len((kernel.build_dir / "calls").read_text().splitlines()) == 2


def test_source_digest_follows_sources_not_build_products(tmp_path: Path) -> None:
    source = tmp_path / "guest-modules"
    shutil.copytree(module.module_source_dir(), source)
    before = module.source_digest(source)
    (source / "movable_sample.o").write_bytes(b"object")
    (source / ".movable_sample.o.cmd").write_text("cmd")
    assert module.source_digest(source) == before
    (source / "movable_sample.c").write_text("/* changed */\n")
    assert module.source_digest(source) != before


def test_failed_build_is_one_line_with_the_error_and_the_log(
        tmp_path: Path, isolated_cache: Path) -> None:
    kernel = fake_kernel(tmp_path, AOPS, makefile=BAD_MAKEFILE)
    with pytest.raises(HarnessError) as caught:
        module.build_module(kernel)
    message = str(caught.value)
    assert "error: unknown type name 'isolate_mode_t'" in message
    assert "\n" not in message
    log = Path(message.rsplit("log: ", 1)[1])
    assert log.is_file() and "isolate_mode_t" in log.read_text()
    entries = isolated_cache / module.CACHE_KIND
    assert not entries.exists() or not any(entries.iterdir())


def test_a_fork_is_built_from_its_own_source_into_its_own_entry(
        tmp_path: Path, isolated_cache: Path) -> None:
    kernel = fake_kernel(tmp_path, AOPS)
    fork = tmp_path / "fork"
    shutil.copytree(module.module_source_dir(), fork)
    with (fork / "movable_sample.c").open("a") as source:
        source.write("/* a fork */\n")
    shipped = module.build_module(kernel)
    forked = module.build_module(kernel, source_dir=fork)
    assert forked.path != shipped.path
    assert module.build_module(kernel, source_dir=fork) == forked
    built_in = [Path(line.split()[0]) for line in
                (kernel.build_dir / "calls").read_text().splitlines()]
    assert len(built_in) == 2 and built_in[1].is_relative_to(isolated_cache)
    assert not list(fork.glob("*.ko"))


NOT_A_DIRECTORY = "is not a directory"
NO_FORK = ("has no Kbuild, probe-api.sh, movable_sample.c: it must be a fork of "
           "guest-modules/ (Kbuild, probe-api.sh, movable_sample.c)")


@pytest.mark.parametrize("kind,message", [("missing", NOT_A_DIRECTORY),
                                          ("file", NOT_A_DIRECTORY),
                                          ("empty directory", NO_FORK)])
def test_harness_run_refuses_a_driver_source_that_is_no_fork_in_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        kind: str, message: str) -> None:
    """Refused before any kernel is built, as a harness error (exit 2), not a verdict."""
    from harness.check import runner

    def prepare(*args: object, **kwargs: object) -> None:
        raise AssertionError("a kernel was built before the driver source was checked")

    monkeypatch.setattr(runner, "prepare", prepare)
    monkeypatch.setenv("HARNESS_RUNS_DIR", str(tmp_path / "runs"))
    source = tmp_path / "driver"
    if kind == "file":
        source.write_text("")
    elif kind == "empty directory":
        source.mkdir()
    status = cli.main(["run", "--arch", "x86_64", "--kernel", "/src/linux",
                       "--driver-source", str(source)])
    assert status == 2
    assert capsys.readouterr().err == f"harness: error: driver source {source} {message}\n"


def test_harness_run_checks_a_driver_source_in_every_scenario_that_runs_the_driver(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The A/B and the stress both run the fork (the stress once ran the shipped driver
    and said PROVEN for a broken fork); zram and the balloon do not load the driver."""
    from harness.check import runner
    from harness.check.scenario import Scenario
    from harness.kernel import build

    monkeypatch.setattr(build, "build_kernel", lambda *args, **kwargs: object())
    given: dict[str, object] = {}

    def check(scenario: Scenario, *args: object, **kwargs: object) -> None:
        given[scenario.name] = getattr(scenario, "driver_source", None)
        if len(given) == 2:
            raise HarnessError("enough")

    monkeypatch.setattr(runner, "check", check)
    monkeypatch.setenv("HARNESS_RUNS_DIR", str(tmp_path / "runs"))
    source = Path(shutil.copytree(module.module_source_dir(), tmp_path / "fork"))
    status = cli.main(["run", "--arch", "x86_64", "--kernel", "/src/linux", "--scenario",
                       "sample", "--scenario", "stress", "--driver-source", str(source)])
    assert status == 2
    assert given == {"sample": source, "stress": source}


def test_any_module_source_goes_through_the_same_cached_build(
        tmp_path: Path, isolated_cache: Path) -> None:
    """build_out_of_tree builds another module (the test suite's LKDTM) the same way:
    in the cache, by content, its artifact named after it, no movable API recorded."""
    kernel = fake_kernel(tmp_path, AOPS, makefile="modules:\n"
                         "\t@echo \"$(M) $(ARCH)\" >> $(CURDIR)/calls\n"
                         "\t@printf 'other module' > $(M)/other.ko\n")
    source = tmp_path / "other"
    source.mkdir()
    (source / "Kbuild").write_text("obj-m += other.o\n")
    built = module.build_out_of_tree(kernel, source, "other")
    assert (built.name, built.movable_api, built.path.name) == ("other", "", "other.ko")
    assert built.path.read_bytes() == b"other module"
    assert module.build_out_of_tree(kernel, source, "other") == built
    assert len((kernel.build_dir / "calls").read_text().splitlines()) == 1
