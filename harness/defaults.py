"""Defaults that the CLIs, the pytest plugin and the library share.

One place, so ``harness run``, ``harness boot`` and a pytest session describe
the same guest and matrix unless told otherwise, and their --help texts cannot
drift from what they do.
"""

ARCHES = ("x86_64", "arm64")  # the default matrix's guest architectures
KERNELS = ("debian:5.10", "debian:7.2")  # pytest's default matrix: the oldest and newest lines
# Debian ships (5.10 has 4.8's driver API, 7.2 the balloon-core one); harness run: 5.10 only
TARGET = "qemu"  # boot a guest for the check, rather than ssh:// to a running machine
TRANSPORTS = ("console", "ssh")  # how the harness talks to a QEMU guest
TRANSPORT = "console"  # needs no network or keys in the guest: the fastest to boot
MEMORY_MIB = 256  # guest RAM: the sample driver fills 90 % of what is free
# vCPUs per QEMU guest: two, so every check runs where the API's isolation contract
# (PG_isolated, the page lock) can be raced; multi-threaded TCG gives each its own
# host thread. What it costs is measured in bench/boot.py and bench/check.py.
CPUS = 2
