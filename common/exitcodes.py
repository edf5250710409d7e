"""Named exit codes of every rtai process, and the entry point that maps errors to them."""

from __future__ import annotations

import logging
import sys
from typing import Any

EXIT_OK = 0
EXIT_ERROR = 1  # an unexpected error reached a process's outer loop
EXIT_CONFIG = 2  # bad settings or command-line usage
EXIT_REDIS = 3  # Redis unreachable at start
EXIT_MODEL = 4  # model weights missing or unloadable
EXIT_SOURCE = 5  # the video source ended in state error
EXIT_CHILDREN = 6  # retired: a supervisor backs off and restarts its children instead of exiting


def exit_code_for(exc: BaseException) -> int:
    """The exit code that names what went wrong."""
    from .errors import ConfigError, ModelError, RedisUnavailableError, StreamError  # noqa: PLC0415

    for kind, code in (
        (ConfigError, EXIT_CONFIG),
        (RedisUnavailableError, EXIT_REDIS),
        (ModelError, EXIT_MODEL),
        (StreamError, EXIT_SOURCE),
    ):
        if isinstance(exc, kind):
            return code
    return EXIT_ERROR


def run_main(command: Any, **kwargs: Any) -> None:
    """Run a click command as a process's entry point: errors become the exit code that names them."""
    import click  # noqa: PLC0415

    from .errors import RtaiError  # noqa: PLC0415

    try:
        command.main(standalone_mode=False, **kwargs)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(EXIT_CONFIG if isinstance(exc, click.UsageError) else exc.exit_code)
    except RtaiError as exc:
        click.echo(f"rtai: error: {exc}", err=True)
        sys.exit(exit_code_for(exc))
    except KeyboardInterrupt:
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as exc:
        logging.getLogger("rtai").exception("unexpected error: %s", exc)
        sys.exit(EXIT_ERROR)
