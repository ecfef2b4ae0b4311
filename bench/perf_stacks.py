"""`perf script` output as a list of stacks, each a list of function names, innermost first.
Shared by bench/metering-profile.sh and bench/lab-profile.sh."""
import re

FRAME = re.compile(r"\s+[0-9a-f]+\s+(.*?)\s+\(")


def read(path):
    stacks, current = [], []
    for line in open(path):
        if not line.strip():
            if current:
                stacks.append(current)
            current = []
            continue
        frame = FRAME.match(line)
        if frame:
            current.append(frame.group(1))
    if current:
        stacks.append(current)
    return stacks
