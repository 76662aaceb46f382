"""What a kernel report looks like on the console, and which report a log shows first.

The kernel says it found itself broken in a dozen ways: panic, Oops (x86,
arm64), BUG, KASAN, UBSAN, WARNING, soft and hard lockups, hung tasks, RCU
stalls, list and page corruption. Each is recognised here by the lines the
kernel's own format strings print, in every era the harness supports (4.8 to
7.x: tests/data/kernel-reports/ holds one text per report, with the source file
each line comes from).

A report is many lines, and several of them look like reports on their own:
x86 prints ``kernel BUG at mm/migrate.c:1073!`` and then ``invalid opcode: 0000
[#1]``; a WARNING is framed by ``cut here`` and ``end trace`` lines; a list
corruption is a WARNING (4.8) or a BUG (newer) whose message says what was
corrupted. So lines are first grouped into reports, each from its first line to
its end marker (``---[ end trace``, KASAN's closing rule) or, for the reports
that have none (lockups, hung tasks, bad pages), the end of its call trace.
Each report is then named by its most telling line: what was found
(``list_del corruption``, ``kernel BUG at``) before how the CPU trapped
(``invalid opcode``, ``Oops:``) before what followed (``Kernel panic - not
syncing: Fatal exception``).

The first report of a log is the problem; the reports after it in the same
text (often the panic it caused) are named in ``KernelProblem.later``.
"""

import re
from dataclasses import dataclass

from harness.guest import KernelProblem


@dataclass(frozen=True)
class ReportLine:
    """A line that belongs to a kernel report: the kind it names and how telling it is."""

    kind: str
    weight: int  # a report's headline is its line of the highest weight (the first of equals)
    pattern: re.Pattern[str]  # searched in a line without its timestamp
    # The rest of the line is this report's message, not a report of its own:
    # arm64's panic after a BUG in an interrupt reads "Kernel panic - not
    # syncing: Oops - BUG: Fatal exception in interrupt", a panic, not a BUG.
    owns_line: bool = False


# How telling a line is, most first.
_CORRUPTION = 60  # what was corrupted: says more than the WARNING or BUG that printed it
_CAUSE = 50  # the check that fired: kernel BUG at FILE:LINE, KASAN, a lockup, a bad page
_FAULT = 40  # the bad access: NULL pointer dereference, paging request, protection fault
_WARNING = 30
_BUG = 25  # any other "BUG: " line (scheduling while atomic, sleeping in atomic, ...)
_TRAP = 20  # the trap's header: Oops: 0002 [#1], invalid opcode: 0000 [#1], Internal error
_PANIC = 10  # usually the consequence of the report before it
_FRAME = 0  # "cut here": a WARN, BUG or UBSAN report starts

REPORT_LINES = (
    ReportLine("list corruption", _CORRUPTION,
               re.compile(r"\blist_(add|del) (corruption|double add)")),
    ReportLine("page poison corruption", _CAUSE,
               re.compile(r"^pagealloc: (memory corruption|single bit error)")),
    ReportLine("Bad page state", _CAUSE, re.compile(r"^BUG: Bad page state")),
    ReportLine("KASAN", _CAUSE, re.compile(r"^BUG: KASAN: ")),
    ReportLine("UBSAN", _CAUSE, re.compile(r"^UBSAN: .+ in ")),
    ReportLine("BUG", _CAUSE, re.compile(r"^[Kk]ernel BUG at ")),
    ReportLine("soft lockup", _CAUSE, re.compile(r"\bBUG: soft lockup - CPU#\d+ stuck")),
    ReportLine("hard lockup", _CAUSE, re.compile(r"\bWatchdog detected hard LOCKUP on cpu")),
    ReportLine("hung task", _CAUSE, re.compile(
        r"^INFO: task .+:\d+ blocked (in I/O wait )?for more than \d+ seconds")),
    ReportLine("RCU stall", _CAUSE, re.compile(r"\bINFO: rcu_\w+ (self-)?detected stall")),
    ReportLine("Oops", _FAULT, re.compile(
        r"^BUG: unable to handle (kernel |page fault)|^BUG: kernel NULL pointer dereference"
        r"|^Unable to handle kernel .+ at virtual address|general protection fault")),
    ReportLine("WARNING", _WARNING, re.compile(r"\bWARNING: ")),
    ReportLine("BUG", _BUG, re.compile(r"\bBUG: ")),
    ReportLine("Oops", _TRAP, re.compile(
        r"^(Oops\b|Internal error: |[A-Za-z][a-z -]*: [0-9a-f]{4} \[#\d+\])")),
    ReportLine("panic", _PANIC, re.compile(r"^Kernel panic - not syncing"), owns_line=True),
    ReportLine("WARNING", _FRAME, re.compile(r"^-+\[ cut here \]-+$")),
)

# printk's "[   12.345678] " and, with CONFIG_PRINTK_CALLER, "[    T1] ".
_STAMP = re.compile(r"^\[\s*\d+\.\d+\] ?(\[\s*[TC]\d+\] ?)?")
_END = re.compile(r"^---\[ end (trace|Kernel panic)")
_RULE = re.compile(r"^={20,}$")  # KASAN's frame, and UBSAN's before 5.x
# Lines printed just before a report's first line that belong to it: dump_page()
# (VM_BUG_ON_PAGE, bad pages) and the opening rule of a framed report.
_PRELUDE = re.compile(r"^(page|head: |flags: |raw: |memcg:|={20,}$)")
_TRACE = re.compile(r"^Call [Tt]race:")
# A call trace's lines: indented frames (x86), "[<addr>] sym" (arm64 4.8), the
# "? sym" and <IRQ>/<TASK> markers, and the register and Code: lines among them.
_TRACE_LINE = re.compile(r"^(\s|\[<[0-9a-f]+>\]|\? |</?[A-Z]+>|[\w.]+\+0x[0-9a-f]+/0x[0-9a-f]+"
                         r"|[A-Z][A-Za-z0-9]{1,3}: )")
# x86 closes a task's stack dump with </TASK> (5.16 on): a report that ends with
# its call trace (a hung task, a soft lockup) is whole there, not only once the
# next line arrives, which a stuck kernel may print seconds later or never.
_TRACE_END = re.compile(r"^\s*</TASK>\s*$")
_MAX_REPORT_LINES = 100
_MAX_EXCERPT_LINES = 120
_CONTEXT_BEFORE = 3


@dataclass(frozen=True)
class Report:
    """One report found in a log: lines ``start`` to ``end`` (exclusive) of the text."""

    kind: str
    headline: str  # the most telling line, without its timestamp
    headline_index: int
    start: int
    end: int
    complete: bool  # its end was seen (marker, end of its call trace), more may follow else
    fatal: bool  # it includes a panic: the kernel stopped


def _strip(line: str) -> str:
    return _STAMP.sub("", line, count=1)


def _classify(text: str) -> ReportLine | None:
    """The most telling report pattern a line (without its timestamp) matches, or None."""
    hits = [entry for entry in REPORT_LINES if entry.pattern.search(text)]
    owner = next((entry for entry in hits if entry.owns_line), None)
    return owner or (max(hits, key=lambda entry: entry.weight) if hits else None)


def _report_end(lines: list[str], first: int, framed: bool) -> tuple[int, bool]:
    """Where the report whose first trigger is line ``first`` ends, and whether it is whole.

    Its end marker if one comes within _MAX_REPORT_LINES; otherwise the end of
    its first call trace; otherwise as far as the text or the limit goes.
    """
    limit = min(len(lines), first + _MAX_REPORT_LINES)
    for index in range(first + 1, limit):
        if _END.match(lines[index]) or (framed and _RULE.match(lines[index])):
            return index + 1, True
    in_trace = False
    for index in range(first + 1, limit):
        if in_trace and not _TRACE_LINE.match(lines[index]):
            return index, True
        if in_trace and _TRACE_END.match(lines[index]):
            return index + 1, True
        in_trace = in_trace or bool(_TRACE.match(lines[index]))
    return limit, limit < len(lines)


def scan(text: str) -> list[Report]:
    """Every report in ``text``, in the order printed."""
    lines = [_strip(line) for line in text.splitlines()]
    reports: list[Report] = []
    index = 0
    while index < len(lines):
        if _classify(lines[index]) is None:
            index += 1
            continue
        start = index
        while start > (reports[-1].end if reports else 0) and _PRELUDE.match(lines[start - 1]):
            start -= 1
        end, complete = _report_end(lines, index, framed=bool(_RULE.match(lines[start])))
        hits = [(position, entry) for position in range(index, end)
                if (entry := _classify(lines[position])) is not None]
        best, entry = max(hits, key=lambda hit: (hit[1].weight, -hit[0]))
        reports.append(Report(kind=entry.kind, headline=lines[best].strip(),
                              headline_index=best, start=start, end=end, complete=complete,
                              fatal=any(hit.kind == "panic" for _, hit in hits)))
        index = end
    return reports


def find_problem(text: str) -> KernelProblem | None:
    """The first kernel report in ``text`` with its console excerpt, or None.

    The excerpt runs from a few lines before the first report to the end of the
    last one, as printed (timestamps kept); when that is too long, it is cut
    and the headlines of the reports cut off are appended.
    """
    reports = scan(text)
    if not reports:
        return None
    lines = text.splitlines()
    first, later = reports[0], reports[1:]
    start = max(0, first.start - _CONTEXT_BEFORE)
    stop = min(reports[-1].end, start + _MAX_EXCERPT_LINES)
    excerpt = lines[start:stop]
    cut = [lines[report.headline_index] for report in later if report.headline_index >= stop]
    if cut:
        excerpt += ["[...]", *cut]
    return KernelProblem(first.kind, "\n".join(excerpt), headline=first.headline,
                         fatal=any(report.fatal for report in reports),
                         later=tuple(report.headline for report in later))


# --------------------------------------------------------------------------- allocation failures

# warn_alloc() (mm/page_alloc.c; warn_alloc_failed() in 4.8): "COMM: page allocation
# failure: order:N, mode:0xMASK(FLAGS)", from 4.10 with ", nodemask=..." after it,
# then the stack and show_mem(): "Mem-Info:", the zones, the free blocks per order,
# and its trailer, whose "N pages reserved" line every era prints (lib/show_mem.c,
# mm/show_mem.c from 6.x), then optionally "cma reserved", "pagetable cache" and
# "hwpoisoned" lines.
_ALLOC_FAILURE = re.compile(
    r"^(?P<comm>.+?): page allocation failure: order:(?P<order>\d+), "
    r"mode:(?P<mode>0x[0-9a-f]+)\((?P<flags>[^)]*)\)")
_SHOW_MEM_RESERVED = re.compile(r"^\d+ pages reserved$")
_SHOW_MEM_TAIL = re.compile(r"^\d+ pages (cma reserved|in pagetable cache|hwpoisoned)$")
_MAX_ALLOCATION_REPORT_LINES = 200


@dataclass(frozen=True)
class AllocationFailure:
    """The page allocator's own report of a failed allocation, as printed.

    Not a kernel problem: the allocator says it could not find memory of that
    order, which is what fragmentation does (``harness repro`` expects it).
    ``scan`` therefore never takes it for a report, and the health watch lets it
    pass; what matters is whether it appears when it should.
    """

    comm: str  # the task that asked
    order: int
    mode: str  # the GFP mask, e.g. "0xcc0(GFP_KERNEL)" or "0x24040c0(GFP_KERNEL|__GFP_COMP)"
    excerpt: str  # the report's lines as printed (timestamps kept)
    complete: bool  # show_mem's trailer was seen: nothing of it is missing


def allocation_failures(text: str) -> list[AllocationFailure]:
    """Every allocation failure report in ``text``, in the order printed."""
    raw = text.splitlines()
    lines = [_strip(line) for line in raw]
    found: list[AllocationFailure] = []
    index = 0
    while index < len(lines):
        match = _ALLOC_FAILURE.match(lines[index])
        if match is None:
            index += 1
            continue
        end, complete = index + 1, False
        limit = min(len(lines), index + _MAX_ALLOCATION_REPORT_LINES)
        while end < limit and not _ALLOC_FAILURE.match(lines[end]):
            end += 1
            if _SHOW_MEM_RESERVED.match(lines[end - 1].strip()):
                complete = True
                while end < limit and _SHOW_MEM_TAIL.match(lines[end].strip()):
                    end += 1
                break
        found.append(AllocationFailure(
            comm=match["comm"].strip(), order=int(match["order"]),
            mode=f"{match['mode']}({match['flags']})",
            excerpt="\n".join(raw[index:end]), complete=complete))
        index = end
    return found
