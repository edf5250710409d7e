"""Named exit codes of every rtai process."""

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
