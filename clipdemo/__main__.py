"""``python -m clipdemo …`` and the ``clipdemo`` command that ``pip install`` puts on the PATH (``run``)."""

import gc
import sys


def run() -> int:
    # A zero-shot call imports torch and transformers and builds a model: about a million long-lived objects and
    # next to no garbage. The collector's passes over them cost ~0.4 s of a 6 s call on our machines, so this short
    # read-only command runs without it; training and evaluation, long and allocation-heavy, keep it.
    if sys.argv[1:2] == ["zero-shot"]:
        gc.disable()
    try:
        from clipdemo.cli import main
    except ValueError as e:  # a bad environment value read at import (CLIPDEMO_MAX_PIXELS=abc): one line, exit 2
        print(f"error: {e}", file=sys.stderr)
        return 2
    code = main()
    gc.freeze()  # the interpreter's last collection would walk those same objects again (~0.8 s): skip it
    return code


if __name__ == "__main__":
    sys.exit(run())
