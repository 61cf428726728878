"""The harness every client script shares: `@check` registers a function,
`run()` calls each one, prints `ok NAME` or `FAIL NAME` with the traceback,
then a closing "N passed, N failed" and exits 1 if any failed."""

import sys
import traceback

_checks = []


def check(fn):
    _checks.append(fn)
    return fn


def run():
    passed = failed = 0
    for fn in _checks:
        try:
            fn()
            passed += 1
            print(f"ok   {fn.__name__}")
        except Exception:  # report every failure, keep going
            failed += 1
            print(f"FAIL {fn.__name__}")
            traceback.print_exc(file=sys.stdout)
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)
