"""The one progress / cancel protocol every long loop in MedSR uses.

A progress callback receives ``(done, total)`` in whatever unit the loop counts (windows, slices, iterations); a cancel
check returns True when the user asked to stop. Loops call :func:`report` between units of work.
"""
from typing import Callable, Optional

from .errors import Cancelled

ProgressCallback = Callable[[int, int], None]
CancelCheck = Callable[[], bool]


def report(done: int, total: int, progress: Optional[ProgressCallback] = None,
           cancel: Optional[CancelCheck] = None) -> None:
    """Tell ``progress`` how far we are, then raise :class:`Cancelled` if ``cancel`` says so."""
    if progress is not None:
        progress(done, total)
    if cancel is not None and cancel():
        raise Cancelled("Cancelled by the user; nothing was written.")
