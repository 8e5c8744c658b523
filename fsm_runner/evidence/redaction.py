"""Keep secret values out of evidence: redact env dumps, mask captured output, scrub JSON documents.

Which variables are secret is decided by name (:func:`is_secret_key`); their *values* are then masked wherever
they appear, whatever the key that carried them. Masking is literal substring replacement, so a secret that a
command transforms (base64, URL-encoding, splitting) is not recognised: this is a guard against accidents, not
against a hostile command.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

from attrs import define, field, validators

from fsm_runner.errors import EvidenceError
from fsm_runner.evidence.atomic import _replacing

MASK = "***"

# A name is cut into words at non-alphanumerics and at camelCase boundaries ("apiKey" -> api, Key).
# A word is secret when it *ends with* one of these markers (so APIKEY, OPENAI_API_KEY, HF_TOKEN, OAUTH,
# DB_PASSWORD are secret) but a marker at the start of a longer word is not (KEYBOARD, AUTHOR, TOKENIZERS,
# KEYFILE). Plural TOKENS is deliberately absent: MAX_TOKENS and friends are not secrets.
_SECRET_WORD_SUFFIXES = (
    "KEY",
    "TOKEN",
    "SECRET",
    "SECRETS",
    "PASSWORD",
    "PASSWD",
    "PASSPHRASE",
    "CREDENTIAL",
    "CREDENTIALS",
    "AUTH",
    "AUTHORIZATION",
    "COOKIE",
)
# Whole words that are secret on their own (PASS as in DB_PASS; a suffix match would catch BYPASS, COMPASS).
_SECRET_WORDS = frozenset({"PASS", "PAT"})
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_NON_ALNUM = re.compile(r"[^A-Za-z0-9]+")

# Flag-like values a secret-looking key may hold (NO_AUTH=true): masking them would garble every log.
_NEVER_MASKED = frozenset({"true", "false", "yes", "no", "on", "off", "none", "null", "enabled", "disabled"})

_CHUNK = 1 << 20


def is_secret_key(name: str) -> bool:
    """Return True when a variable or JSON key named ``name`` probably holds a secret.

    Case-insensitive and word-based: a word of the name (split at ``_ - .`` and camelCase) must end with KEY,
    TOKEN, SECRET(S), PASSWORD, PASSWD, PASSPHRASE, CREDENTIAL(S), AUTH, AUTHORIZATION or COOKIE, or be PASS
    or PAT. ``OPENAI_API_KEY``, ``HF_TOKEN``, ``apiKey``, ``DB_PASS`` are secret; ``KEYBOARD``,
    ``GIT_AUTHOR_NAME``, ``TOKENIZERS_PARALLELISM``, ``MAX_TOKENS`` are not.
    """
    words = _NON_ALNUM.split(_CAMEL.sub("_", name))
    for word in words:
        upper = word.upper()
        if upper in _SECRET_WORDS or upper.endswith(_SECRET_WORD_SUFFIXES):
            return True
    return False


def _maskable(value: object, min_len: int) -> bool:
    return (
        isinstance(value, str)
        and len(value) >= min_len
        and value != MASK
        and value.strip().lower() not in _NEVER_MASKED
    )


def _normalise_values(values: Iterable[str], min_len: int) -> tuple[str, ...]:
    unique = {v for v in values if _maskable(v, min_len)}
    # Longest first: when one secret contains another, the whole of the longer one is masked.
    return tuple(sorted(unique, key=lambda v: (-len(v), v)))


def _values_converter(values: Iterable[str]) -> tuple[str, ...]:
    return _normalise_values(values, 1)


def _build_pattern(values: tuple[str, ...]) -> re.Pattern[str] | None:
    return re.compile("|".join(re.escape(v) for v in values)) if values else None


def _build_bytes_pattern(values: tuple[str, ...]) -> re.Pattern[bytes] | None:
    # A value from the environment that was not UTF-8 holds its bytes as surrogates: mask those bytes.
    encoded = sorted({v.encode("utf-8", "surrogateescape") for v in values}, key=lambda b: (-len(b), b))
    return re.compile(b"|".join(re.escape(b) for b in encoded)) if encoded else None


@define(frozen=True)
class Redactor:
    """Masks a fixed set of secret values; build it with :meth:`from_env` from the env a stage runs with.

    An empty redactor (no values) is valid and makes every method a cheap no-op.
    """

    values: tuple[str, ...] = field(
        default=(),
        converter=_values_converter,
        validator=validators.deep_iterable(validators.instance_of(str)),
    )
    _pattern: re.Pattern[str] | None = field(init=False, eq=False, repr=False)
    _bytes_pattern: re.Pattern[bytes] | None = field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_pattern", _build_pattern(self.values))
        object.__setattr__(self, "_bytes_pattern", _build_bytes_pattern(self.values))

    @classmethod
    def from_env(cls, env: Mapping[str, str], min_len: int = 4, extra: Iterable[str] = ()) -> Redactor:
        """Collect the values of secret-looking keys in ``env`` (plus ``extra`` values).

        Values shorter than ``min_len`` and flag-like values (``true``, ``false``, ``none``, ...) are not
        masked: masking them everywhere would wreck the evidence and protect nothing.
        """
        found = [v for k, v in env.items() if is_secret_key(k)]
        return cls(_normalise_values([*found, *extra], min_len))

    @property
    def active(self) -> bool:
        """True when there is at least one value to mask."""
        return bool(self.values)

    @property
    def longest(self) -> int:
        """The length in bytes (UTF-8) of the longest value, 0 when there is none."""
        return max((len(v.encode("utf-8", "surrogateescape")) for v in self.values), default=0)

    def mask_bytes(self, data: bytes) -> bytes:
        """:meth:`mask` for bytes (output read back from a file)."""
        if self._bytes_pattern is None or not data:
            return data
        return self._bytes_pattern.sub(MASK.encode(), data)

    def mask(self, text: str) -> str:
        """Replace every occurrence of a secret value in ``text`` by ``***``."""
        if self._pattern is None or not text:
            return text
        return self._pattern.sub(MASK, text)

    def redact_env(self, env: Mapping[str, str]) -> dict[str, str]:
        """Copy ``env`` for an evidence dump: secret-looking keys become ``***``, other values are masked."""
        return {k: MASK if is_secret_key(k) else self.mask(v) for k, v in env.items()}

    def scrub(self, obj: Any) -> Any:
        """Return a copy of a JSON-like value with secrets removed.

        Strings are masked; in mappings, a non-empty *string* value under a secret-looking key becomes ``***``
        (containers under such keys are scrubbed recursively instead, so a section named ``auth`` survives).
        Lists and tuples keep their type; other values are returned unchanged.
        """
        if isinstance(obj, str):
            return self.mask(obj)
        if isinstance(obj, Mapping):
            out: dict[Any, Any] = {}
            for key, value in obj.items():
                clean_key = self.mask(key) if isinstance(key, str) else key
                if isinstance(key, str) and isinstance(value, str) and value and is_secret_key(key):
                    out[clean_key] = MASK
                else:
                    out[clean_key] = self.scrub(value)
            return out
        if isinstance(obj, list):
            return [self.scrub(item) for item in obj]
        if isinstance(obj, tuple):
            return tuple(self.scrub(item) for item in obj)
        return obj

    def mask_file(self, path: Path, *, chunk_size: int = _CHUNK) -> int:
        """Mask secret values in the file at ``path``; return how many occurrences were masked.

        Streams the file in ``chunk_size`` (1 MiB) chunks, carrying an overlap of ``len(longest secret) - 1``
        bytes so a secret split across two chunks is still found; memory stays bounded whatever the file size.
        A file with a secret is replaced atomically (temp file + rename, same mode), so call this only once
        nothing writes to it any more: a process still writing would go on writing to the replaced file. A
        file without one is only read. Symlinks and anything but a regular file are left alone: what a link
        points to is not evidence.
        """
        pattern = self._bytes_pattern
        if pattern is None:
            return 0
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        path = Path(path)
        overlap = self.longest - 1
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # a symlink
                return 0
            raise EvidenceError(f"cannot mask secrets in {path}: {exc.strerror or exc}") from exc
        failure = f"cannot mask secrets in {path}"
        with os.fdopen(fd, "rb") as src:
            try:
                mode = os.fstat(fd).st_mode
                if not stat.S_ISREG(mode) or not _contains(src, pattern, chunk_size, overlap):
                    return 0  # the common case: read once, write nothing
                src.seek(0)
            except OSError as exc:
                raise EvidenceError(f"{failure}: {exc.strerror or exc}") from exc
            with _replacing(path, failure) as out_fd, os.fdopen(out_fd, "wb") as dst:
                os.fchmod(out_fd, stat.S_IMODE(mode))
                count = _copy_masked(src, dst, pattern, chunk_size, overlap)
                dst.flush()
                os.fsync(out_fd)
        return count

    def mask_tree(self, root: Path, *, skip: Iterable[str] = ()) -> int:
        """:meth:`mask_file` every regular file under ``root`` (symlinks are not followed); returns the count.

        ``skip`` names files (relative to ``root``, ``/``-separated) to leave alone: files this process
        still writes to (the run's events and journal) or has masked already. ``root`` is evidence: a file
        or directory a command made unreadable in it (``chmod 000``) is made readable by its owner first.
        """
        if self._bytes_pattern is None:
            return 0
        root = Path(root)
        skipped = set(skip)
        count = 0
        for folder, dirs, names in os.walk(root):
            for name in dirs:
                _let_owner_in(Path(folder, name), stat.S_IRWXU)
            for name in sorted(names):
                path = Path(folder, name)
                if path.relative_to(root).as_posix() in skipped:
                    continue
                _let_owner_in(path, stat.S_IRUSR | stat.S_IWUSR)
                try:
                    count += self.mask_file(path)
                except EvidenceError:
                    if os.path.lexists(path):
                        raise  # else it went away while we looked (a temp file renamed into place)
        return count


def _let_owner_in(path: Path, bits: int) -> None:
    """Add ``bits`` to the mode of ``path`` (never through a symlink) when it lacks them."""
    try:
        st = os.lstat(path)
        if not stat.S_ISLNK(st.st_mode) and st.st_mode & bits != bits:
            os.chmod(path, stat.S_IMODE(st.st_mode) | bits)
    except OSError:
        pass  # gone, or not ours: reading it says what is wrong


def _copy_masked(
    src: BinaryIO, dst: BinaryIO, pattern: re.Pattern[bytes], chunk_size: int, overlap: int
) -> int:
    """Copy ``src`` to ``dst`` with every match of ``pattern`` replaced by the mask; returns the count."""
    count = 0
    carry = b""
    while True:
        chunk = src.read(chunk_size)
        buf = carry + chunk
        if not chunk:
            masked, n = pattern.subn(MASK.encode(), buf)
            dst.write(masked)
            return count + n
        safe = len(buf) - overlap
        pos = 0
        for m in pattern.finditer(buf):
            if m.start() >= safe:
                break
            dst.write(buf[pos : m.start()])
            dst.write(MASK.encode())
            pos = m.end()
            count += 1
        keep_from = max(pos, safe)
        dst.write(buf[pos:keep_from])
        carry = buf[keep_from:]


def _contains(src: BinaryIO, pattern: re.Pattern[bytes], chunk_size: int, overlap: int) -> bool:
    """A read-only pass: does any secret occur in the file (across chunk boundaries too)?"""
    carry = b""
    while chunk := src.read(chunk_size):
        buf = carry + chunk
        if pattern.search(buf):
            return True
        carry = buf[-overlap:] if overlap else b""
    return False
