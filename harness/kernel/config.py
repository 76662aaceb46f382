"""Kernel .config from small fragments, and proof that every asked-for option stuck.

The config is tinyconfig plus fragments merged with the tree's own
``scripts/kconfig/merge_config.sh`` and completed by ``olddefconfig``.
Kconfig silently drops an option whose dependencies are unmet (seen here:
tinyconfig's VM_EVENT_COUNTERS=n left /proc/vmstat without compact_* and
pgmigrate_* lines, and 6.1's VIRTIO_PCI stayed unset behind VIRTIO_MENU), so after the
merge every requested value is compared with the final .config; a dropped
one is an error naming it and its unmet dependencies. A symbol the tree does
not define at all (VIRTIO_MENU on 4.8) is only a note: fragments are shared
between kernel eras. The tree's Kconfig files are read only when a requested
value did not stick, which is what it takes to tell those two apart.
"""

import re
import subprocess
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from harness.errors import HarnessError
from harness.paths import shipped_dir

ALWAYS = ("base", "compaction")  # merged before the arch fragment and any extras
NOT_SET = "n"

_ASSIGN = re.compile(r"^CONFIG_([A-Za-z0-9_]+)=(.*)$")
_UNSET = re.compile(r"^# CONFIG_([A-Za-z0-9_]+) is not set$")
_KCONFIG_ENTRY = re.compile(r"^\s*(menuconfig|config)\s+([A-Za-z0-9_]+)\s*$")
_KCONFIG_DEPENDS = re.compile(r"^\s*depends\s+on\s+(.+?)\s*$")
_KCONFIG_PROMPT = re.compile(r"^\s*(?:(?:bool|tristate|string|hex|int)\s+\"|prompt\s+\")")
_KCONFIG_BLOCK = re.compile(r"^\s*(if|endif|menu|endmenu|choice|endchoice|comment|source|"
                            r"mainmenu|menuconfig|config)\b\s*(.*)$")
_KCONFIG_HELP = re.compile(r"^\s*(help|---help---)\s*$")


def fragment_dir() -> Path:
    """The fragments shipped with the harness."""
    return shipped_dir("kernel-configs")


@dataclass(frozen=True)
class Fragment:
    """One config fragment: where it came from and what it asks for."""

    name: str  # shipped name (``base``) or the user's path
    path: Path
    settings: dict[str, str]  # SYMBOL (no CONFIG_) -> value, "n" for "is not set"


def parse_fragment(text: str, origin: str) -> dict[str, str]:
    """Requested settings of a fragment; a line that is not a config line is an error."""
    settings: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        if unset := _UNSET.match(line):
            settings[unset[1]] = NOT_SET
        elif assign := _ASSIGN.match(line):
            settings[assign[1]] = assign[2].strip()
        elif not line.startswith("#"):
            raise HarnessError(
                f"{origin} line {number}: {line!r} is not CONFIG_X=value or "
                "'# CONFIG_X is not set'"
            )
    return settings


def parse_dotconfig(text: str) -> dict[str, str]:
    """Values of a .config; symbols kconfig did not write are simply absent (= n)."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        if unset := _UNSET.match(line):
            values[unset[1]] = NOT_SET
        elif assign := _ASSIGN.match(line):
            values[assign[1]] = assign[2]
    return values


def available_fragments() -> list[str]:
    """Names of the shipped fragments, for messages and --help."""
    return sorted(path.stem for path in fragment_dir().glob("*.config"))


def load_fragment(name_or_path: str) -> Fragment:
    """A shipped fragment by name, or a user fragment by path."""
    shipped = fragment_dir() / f"{name_or_path}.config"
    if "/" not in name_or_path and shipped.is_file():
        path = shipped
    elif Path(name_or_path).expanduser().is_file():
        path = Path(name_or_path).expanduser().resolve()
    else:
        raise HarnessError(
            f"unknown config fragment {name_or_path!r}: give a file path or one of "
            f"{', '.join(available_fragments())}"
        )
    return Fragment(name=name_or_path, path=path,
                    settings=parse_fragment(path.read_text(), str(path)))


def resolve_fragments(arch: str, extras: Iterable[str] = ()) -> list[Fragment]:
    """base, compaction and the arch fragment, then the extras in the order given."""
    names = [*ALWAYS, arch]
    names += [extra for extra in extras if extra not in names]
    return [load_fragment(name) for name in names]


def merge_settings(fragments: Iterable[Mapping[str, str]]) -> dict[str, str]:
    """What merge_config.sh ends up asking for: a later fragment overrides an earlier one."""
    merged: dict[str, str] = {}
    for settings in fragments:
        merged.update(settings)
    return merged


@dataclass(frozen=True)
class KconfigSymbol:
    """What the tree's Kconfig says about one symbol (enough to explain a drop)."""

    depends: tuple[str, ...]  # its own and its enclosing if/menu/choice conditions
    has_prompt: bool  # False: only select/default can set it


def kconfig_symbols(tree: Path, srcarch: str) -> dict[str, KconfigSymbol]:
    """Every symbol the tree defines for ``srcarch``, with its dependencies.

    A line scanner, not a Kconfig parser: it tracks ``if``/``menu``/``choice``
    nesting per file, which is what hides symbols like 6.1's VIRTIO_PCI.
    Other architectures' Kconfig files and kconfig's own test suites are
    skipped so their symbols count as unknown.
    """
    symbols: dict[str, KconfigSymbol] = {}
    for path in _kconfig_files(tree, srcarch):
        # Join backslash-continued lines: long `depends on` expressions use them.
        _scan_kconfig(path.read_text(errors="replace").replace("\\\n", " "), symbols)
    return symbols


def _kconfig_files(tree: Path, srcarch: str) -> Iterable[Path]:
    for path in sorted(tree.rglob("Kconfig*")):
        parts = path.relative_to(tree).parts
        if parts[0] in ("Documentation", "tools") or parts[:2] == ("scripts", "kconfig"):
            continue
        if parts[0] == "arch" and len(parts) > 2 and parts[1] != srcarch:
            continue
        if path.is_file():
            yield path


def _scan_kconfig(text: str, symbols: dict[str, KconfigSymbol]) -> None:
    stack: list[list[str]] = []  # conditions of enclosing if/menu/choice blocks
    current: tuple[str, list[str], list[bool]] | None = None  # symbol, depends, prompt
    attach: list[str] | None = None  # where a `depends on` line goes

    def finish() -> None:
        if current is not None:
            name, depends, prompt = current
            inherited = [cond for block in stack for cond in block]
            previous = symbols.get(name)
            merged = tuple(dict.fromkeys([*(previous.depends if previous else ()),
                                          *inherited, *depends]))
            symbols[name] = KconfigSymbol(
                depends=merged, has_prompt=prompt[0] or bool(previous and previous.has_prompt))

    help_indent: int | None = None  # inside help text: lines indented at least this much
    keyword_indent = 0  # indentation of the `help` line: text must go deeper
    in_help = False
    for line in text.splitlines():
        if in_help:
            if not line.strip():
                continue
            indent = len(line.expandtabs()) - len(line.expandtabs().lstrip())
            if help_indent is None and indent > keyword_indent:
                help_indent = indent
            if help_indent is not None and indent >= help_indent:
                continue
            in_help = False
        if _KCONFIG_HELP.match(line):
            in_help, help_indent = True, None
            keyword_indent = len(line.expandtabs()) - len(line.expandtabs().lstrip())
            continue
        if entry := _KCONFIG_ENTRY.match(line):
            finish()
            current = (entry[2], [], [False])
            attach = current[1]
            continue
        if depends := _KCONFIG_DEPENDS.match(line):
            if attach is not None:
                attach.append(depends[1])
            continue
        if current is not None and _KCONFIG_PROMPT.match(line):
            current[2][0] = True
            continue
        block = _KCONFIG_BLOCK.match(line)
        if not block or line[:1] in (" ", "\t"):
            continue
        keyword, rest = block[1], block[2]
        finish()
        current = None
        if keyword == "if":
            stack.append([rest.strip()])
            attach = None
        elif keyword in ("menu", "choice"):
            stack.append([])
            attach = stack[-1]
        elif keyword in ("endif", "endmenu", "endchoice"):
            if stack:
                stack.pop()
            attach = None
        else:  # comment, source, mainmenu: a `depends on` after them is theirs
            attach = []
    finish()


@dataclass(frozen=True)
class Dropped:
    """A requested option that did not survive olddefconfig."""

    symbol: str
    wanted: str
    got: str
    reason: str

    def describe(self) -> str:
        """``CONFIG_X=y (got not set; needs A, B)``."""
        got = "not set" if self.got == NOT_SET else self.got
        wanted = "not set" if self.wanted == NOT_SET else self.wanted
        text = f"CONFIG_{self.symbol} wanted {wanted}, got {got}"
        return f"{text} ({self.reason})" if self.reason else text


@dataclass(frozen=True)
class ConfigCheck:
    """The outcome of comparing the requested settings with the final .config."""

    dropped: tuple[Dropped, ...] = ()
    unknown: tuple[str, ...] = field(default=())  # not defined by this tree: a note


_TOKEN = re.compile(r"\s*(&&|\|\||!=|<=|>=|[!()=<>]|\"[^\"]*\"|[A-Za-z0-9_]+)")


def _holds(expression: str, final: Mapping[str, str]) -> bool | None:
    """Evaluate a Kconfig dependency expression on the final config.

    Tristate is collapsed to on/off, which is all a "why was it dropped"
    hint needs; None when the expression is beyond this small parser.
    """
    tokens = _TOKEN.findall(expression)
    if "".join(tokens) != re.sub(r"\s+", "", expression):
        return None
    position = 0

    def value(token: str) -> str:
        if token.startswith('"'):
            return token.strip('"')
        if token in ("y", "m", "n") or token.isdigit():
            return token
        return final.get(token, NOT_SET).strip('"')

    def atom() -> bool | str:
        nonlocal position
        token = tokens[position]
        position += 1
        if token == "!":
            return not truth(atom())
        if token == "(":
            result = either()
            position += 1  # ")"
            return result
        if position < len(tokens) and tokens[position] in ("=", "!="):
            operator, other = tokens[position], tokens[position + 1]
            position += 2
            equal = value(token) == value(other)
            return equal if operator == "=" else not equal
        return value(token)

    def truth(item: bool | str) -> bool:
        return item if isinstance(item, bool) else item not in (NOT_SET, "")

    def both() -> bool:
        nonlocal position
        result = truth(atom())
        while position < len(tokens) and tokens[position] == "&&":
            position += 1
            result = truth(atom()) and result
        return result

    def either() -> bool:
        nonlocal position
        result = both()
        while position < len(tokens) and tokens[position] == "||":
            position += 1
            result = both() or result
        return result

    try:
        result = either()
    except IndexError:
        return None
    return result if position == len(tokens) else None


def _reason(symbol: KconfigSymbol, wanted: str, final: Mapping[str, str]) -> str:
    if wanted == NOT_SET:
        return "forced on by a select or a default without prompt"
    unmet = [expr for expr in symbol.depends if _holds(expr, final) is not True]
    if unmet:
        return "unmet dependency: " + "; ".join(" ".join(expr.split()) for expr in unmet)
    if not symbol.has_prompt:
        return "no prompt: only a select or default can set it"
    return "see `make menuconfig` for its dependencies"


def check_config(
    requested: Mapping[str, str], final: Mapping[str, str],
    scan: Callable[[], Mapping[str, KconfigSymbol]],
) -> ConfigCheck:
    """Which requested settings were dropped, and which the tree does not know.

    ``scan`` (``kconfig_symbols`` of the tree: it reads every Kconfig file) runs
    only when some requested value is not what the final config has: to tell a
    symbol this tree does not define (a note: fragments are shared between eras)
    from one it dropped (an error), and to say why it was dropped. A request that
    holds needs neither, whether or not the tree defines the symbol.
    """
    differ = {name: wanted for name, wanted in requested.items()
              if final.get(name, NOT_SET) != wanted}
    if not differ:
        return ConfigCheck()
    known = scan()
    dropped = tuple(Dropped(name, wanted, final.get(name, NOT_SET),
                            _reason(known[name], wanted, final))
                    for name, wanted in differ.items() if name in known)
    return ConfigCheck(dropped=dropped,
                       unknown=tuple(sorted(name for name in differ if name not in known)))


def raise_if_dropped(check: ConfigCheck, config: Path) -> None:
    """One line naming every dropped option and why, plus the .config to read."""
    if check.dropped:
        listed = "; ".join(item.describe() for item in check.dropped)
        raise HarnessError(
            f"{len(check.dropped)} requested config option(s) did not survive olddefconfig: "
            f"{listed} (final config: {config}); add the missing dependencies to your "
            "fragment or drop the option"
        )


Make = Callable[[Sequence[str]], None]


def configure(
    tree: Path,
    build_dir: Path,
    srcarch: str,
    make: Make,
    fragments: Sequence[Fragment],
    log: TextIO,
    base: str = "tinyconfig",
) -> ConfigCheck:
    """``base`` + fragments + olddefconfig in ``build_dir``; fail on dropped options.

    ``make(targets)`` runs make with the build's ARCH/O=/quirk variables.
    ``base`` is tinyconfig for the harness's builds; the benchmark compares
    against defconfig.
    merge_config.sh runs from ``build_dir`` because 4.8's version writes its
    temporary file into the current directory, which must not be the tree.
    """
    make([base])
    script = tree / "scripts" / "kconfig" / "merge_config.sh"
    merged = subprocess.run(
        ["sh", str(script), "-m", "-O", str(build_dir), str(build_dir / ".config"),
         *(str(fragment.path) for fragment in fragments)],
        cwd=build_dir, stdout=log, stderr=subprocess.STDOUT,
        env={"PATH": "/usr/bin:/bin", "LC_ALL": "C"},
    )
    if merged.returncode != 0:
        raise HarnessError(f"merge_config.sh failed (exit {merged.returncode}): see the log")
    make(["olddefconfig"])
    requested = merge_settings(fragment.settings for fragment in fragments)
    config = build_dir / ".config"
    check = check_config(requested, parse_dotconfig(config.read_text()),
                         lambda: kconfig_symbols(tree, srcarch))
    raise_if_dropped(check, config)
    return check
