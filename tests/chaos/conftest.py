"""Fixtures of the chaos tests."""

from .netns import hosts  # noqa: F401 - the fixture: hosts as network namespaces
