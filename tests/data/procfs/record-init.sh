#!/bin/busybox sh
/bin/busybox --install -s /bin
mkdir -p /proc /sys /tmp
mount -t proc proc /proc
mount -t sysfs sysfs /sys
dmesg -n 1  # keep kernel messages off the console: they would land inside the dumps
dump() {
    for f in buddyinfo vmstat pagetypeinfo zoneinfo; do
        echo "@@procfs $1 $f@@"; cat /proc/$f; echo "@@end@@"
    done
}
# 5.9+ compacts in the background (proactive compaction): keep it from acting
# between the "before" and "after" dumps. 4.8 has no such file.
[ -w /proc/sys/vm/compaction_proactiveness ] && echo 0 > /proc/sys/vm/compaction_proactiveness
echo "@@uname $(uname -r) $(uname -m)@@"
dump boot
echo "@@procfs boot auxv@@"; od -An -tu8 -v /proc/self/auxv; echo "@@end@@"
# Fragment memory with movable (LRU, shmem) pages: write 78 MiB of one-page
# files (20000 with 4 KiB pages; within the rootfs tmpfs limit of half the RAM),
# then delete every other one. The page size is AT_PAGESZ (type 6) of the
# auxiliary vector, as the harness reads it.
page=$(od -An -tu8 -v /proc/self/auxv | awk '$1 == 6 { print $2 }')
echo "@@page size $page@@"
s=0123456789abcdef; while [ ${#s} -lt $page ]; do s="$s$s"; done   # one page
files=$((20000 * 4096 / page))
n=0; while [ $n -lt $files ]; do
    printf %s "$s" > /tmp/f$n || { echo "@@write failed at file $n@@"; break; }
    n=$((n+1))
done
n=0; while [ $n -lt $files ]; do rm /tmp/f$n; n=$((n+2)); done
sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null
dump before
echo 1 > /proc/sys/vm/compact_memory
dump after
echo "@@done@@"
reboot -f  # QEMU -no-reboot: a reset ends the guest (x86_64 guests have no ACPI)
