"""The `studio` command: parse the arguments, call the library, print the result.

No logic lives here: `parser.py` declares every subcommand, `commands.py` turns parsed arguments into
library calls, `format.py` writes the results for a terminal. Every StudioError ends as a short
message on stderr and a non-zero exit, never a traceback.

Start-up stays fast (`studio --help`, `studio validate`): nothing here imports torch or transformers;
each command imports what it needs when it runs.
"""

from __future__ import annotations

import json
import os
import sys

from studio.errors import StudioError


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `studio` console script; returns the exit status."""
    from studio.cli.commands import COMMANDS
    from studio.cli.parser import build_parser
    from studio.modeling.quiet import quiet_libraries

    quiet_libraries()
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except StudioError as exc:
        if getattr(args, "json", False):
            print(json.dumps(exc.to_dict()))
        print(exc.format(), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like: not an error of ours
        return 0
