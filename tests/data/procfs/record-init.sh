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
echo "@@uname $(uname -r) $(uname -m)@@"
dump boot
# Fragment memory with movable (LRU) pages: fill the rootfs with 4 KiB files,
# then delete every other one.
s=0123456789abcdef; for i in 1 2 3 4 5 6 7 8; do s="$s$s"; done
s="$s$s$s$s"   # 4096 bytes
n=0; while [ $n -lt 24000 ]; do printf %s "$s" > /tmp/f$n; n=$((n+1)); done
n=0; while [ $n -lt 24000 ]; do rm /tmp/f$n; n=$((n+2)); done
sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null
dump before
echo 1 > /proc/sys/vm/compact_memory
dump after
echo "@@done@@"
poweroff -f
