"""The broken drivers of tests/broken-drivers/ without a kernel: each patch still
applies to the shipped driver exactly and touches only code every API era
compiles, the rule names map the verdict's own reasons one to one, and together
the variants break every rule.

tests/integration/test_broken_drivers.py then shows on real kernels that each
variant makes its rules fail.
"""

import re
from pathlib import Path

import pytest

from harness.check.evidence import judge_ab
from harness.module import module_source_dir
from harness.report.model import HighOrder
from tests.broken_drivers import (
    KERNEL_QUIET,
    RULES,
    STRESS_RULES,
    Variant,
    failed_rules,
    variant_source,
)
from tests.broken_drivers import variants as all_variants
from tests.unit.test_verdict import control, side

VARIANTS = all_variants()
# The macros probe-api.sh defines: code under them is built for some eras only.
ERA_MACRO = re.compile(r"\bMS_(API|HAVE)_\w+")
HUNK = re.compile(r"^@@ -(\d+)(?:,\d+)? \+\d+(?:,\d+)? @@")


def test_together_the_variants_break_every_rule() -> None:
    broken = {rule for variant in VARIANTS for rule in variant.breaks}
    assert broken == {*RULES, KERNEL_QUIET}


def test_together_the_variants_break_every_rule_of_the_stress_scenario() -> None:
    """Where the driver isolates its pages (5.10) every stress rule has a variant; from
    6.17 the balloon core isolates them, and accounting and released are not judged,
    settled is the core's own count (only a broken kernel could fail it there)."""
    broken = {rule for variant in VARIANTS for rule in variant.stress_expected("aops")}
    assert broken == {*STRESS_RULES, KERNEL_QUIET}
    on_balloon = {rule for variant in VARIANTS for rule in variant.stress_expected("balloon")}
    assert on_balloon == {*STRESS_RULES, KERNEL_QUIET} - {"accounting", "released", "settled"}


@pytest.mark.needs_program("patch")
@pytest.mark.parametrize("broken", VARIANTS, ids=[variant.name for variant in VARIANTS])
def test_patch_applies_to_the_shipped_driver_and_changes_only_its_source(
        broken: Variant, tmp_path: Path) -> None:
    source = variant_source(broken, tmp_path)
    shipped = module_source_dir()
    assert sorted(path.name for path in source.iterdir()) == sorted(
        path.name for path in shipped.iterdir()), "patch left files behind"
    changed = [path.name for path in sorted(source.iterdir())
               if path.read_bytes() != (shipped / path.name).read_bytes()]
    assert changed == ["movable_sample.c"]


def test_every_reason_of_the_verdict_names_exactly_one_rule() -> None:
    """Sides breaking every rule of harness/check/evidence.py at once: each reason
    matches one rule's text and no other, and every rule is among them."""
    broken_both = judge_ab(
        control(verify_checked=1, verify_mismatches=2, migrated_pages=5,
                driver_counters={"migrated": 1}),
        side(verify_checked=1, verify_mismatches=3, migrated_pages=0,
             driver_counters={"migrated": 0},
             high_order=HighOrder(order=9, attempts=16, before=0, after=0)))
    miscounted = judge_ab(control(), side(migrated_pages=2000, pgmigrate_success_delta=10))
    reasons = broken_both.failures + miscounted.failures
    for reason in reasons:
        matching = [rule for rule, text in RULES.items() if re.fullmatch(text, reason)]
        assert len(matching) == 1, (reason, matching)
    assert failed_rules(reasons) == set(RULES)


def era_specific_lines(source: str) -> set[int]:
    """Line numbers of ``source`` inside either branch of a conditional on an API
    macro: code some eras compile and others do not."""
    lines: set[int] = set()
    stack: list[bool] = []  # per open conditional: does it test an API macro?
    for number, line in enumerate(source.splitlines(), 1):
        directive = line.strip()
        if directive.startswith("#if"):
            stack.append(bool(ERA_MACRO.search(directive)))
        elif directive.startswith("#elif"):
            stack[-1] = stack[-1] or bool(ERA_MACRO.search(directive))
        elif directive.startswith("#endif"):
            stack.pop()
        elif any(stack):
            lines.add(number)
    return lines


def touched_lines(patch: str) -> set[int]:
    """Lines of the original file a unified diff removes, or inserts between."""
    touched: set[int] = set()
    old = 0
    for line in patch.splitlines():
        hunk = HUNK.match(line)
        if hunk:
            old = int(hunk.group(1))
        elif line.startswith("-") and not line.startswith("---"):
            touched.add(old)
            old += 1
        elif line.startswith("+") and not line.startswith("+++"):
            touched.update((old - 1, old))
        elif line.startswith(" "):
            old += 1
    return touched


def test_patches_touch_only_code_every_api_era_compiles() -> None:
    """CI builds the variants for the a_ops (5.10) and balloon (7.2) eras only; a
    patch outside every API conditional builds for movable_operations (6.0-6.16) too."""
    source = (module_source_dir() / "movable_sample.c").read_text()
    era_lines = era_specific_lines(source)
    numbered = source.splitlines()
    assert any("balloon_page_enqueue(&ms.balloon" in numbered[n - 1] for n in era_lines)
    assert not any("copy_highpage(dst, src);" in numbered[n - 1] for n in era_lines)
    for variant in VARIANTS:
        inside = sorted(touched_lines(variant.patch.read_text()) & era_lines)
        assert not inside, f"{variant.name} changes era-specific lines {inside}"
