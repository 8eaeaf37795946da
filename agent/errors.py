"""The agent's own errors, as leaves of the one tree in ``shared/errors.py``.

    LLMConfigError
    ├── InvalidInput
    │   └── RenderError      a value or template cannot be rendered in the asked format
    ├── FileSetError         the output directory cannot be written or read safely
    ├── CacheError           the offline cache cannot be opened or written
    └── ReloadFailed         the app could not be told to reload (retriable)

Messages name files, settings and template lines, never a config value, a secret or a token.
"""

from __future__ import annotations

from shared.errors import InvalidInput, LLMConfigError


class RenderError(InvalidInput):
    code = "render_failed"
    title = "Configuration could not be rendered"


class FileSetError(LLMConfigError):
    code = "fileset_error"
    title = "Output directory could not be written"


class CacheError(LLMConfigError):
    code = "cache_error"
    title = "Offline cache unavailable"


class ReloadFailed(LLMConfigError):
    """``output`` holds the tail of a reload command's output, kept out of the message on purpose:
    the caller decides whether to log it (a tool may echo the config it read)."""

    code = "reload_failed"
    title = "The app could not be reloaded"
    retriable = True
    output: str = ""
