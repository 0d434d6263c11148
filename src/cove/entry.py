"""The `cove` command. `cove start NAME` first tries the launch-first path (quickstart), which
must run before the command line machinery is even imported; everything else is cli.main."""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # typing itself costs the launch-first path about 5 ms
if TYPE_CHECKING:
    from typing import NoReturn


def entry() -> NoReturn:
    """Run the command, then leave without the interpreter's teardown (about 7 ms of every
    command), which has nothing left to do once the output is flushed."""
    from cove import quickstart

    code = quickstart.start(sys.argv[1:])
    if code is None:
        from cove.cli import main

        code = main()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BrokenPipeError:
            code = code or 141
        except (OSError, ValueError):
            pass
    os._exit(code)
