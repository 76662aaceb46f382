"""A KernelBuild record around a .config text, for tests of what reads a build's options."""

from pathlib import Path

from harness.artifacts import KernelBuild


def kernel_with_config(directory: Path, text: str, release: str = "4.8.15") -> KernelBuild:
    """A cached build in ``directory`` whose .config is ``text`` (no image, no tree)."""
    config = directory / ".config"
    config.write_text(text)
    version = tuple(int(part) for part in release.split(".")[:3])
    return KernelBuild(arch="x86_64", spec="/src/linux", release=release,
                       version=version,  # type: ignore[arg-type]
                       image=directory / "bzImage", build_dir=directory, config=config,
                       system_map=directory / "System.map", make_args=(), module_fixups=(),
                       cached=True, seconds=0.0)
