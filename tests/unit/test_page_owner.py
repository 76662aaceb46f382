"""harness.page_owner: the guest-side grouping of /sys/kernel/debug/page_owner and
its parser, on text recorded from a real guest (tests/data/page-owner/).

The awk program runs here on the host's busybox awk (the guest's is Debian's
static busybox; the host's awk when there is no busybox), over the head of a
recorded page_owner file, and must print what the guest's busybox printed for the
same text. The summary of the whole file, grouped in the guest after a failed
order-9 allocation with unmovable driver pages (movable=0), must name the sample
driver's stack as the one holding the most pageblocks, and a summary with the
driver's frames renamed must name no driver stack at all. After a successful
allocation with movable driver pages (movable=1), the pages compaction moved sit
under the stack of compaction's migration targets, which ran inside the driver's
allocation: they are named as such, not as the driver's own allocation.
"""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from harness.page_owner import (
    ABSENT,
    AWK_PROGRAM,
    PageOwnerFormatError,
    describe,
    headline,
    parse_summary,
    summary_command,
)

DATA = Path(__file__).resolve().parent.parent / "data" / "page-owner" / "5.10.223-x86_64"
PAGEBLOCK_ORDER = 10  # this guest's /proc/pagetypeinfo (x86_64, 4 KiB pages, no hugetlb)


def host_awk(text: str, pageblock_order: int = PAGEBLOCK_ORDER) -> str:
    """AWK_PROGRAM over ``text`` with busybox awk (as in the guest), else awk."""
    command = ["busybox", "awk"] if shutil.which("busybox") else ["awk"]
    return subprocess.run([*command, "-v", f"pbo={pageblock_order}", AWK_PROGRAM],
                          input=text, capture_output=True, text=True, check=True).stdout


def test_the_program_groups_the_recorded_text_as_the_guest_did() -> None:
    assert host_awk((DATA / "page_owner.head.txt").read_text()) == (
        DATA / "summary.head.txt").read_text()


def test_a_hex_pfn_as_6x_prints_it_is_the_same_page() -> None:
    text = (DATA / "page_owner.head.txt").read_text()
    hexed = re.sub(r"^PFN (\d+) ", lambda m: f"PFN {int(m[1]):#x} ", text, flags=re.M)
    assert hexed != text and host_awk(hexed) == host_awk(text)


def test_a_block_above_pageblock_order_counts_every_pageblock_it_spans() -> None:
    record = ("Page allocated via order {order}, mask 0xcc0(GFP_KERNEL)\n"
              "PFN {pfn} type Unmovable Block 0 type Unmovable Flags 0x0()\n"
              " kmalloc_order+0x1/0x2\n\n")
    text = (record.format(order=10, pfn=1024) + record.format(order=0, pfn=1500)
            + record.format(order=0, pfn=2048))
    owners = parse_summary(host_awk(text, 9), 9)  # pageblocks 2-3, 2 and 4
    assert owners is not None and (owners.records, owners.pageblocks) == (3, 3)
    (stack,) = owners.stacks
    assert (stack.records, stack.pages, stack.pageblocks) == (3, 1026, 3)


def test_after_the_failure_the_driver_holds_the_most_pageblocks() -> None:
    owners = parse_summary((DATA / "summary.full.txt").read_text(), PAGEBLOCK_ORDER)
    assert owners is not None
    top = owners.stacks[0]
    assert top.is_driver and "[movable_sample]" in top.caller()
    assert top.pageblocks <= owners.pageblocks
    shown = describe(owners.as_dict(top=3))
    assert shown[1].endswith("← the sample driver")
    assert shown[0].startswith(f"page_owner: {owners.records} allocated blocks in "
                               f"{owners.pageblocks} pageblocks of order 10")


def test_the_headline_names_the_top_stack_and_the_drivers() -> None:
    owners = parse_summary((DATA / "summary.full.txt").read_text(), PAGEBLOCK_ORDER)
    assert owners is not None
    assert re.fullmatch(r"page_owner: 10387 allocated blocks in 62 pageblocks; most pageblocks: "
                        r"ms_add_pages\S+ \[movable_sample\] \(53 pageblocks, the sample driver\)",
                        headline(owners))


def test_pages_compaction_moved_are_its_migration_targets_not_the_drivers() -> None:
    owners = parse_summary((DATA / "summary.movable1.txt").read_text(), PAGEBLOCK_ORDER)
    assert owners is not None
    (targets,) = [stack for stack in owners.stacks if stack.is_migration_target]
    assert any(frame.startswith("ms_alloc_order_write") for frame in targets.frames)
    assert not targets.is_driver and targets.caller().startswith("compaction_alloc+")
    assert any(stack.is_driver for stack in owners.stacks)
    shown = describe(owners.as_dict(top=0))
    assert any(line.endswith("← compaction's migration targets (pages it moved keep this "
                             "stack)") for line in shown)
    assert "; compaction's migration targets: compaction_alloc+" in headline(owners)


def test_a_stack_without_the_drivers_frames_is_not_named_the_driver() -> None:
    text = (DATA / "summary.full.txt").read_text()
    renamed = text.replace("[movable_sample]", "[other]").replace("\tms_", "\tother_")
    owners = parse_summary(renamed, PAGEBLOCK_ORDER)
    assert owners is not None and not any(stack.is_driver for stack in owners.stacks)
    assert not any("sample driver" in line for line in describe(owners.as_dict(top=50)))


def test_no_page_owner_file_is_none_and_a_garbled_summary_an_error() -> None:
    assert parse_summary(ABSENT + "\n", PAGEBLOCK_ORDER) is None
    with pytest.raises(PageOwnerFormatError, match="expected 'total"):
        parse_summary("", PAGEBLOCK_ORDER)
    with pytest.raises(PageOwnerFormatError, match="is not '<records>"):
        parse_summary("total 1 1\nx y\tframe\n", PAGEBLOCK_ORDER)


def test_the_guest_command_says_absent_without_the_file(tmp_path: Path) -> None:
    command = summary_command(PAGEBLOCK_ORDER).replace("/sys/kernel/debug/page_owner",
                                                      str(tmp_path / "page_owner"))
    run = subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=True)
    assert run.stdout == ABSENT + "\n"
