"""Dataset names and refs: validation and routing to repositories or the atmosphere.

Routing follows atdata's rules (compat reference, section 6); validation is ours:
atdata accepts any name, which lets ``../../x`` escape the store root.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import InvalidNameError, InvalidRefError, InvalidRepositoryNameError

__all__ = ["ResolvedRef", "resolve_ref", "validate_dataset_name", "validate_repository_name", "split_repo_prefix",
           "parse_at_uri"]

MAX_NAME_LENGTH = 512
_CONTROL = re.compile(r"[\x00-\x1f\x7f\\]")
_AT_URI = re.compile(r"^at://(?P<authority>[^/\s]+)(?:/(?P<collection>[^/\s]+)(?:/(?P<rkey>[^/\s]+))?)?$")

ATMOSPHERE = "_atmosphere"
LOCAL = "local"


@dataclass(frozen=True)
class ResolvedRef:
    """Where a dataset ref points: a repository key (or ``_atmosphere``) and a name."""

    backend: str
    name: str
    handle: str | None = None

    @property
    def is_atmosphere(self) -> bool:
        return self.backend == ATMOSPHERE


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


_REPOSITORY_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")


def validate_repository_name(name: object, *, where: str = "repository name") -> str:
    """Check a named repository's mount name (``Index(repos={name: ...})``, the resource's
    and component's ``repos``) and return it: the one rule for all three.

    A name is 1-64 letters, digits, ``_``, ``-`` and ``.``, not starting with ``-`` or
    ``.``, and not ``local`` (the built-in repository) or ``_atmosphere``. It is the
    prefix of ``name/dataset`` refs, so it can contain no ``/`` or ``@``.
    """
    fix = "use 1-64 letters, digits, '_', '-' and '.' such as 'lab'"
    if not isinstance(name, str) or not _REPOSITORY_NAME.fullmatch(name):
        raise InvalidRepositoryNameError(f"{where} {name!r} is not a usable repository name; {fix}")
    if name in (LOCAL, ATMOSPHERE):
        raise InvalidRepositoryNameError(
            f"{where} {name!r} is not a usable repository name: it is reserved for the "
            f"{'built-in repository' if name == LOCAL else 'atmosphere'}; pick another name, {fix}"
        )
    return name


def validate_dataset_name(name: str) -> str:
    """Check that ``name`` is a safe dataset name and return it.

    A name is one or more ``/``-separated segments of printable characters, none of
    them empty, ``.`` or ``..``, at most 512 characters in all and 255 bytes per
    segment, with no NUL, backslash or control character. Such a name can be used
    as a directory prefix in any store without escaping its root.
    """
    if not isinstance(name, str):
        raise InvalidNameError(f"dataset name must be a string, got {type(name).__name__}")
    fix = "use letters, digits, '-', '_', '.' and '/' between non-empty segments, e.g. 'mnist/train'"
    if not name:
        raise InvalidNameError(f"dataset name is empty; {fix}")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidNameError(
            f"dataset name {name[:40]!r}... is {len(name)} characters long; the limit is {MAX_NAME_LENGTH}"
        )
    if not _encodable(name):
        raise InvalidNameError(f"dataset name {name!r:.80} contains a lone surrogate and is not valid unicode; {fix}")
    if _CONTROL.search(name):
        raise InvalidNameError(f"dataset name {name!r} contains a NUL, control character or backslash; {fix}")
    if name.startswith("/"):
        raise InvalidNameError(f"dataset name {name!r} is absolute; drop the leading '/'")
    for seg in name.split("/"):
        if seg in ("", ".", ".."):
            raise InvalidNameError(
                f"dataset name {name!r} has an empty, '.' or '..' segment, which could escape the store; {fix}"
            )
        if len(seg.encode("utf-8")) > 255:
            raise InvalidNameError(f"dataset name {name!r} has a segment longer than 255 bytes")
        if seg.startswith(".tmp"):
            raise InvalidNameError(f"dataset name {name!r}: segments starting with '.tmp' are reserved")
    return name


def parse_at_uri(uri: str) -> tuple[str, str | None, str | None]:
    """Split ``at://authority/collection/rkey`` into its parts (InvalidRefError if malformed)."""
    m = _AT_URI.match(uri or "")
    if not m:
        raise InvalidRefError(
            f"malformed AT URI {uri!r}; expected at://<did or handle>/<collection>/<rkey>"
        )
    return m.group("authority"), m.group("collection"), m.group("rkey")


def split_repo_prefix(name: str, mounted: set[str] | frozenset[str]) -> tuple[str, str]:
    """``"lab/mnist"`` -> ``("lab", "mnist")`` when ``lab`` is mounted; otherwise ``("local", name)``."""
    if "/" in name:
        head, rest = name.split("/", 1)
        if head == LOCAL or head in mounted:
            return head, rest
    return LOCAL, name


def resolve_ref(ref: str, mounted: set[str] | frozenset[str] = frozenset()) -> ResolvedRef:
    """Route a dataset ref as atdata does.

    ============================  =====================================
    ``at://...``                  atmosphere, the full URI
    ``@X/name`` (X local/mounted)  repository X
    ``@handle/name``              atmosphere, with handle
    ``@name``                     atmosphere, no handle
    ``atdata://X/.../name``       repository X if mounted, else atmosphere (handle X)
    ``local/name``, ``X/name``    that repository
    anything else                 local, the whole string as the name
    ============================  =====================================
    """
    if not isinstance(ref, str) or not ref:
        raise InvalidRefError(f"dataset ref must be a non-empty string, got {ref!r}")
    if not _encodable(ref):
        raise InvalidRefError(f"dataset ref {ref!r:.80} contains a lone surrogate and is not valid unicode")
    if ref.startswith("at://"):
        parse_at_uri(ref)
        return ResolvedRef(ATMOSPHERE, ref)
    if ref.startswith("@"):
        body = ref[1:]
        if not body:
            raise InvalidRefError("dataset ref '@' names nothing; use '@handle/name'")
        if "/" in body:
            head, rest = body.split("/", 1)
            if not rest:
                raise InvalidRefError(f"dataset ref {ref!r} has no dataset name after the handle")
            if head == LOCAL or head in mounted:
                return ResolvedRef(head, rest)
            return ResolvedRef(ATMOSPHERE, rest, handle=head)
        return ResolvedRef(ATMOSPHERE, body)
    if ref.startswith("atdata://"):
        body = ref[len("atdata://"):]
        authority, _, path = body.partition("/")
        name = path.rstrip("/").rsplit("/", 1)[-1] if path else ""
        if not authority or not name:
            raise InvalidRefError(f"malformed atdata ref {ref!r}; expected atdata://<repo>/<kind>/<name>")
        if authority == LOCAL or authority in mounted:
            return ResolvedRef(authority, name)
        return ResolvedRef(ATMOSPHERE, name, handle=authority)
    backend, name = split_repo_prefix(ref, mounted)
    return ResolvedRef(backend, name)
