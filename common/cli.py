"""Clean errors for every command line: a mistake the user can fix is one line and exit 2, not a traceback.

    if __name__ == "__main__":
        sys.exit(run_main(main))

`run_main` calls `main(argv)`. If it raises an error the user can act on (a bad or missing path,
a file where a directory belongs, a damaged database, a model or store that cannot be opened, a
locked store, an invalid argument, a missing package) it prints `error: <thing>: <what to do>`
to stderr and returns 2. `-v` / `--verbose` anywhere in the arguments shows the traceback too.
Anything else is a bug and keeps its traceback. Only the standard library is imported here, so
each package can use it without depending on the others: project errors are recognised by class
name (`USER_ERROR_NAMES`), which also covers their subclasses.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import sys
import traceback
from typing import Callable, Iterable, Sequence

EXIT_USER_ERROR = 2
VERBOSE_FLAGS = ("-v", "--verbose")
# Project exceptions whose message already names the thing and what to do.
USER_ERROR_NAMES = frozenset({"StoreError", "ModelLoadError", "FactValidationError", "ConfigError", "UserError"})
_BUILTIN_USER_ERRORS = (OSError, ValueError, ImportError, sqlite3.DatabaseError)

_OS_HINTS = {
    errno.ENOENT: "check the path",
    errno.EEXIST: "a file is in the way; give another path or move it",
    errno.ENOTDIR: "a file is where a directory belongs; give a directory",
    errno.EISDIR: "a directory is where a file belongs; give a file",
    errno.EACCES: "check its permissions",
    errno.EPERM: "check its permissions",
    errno.ENOSPC: "free some disk space",
    errno.EROFS: "the file system is read-only; use a writable path",
}


def is_user_error(exc: BaseException, extra: Iterable[type | str] = ()) -> bool:
    """True when `exc` is an error the user can fix (see the module docstring)."""
    names = set(USER_ERROR_NAMES) | {x for x in extra if isinstance(x, str)}
    types = _BUILTIN_USER_ERRORS + tuple(x for x in extra if isinstance(x, type))
    return isinstance(exc, types) or any(cls.__name__ in names for cls in type(exc).__mro__)


def describe(exc: BaseException) -> str:
    """`<thing>: <what to do>` for an exception (without the leading "error: ")."""
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        hint = _OS_HINTS.get(exc.errno, "check the path")
        return f"{exc.filename}: {exc.strerror.lower()}; {hint}"
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, ImportError) and "pip install" not in text:
        package = exc.name or "the missing package"
        return f"{text}: install it (pip install {package})"
    if isinstance(exc, sqlite3.DatabaseError) and type(exc).__module__ == "sqlite3":
        return f"{text}: the database file is damaged or not SQLite; restore it from a backup or re-create it"
    return text


def run_main(main: Callable[[list[str]], int | None], argv: Sequence[str] | None = None, *,
             user_errors: Iterable[type | str] = (), strip_verbose: bool = False) -> int:
    """Run `main(argv)` and turn user errors into one line on stderr and exit status 2.

    Args:
        main: the command's entry point; returns an exit status (None counts as 0).
        argv: the arguments (default: sys.argv[1:]).
        user_errors: more exception classes (or class names) to treat as user errors.
        strip_verbose: remove -v/--verbose before calling `main` (for parsers that do not define it).
    Returns the exit status: main's, 2 for a user error, 130 on Ctrl-C, 141 when stdout's reader went away.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    verbose = any(a in VERBOSE_FLAGS for a in args)
    if strip_verbose:
        args = [a for a in args if a not in VERBOSE_FLAGS]
    try:
        status = main(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `... | head` closed the pipe: not an error to report (Python's documented recipe)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except SystemExit:
        raise
    except Exception as e:  # noqa: BLE001 - sorted into user errors and bugs below
        if not is_user_error(e, user_errors):
            raise
        if verbose:
            traceback.print_exc()
        hint = "" if verbose else " (-v shows the traceback)"
        print(f"error: {describe(e)}{hint}", file=sys.stderr)
        return EXIT_USER_ERROR
    return 0 if status is None else int(status)
