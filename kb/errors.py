"""Errors that reach a user as one clear sentence."""

from __future__ import annotations


class KBError(Exception):
    """Base class: the message is shown to the user as it is."""


class UnsupportedFormat(KBError):
    pass


class DocumentError(KBError):
    """A file could not be read as a document (empty, binary, corrupt, too large)."""


class IndexNotFound(KBError):
    pass


class IndexMismatch(KBError):
    pass


class IndexDamaged(KBError):
    """Part of an index cannot be read or does not hold what it should: rebuild it."""


class UnknownPassage(KBError):
    pass


class EmptyQuery(KBError):
    pass


class OldFormat(KBError):
    """An index written by an older kb: `kb index` migrates it."""


class IndexBusy(KBError):
    pass
