"""Bench harness: every second, how much CPU the processes *other* than the measured ones used.

Prints one line per second in which they used more than --threshold of one core: the seconds in
which something else on this shared machine (a compiler, another test suite) disturbed the run.
The measured ones are the process groups given with --group (the server) and processes named by
--name (the load generator). Stops when killed.
Usage: python3 others-busy.py --group PGID [--group PGID] --name resizer [--threshold 0.2]
"""
import argparse, os, time

HZ = os.sysconf("SC_CLK_TCK")


def cpu_by_process():
    """{pid: (pgid, comm, cpu seconds)} for every process now."""
    result = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        # fields[0] is state (field 3); pgrp is field 5, utime 14, stime 15.
        result[int(entry)] = (int(fields[2]), comm, (int(fields[11]) + int(fields[12])) / HZ)
    return result


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--group", type=int, action="append", default=[])
    parser.add_argument("--name", action="append", default=[])
    parser.add_argument("--threshold", type=float, default=0.2)
    args = parser.parse_args()
    me = os.getpid()
    before = cpu_by_process()
    while True:
        time.sleep(1)
        now = cpu_by_process()
        others = {}
        for pid, (pgid, comm, cpu) in now.items():
            if pid == me or pgid in args.group or comm in args.name:
                continue
            used = cpu - before.get(pid, (0, "", 0.0))[2] if pid in before else 0.0
            if used > 0.01:
                others[comm] = others.get(comm, 0.0) + used
        total = sum(others.values())
        if total > args.threshold:
            top = ", ".join(f"{c} {u:.2f}" for c, u in sorted(others.items(), key=lambda x: -x[1])[:3])
            print(f"{time.strftime('%H:%M:%S')} others used {total:.2f} cores: {top}", flush=True)
        before = now


if __name__ == "__main__":
    main()
