"""Output folders that are safe to write, resume and overwrite.

Every command that writes a folder calls :func:`prepare_output_dir` before doing any work (and
every command that writes a single file calls :func:`check_output_file`). The rules, the same
for every command (docs/safety.md):

* ``--out`` may not be the working directory, the home directory, the filesystem root, or a
  folder that contains one of them; nor equal to, inside, or containing any input of the command.
* A new or empty folder is claimed: a marker file ``.spatialforge-output.json`` records which
  kind of output it holds (``dataset``, ``scenes``, ``eval-run``, ...).
* A non-empty folder without the marker is never written into, with or without ``--overwrite``.
  A folder with the marker of another kind is refused too.
* A folder with the marker of the same kind is resumed (the command checks its own fingerprint),
  or, with ``--overwrite``, cleared of the entries that kind writes (:class:`OutputKind.owns`);
  anything else a user put there is left where it is and reported.

Files are written with the permissions the umask allows (``0644`` files, ``0755`` folders
under umask 022), also where they are first written under a temporary name and renamed.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from spatialforge.errors import ConfigError

__all__ = [
    "MARKER",
    "OutputKind",
    "PreparedOutput",
    "apply_umask",
    "atomic_path",
    "check_output_file",
    "check_output_location",
    "current_umask",
    "make_temp_dir",
    "prepare_output_dir",
    "read_marker",
]

MARKER = ".spatialforge-output.json"
_FORMAT = "spatialforge-output/1"
# temporary names of interrupted atomic writes (".name.XXXX.tmp", ".name.XXXX.old")
_TEMP_PATTERNS = (".*.tmp", ".*.old")


@dataclass(frozen=True)
class OutputKind:
    """A kind of output folder: its name (stored in the marker) and the top-level entries it writes.

    ``owns`` holds glob patterns of the top-level names this kind creates; ``--overwrite`` deletes
    exactly those (and the marker), nothing else.
    """

    name: str
    owns: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.name or not self.owns:
            raise ValueError("an OutputKind needs a name and at least one owned pattern")

    def owned(self, entry: str) -> bool:
        return entry == MARKER or any(fnmatch.fnmatchcase(entry, p) for p in self.owns + _TEMP_PATTERNS)


@dataclass(frozen=True)
class PreparedOutput:
    """What :func:`prepare_output_dir` found and did."""

    path: Path
    kind: OutputKind
    resumed: bool  # the folder already held output of this kind (and was not overwritten)
    removed: tuple[str, ...] = ()  # entries deleted by --overwrite
    kept: tuple[str, ...] = field(default=())  # entries --overwrite left alone (not written by spatialforge)


# ----------------------------------------------------------------------------- permissions
def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux ``/proc``)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # the portable way: set and restore
    os.umask(mask)
    return mask


def apply_umask(path: str | os.PathLike[str], *, directory: bool | None = None) -> None:
    """Give ``path`` the mode a plain ``open``/``mkdir`` would have given it under the umask.

    ``tempfile.mkstemp`` / ``mkdtemp`` create 0600 / 0700 whatever the umask; call this before the
    rename that publishes such a file or folder.
    """
    p = Path(path)
    is_dir = p.is_dir() if directory is None else directory
    os.chmod(p, (0o777 if is_dir else 0o666) & ~current_umask())


def make_temp_dir(parent: str | os.PathLike[str], prefix: str, suffix: str = ".tmp") -> Path:
    """A hidden temporary folder in ``parent`` with the umask's permissions (to be renamed into place)."""
    Path(parent).mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=parent))
    apply_umask(tmp, directory=True)
    return tmp


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed to ``path`` (umask mode).

    On any error (or interrupt) the temporary file is removed and ``path`` is untouched.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        apply_umask(tmp, directory=False)
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# ----------------------------------------------------------------------------- safety rules
def _resolve(p: str | os.PathLike[str]) -> Path:
    return Path(os.path.abspath(os.path.expanduser(os.fspath(p)))).resolve()


def _inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def _protected() -> list[tuple[Path, str]]:
    places = [(_resolve(os.getcwd()), "the working directory"), (_resolve("/"), "the filesystem root")]
    with contextlib.suppress(KeyError, RuntimeError):  # no home (some containers)
        places.append((_resolve(Path.home()), "the home directory"))
    return places


def check_output_location(out: str | os.PathLike[str], inputs: Iterable[str | os.PathLike[str] | None] = (),
                          *, flag: str = "--out") -> Path:
    """Refuse an output location that would write over something that is not output.

    Returns the resolved path. Raises :class:`ConfigError` naming ``flag`` and the reason.
    """
    target = _resolve(out)
    places = _protected()
    for place, what in places:
        if target == place:
            raise ConfigError(f"{flag} {out}: refusing to write into {what}; give a new folder")
    for place, what in places:
        if _inside(place, target):
            raise ConfigError(f"{flag} {out}: refusing a folder that contains {what} ({place}); give a new folder")
    _check_inputs(out, target, inputs, flag, folder=True)
    return target


def _check_inputs(out: Any, target: Path, inputs: Iterable[Any], flag: str, *, folder: bool) -> None:
    """Refuse an output equal to or inside an input, or (a folder) containing one."""
    what = "folder" if folder else "file name"
    for inp in inputs:
        if inp is None:
            continue
        src = _resolve(inp)
        if target == src:
            raise ConfigError(f"{flag} {out}: is the input {inp}; give a separate output {what}")
        if _inside(target, src):
            raise ConfigError(f"{flag} {out}: lies inside the input {inp}; write it outside")
        if folder and _inside(src, target):
            raise ConfigError(f"{flag} {out}: contains the input {inp}; give a folder that does not hold it")


def read_marker(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The marker of a spatialforge output folder, or ``None`` when there is none (or it is unreadable)."""
    path = Path(folder) / MARKER
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) and data.get("format") == _FORMAT else None


def _write_marker(folder: Path, kind: OutputKind) -> None:
    from spatialforge import __version__

    data = {"format": _FORMAT, "kind": kind.name, "spatialforge": __version__,
            "created": datetime.now(UTC).isoformat(timespec="seconds")}
    with atomic_path(folder / MARKER) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def prepare_output_dir(out: str | os.PathLike[str], kind: OutputKind, *,
                       inputs: Iterable[str | os.PathLike[str] | None] = (), overwrite: bool = False,
                       flag: str = "--out") -> PreparedOutput:
    """Check ``out`` against the rules above, claim it for ``kind`` and return what was found.

    Call before any work (and before loading models), so a refused folder costs nothing. A folder that
    is resumed (``resumed=True``, no ``overwrite``) is only checked: nothing in it is written or deleted.
    """
    inputs = list(inputs)
    check_output_location(out, inputs, flag=flag)
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{flag} {out}: exists and is not a folder")
    entries = sorted(e.name for e in folder.iterdir() if e.name != MARKER) if folder.is_dir() else []
    if not entries:  # new, empty, or holding only a marker
        folder.mkdir(parents=True, exist_ok=True)
        _write_marker(folder, kind)
        return PreparedOutput(folder, kind, resumed=False)
    marker = read_marker(folder)
    if marker is None:
        how = "--overwrite only replaces folders spatialforge wrote" if overwrite else "give a new or empty folder"
        shown = ", ".join(entries[:5]) + (" ..." if len(entries) > 5 else "")
        raise ConfigError(f"{flag} {out}: is not empty ({shown}) and was not written by spatialforge; {how}")
    if marker.get("kind") != kind.name:
        raise ConfigError(f"{flag} {out}: holds spatialforge {marker.get('kind')!r} output, not {kind.name!r}; "
                          "give another folder")
    if not overwrite:
        return PreparedOutput(folder, kind, resumed=True)
    removed, kept = [MARKER], []
    for name in entries:
        if kind.owned(name):
            _remove(folder / name)
            removed.append(name)
        else:
            kept.append(name)
    _write_marker(folder, kind)
    return PreparedOutput(folder, kind, resumed=False, removed=tuple(removed), kept=tuple(kept))


def check_output_file(out: str | os.PathLike[str], inputs: Iterable[str | os.PathLike[str] | None] = (), *,
                      flag: str = "--out", suffixes: tuple[str, ...] = ()) -> Path:
    """Check a single output file: not inside (or equal to) an input, not a folder, the right suffix."""
    path = Path(out)
    _check_inputs(out, _resolve(out), inputs, flag, folder=False)
    if path.is_dir():
        raise ConfigError(f"{flag} {out}: is a folder; give a file name")
    if suffixes and path.suffix.lower() not in suffixes:
        raise ConfigError(f"{flag} {out}: expected a {' or '.join(suffixes)} file name")
    return path
