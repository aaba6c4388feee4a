"""Exceptions MedSR raises for problems a user can fix.

Every ``MedSRError`` message is one sentence that names the problem and what to do; the CLI prints it as is and exits
with code 2, the Slicer panel shows it in a dialog.
"""


class MedSRError(Exception):
    """A problem with the user's input, options or environment (not a bug in MedSR)."""


class InputError(MedSRError):
    """The input volume, path or option is unusable."""


class CheckpointError(MedSRError):
    """A checkpoint file is missing, corrupt, or does not fit the requested method or scale."""


class MemoryBudgetError(MedSRError):
    """The work would need more memory than the configured budget."""


class Cancelled(MedSRError):
    """The user cancelled a running job."""
