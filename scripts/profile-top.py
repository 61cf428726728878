"""Shares of a folded-stacks profile (`a;b;c COUNT` per line), by function:
inclusive (the function or anything it called was on the stack) and self
(the function was on top). Runtime plumbing frames are left out of the
inclusive list. Usage: profile-top.py FILE [ROWS]"""
import collections
import re
import sys

path = sys.argv[1]
rows = int(sys.argv[2]) if len(sys.argv) > 2 else 60
plumbing = re.compile(r"^(tokio::|std::|core::ops|core::future|<core::pin|start_thread|clone3|<std::)")
inclusive, own, total = collections.Counter(), collections.Counter(), 0
for line in open(path):
    stack, _, count = line.rstrip("\n").rpartition(" ")
    n = int(count)
    total += n
    frames = [re.sub(r"::h[0-9a-f]{16}$", "", f)[:140] for f in stack.split(";")]
    for f in set(frames):
        inclusive[f] += n
    own[frames[-1]] += n
print(f"{total} samples")
print("\ninclusive:")
for f, n in [(f, n) for f, n in inclusive.most_common() if not plumbing.match(f)][:rows]:
    print(f"{100 * n / total:5.1f} %  {f}")
print("\nself:")
for f, n in own.most_common(rows // 2):
    print(f"{100 * n / total:5.1f} %  {f}")
