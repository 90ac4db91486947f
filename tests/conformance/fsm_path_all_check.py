#!/usr/bin/env python3
"""Checks `migmoverctl fsm-path --all` against an independent model of the kernel's rule.

The model is built here from the kernel's own documentation of multi-step transitions (the
path list for a STOP_COPY|P2P|PRE_COPY device, as in drivers/vfio/vfio_main.c and
shared/docs/vfio-migration-uapi.md section 2.3): each listed path gives the next hop for every
state on it, direct pairs are their own next hop, STOP_COPY -> PRE_COPY* are blocked. Reduced
feature sets apply the kernel's skip loop: while the next hop is a state the device lacks, take
the next hop from there. Usage: fsm_path_all_check.py MIGMOVERCTL
"""
import subprocess
import sys

STATES = ["ERROR", "STOP", "RUNNING", "STOP_COPY", "RESUMING", "RUNNING_P2P", "PRE_COPY",
          "PRE_COPY_P2P"]

# The combination transitions the kernel lists; every other pair of distinct states is direct.
KERNEL_PATHS = """
PRE_COPY -> PRE_COPY_P2P -> STOP_COPY
PRE_COPY -> RUNNING -> RUNNING_P2P
PRE_COPY -> RUNNING -> RUNNING_P2P -> STOP
PRE_COPY -> RUNNING -> RUNNING_P2P -> STOP -> RESUMING
PRE_COPY_P2P -> RUNNING_P2P -> RUNNING
PRE_COPY_P2P -> RUNNING_P2P -> STOP
PRE_COPY_P2P -> RUNNING_P2P -> STOP -> RESUMING
RESUMING -> STOP -> RUNNING_P2P
RESUMING -> STOP -> RUNNING_P2P -> PRE_COPY_P2P
RESUMING -> STOP -> RUNNING_P2P -> RUNNING
RESUMING -> STOP -> RUNNING_P2P -> RUNNING -> PRE_COPY
RESUMING -> STOP -> STOP_COPY
RUNNING -> RUNNING_P2P -> PRE_COPY_P2P
RUNNING -> RUNNING_P2P -> STOP
RUNNING -> RUNNING_P2P -> STOP -> RESUMING
RUNNING -> RUNNING_P2P -> STOP -> STOP_COPY
RUNNING_P2P -> RUNNING -> PRE_COPY
RUNNING_P2P -> STOP -> RESUMING
RUNNING_P2P -> STOP -> STOP_COPY
STOP -> RUNNING_P2P -> PRE_COPY_P2P
STOP -> RUNNING_P2P -> RUNNING
STOP -> RUNNING_P2P -> RUNNING -> PRE_COPY
STOP_COPY -> STOP -> RESUMING
STOP_COPY -> STOP -> RUNNING_P2P
STOP_COPY -> STOP -> RUNNING_P2P -> RUNNING
"""
BLOCKED = {("STOP_COPY", "PRE_COPY"), ("STOP_COPY", "PRE_COPY_P2P")}

REQUIRED = {
    "STOP": {"stop_copy"}, "RUNNING": {"stop_copy"}, "STOP_COPY": {"stop_copy"},
    "RESUMING": {"stop_copy"}, "RUNNING_P2P": {"stop_copy", "p2p"},
    "PRE_COPY": {"stop_copy", "pre_copy"}, "PRE_COPY_P2P": {"stop_copy", "p2p", "pre_copy"},
}
FEATURE_SETS = ["stop_copy", "stop_copy,p2p", "stop_copy,pre_copy", "stop_copy,p2p,pre_copy"]


def next_hop_table():
    table = {}
    for line in KERNEL_PATHS.strip().splitlines():
        hops = [s.strip() for s in line.split("->")]
        target = hops[-1]
        for i in range(len(hops) - 1):
            prev = table.setdefault((hops[i], target), hops[i + 1])
            assert prev == hops[i + 1], ("inconsistent kernel path list", line)
    for a in STATES[1:]:
        for b in STATES[1:]:
            if a == b:
                table[(a, b)] = a
            elif (a, b) in BLOCKED:
                table[(a, b)] = "ERROR"
            else:
                table.setdefault((a, b), b)
    return table


def expected(features, table):
    have = set(features.split(","))
    supported = lambda s: s in REQUIRED and REQUIRED[s] <= have
    out = {}
    for a in STATES:
        for b in STATES:
            if not supported(a) or not supported(b) or (a, b) in BLOCKED:
                out[(a, b)] = "EINVAL"
                continue
            path, cur = [a], a
            while cur != b:
                nxt = table[(cur, b)]
                while nxt != "ERROR" and not supported(nxt):
                    nxt = table[(nxt, b)]
                if nxt == "ERROR":
                    path = None
                    break
                path.append(nxt)
                cur = nxt
            out[(a, b)] = ">".join(path) if path else "EINVAL"
    return out


def main():
    ctl = sys.argv[1]
    table = next_hop_table()
    failures = checked = 0
    for features in FEATURE_SETS:
        got_text = subprocess.run([ctl, "fsm-path", "--features", features, "--all"],
                                  check=True, capture_output=True, text=True).stdout
        got = {}
        for line in got_text.splitlines():
            a, b, path = line.split("\t")
            got[(a, b)] = path
        want = expected(features, table)
        if set(got) != set(want):
            print(f"{features}: printed pairs differ: {sorted(set(got) ^ set(want))}")
            failures += 1
        for pair, path in sorted(want.items()):
            checked += 1
            if got.get(pair) != path:
                failures += 1
                print(f"{features}: {pair[0]} -> {pair[1]}: migmoverctl says {got.get(pair)!r}, "
                      f"the kernel rule gives {path!r}")
    print(f"fsm-path --all: {checked} pairs over {len(FEATURE_SETS)} feature sets checked, "
          f"{failures} disagreements")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
