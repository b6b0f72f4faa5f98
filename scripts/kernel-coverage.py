"""Kernel coverage on the emulated device: reads the lines `family kernel launches seconds` that the emulator
appends at exit (TGEMU_COVERAGE; its NCCL writes `nccl collective calls seconds`), sums them over every
process, prints the table and fails naming each `__global__` function of kernels/*.cu and each emulated NCCL
collective that was never launched.

    python3 scripts/kernel-coverage.py target/emulator-coverage.txt
"""
import collections
import sys

launches = collections.Counter()
seconds = collections.Counter()
for line in open(sys.argv[1]):
    family, kernel, count, spent = line.split()
    launches[(family, kernel)] += int(count)
    seconds[(family, kernel)] += float(spent)
print(f"{'kernel':40} {'launches':>9} {'seconds':>8}")
for key in sorted(launches):
    print(f"{key[0] + '/' + key[1]:40} {launches[key]:9} {seconds[key]:8.2f}")
never = [f"{f}/{k}" for (f, k), n in sorted(launches.items()) if n == 0]
if not launches:
    sys.exit("no kernel coverage was written")
if never:
    sys.exit("kernels or collectives the suite never launched: " + ", ".join(never))
print(f"all {len(launches)} kernels and collectives launched")
