"""The harness installed from a wheel, outside any checkout, finds its shipped files.

kernel-configs/, guest-modules/ and images/ live at the repository's root; a
wheel must carry them and the installed package must find them (not the
checkout's). The wheel is built from a copy of the sources, so the checkout
gets no build/ or egg-info, and installed with --no-deps into a fresh venv
whose dependencies come from this test's own environment (a .pth line), which
keeps the test at a few seconds.
"""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("pyproject.toml", "README.md", "harness", "kernel-configs", "guest-modules", "images")

CHECK = """
import json, harness
from harness.paths import SHIPPED, shipped_dir
from harness.kernel.config import resolve_fragments
from harness.arch import get_arch
from harness.image.build import init_script
from harness.module import module_source_dir
print(json.dumps({
    "package": harness.__file__,
    "dirs": {name: str(shipped_dir(name)) for name in SHIPPED},
    "fragments": [fragment.name for fragment in resolve_fragments("x86_64")],
    "init": init_script(get_arch("x86_64"), []),
    "module": sorted(path.name for path in module_source_dir().iterdir()),
}))
"""


def run(command: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTHON")}
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, " ".join(command) + "\n" + done.stdout + done.stderr
    return done


def build_wheel(tmp_path: Path) -> Path:
    source = tmp_path / "src"
    source.mkdir()
    for name in SOURCES:
        origin = ROOT / name
        if origin.is_dir():
            shutil.copytree(origin, source / name, symlinks=True,
                            ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(origin, source / name)
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", str(source),
         "-w", str(tmp_path / "dist")], cwd=tmp_path)
    (wheel,) = (tmp_path / "dist").glob("harness-*.whl")
    return wheel


def test_wheel_ships_and_finds_its_data(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = archive.read(next(n for n in names if n.endswith(".dist-info/METADATA")))
    for shipped in ("kernel-configs/base.config", "guest-modules/movable_sample.c",
                    "images/init.sh.j2"):
        assert f"harness/_data/{shipped}" in names
    assert b"License-Expression: MIT" in metadata

    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp_path)
    python = venv / "bin" / "python"
    run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
         "--no-index", "-q", str(wheel)], cwd=tmp_path)
    site = Path(run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()"
                     "['purelib'])"], cwd=tmp_path).stdout.strip())
    # The dependencies, from this environment; the wheel's harness comes first on sys.path.
    (site / "zz-test-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    found = json.loads(run([str(python), "-I", "-c", CHECK], cwd=tmp_path).stdout)
    installed = site / "harness"
    assert Path(found["package"]).parent == installed
    assert set(found["dirs"]) == {"kernel-configs", "guest-modules", "images"}
    for name, path in found["dirs"].items():
        assert Path(path) == installed / "_data" / name and not Path(path).is_symlink()
    assert found["fragments"] == ["base", "compaction", "x86_64"]
    assert "mount -a" in found["init"]
    assert {"movable_sample.c", "probe-api.sh", "Kbuild", "Makefile"} <= set(found["module"])
    run([str(venv / "bin" / "harness"), "--help"], cwd=tmp_path)
