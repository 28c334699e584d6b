"""Files and folders that leave nothing behind when the process dies, even by SIGKILL.

- `PendingFile(directory)`: a file being written that has no name until `publish(path)`. On Linux it is created
  with `O_TMPFILE`, so the kernel reclaims it when the process dies before publishing; `path` (`/proc/self/fd/N`)
  reopens it for libraries that want a file name (PyAV, PIL). Where `O_TMPFILE` is unavailable (another OS, a file
  system without it) it is a hidden file named after the process, which `discard()` removes and which the next
  `PendingFile` in that folder removes once the process that made it is gone.
- `owned_name(prefix)` / `remove_abandoned(directory, prefix)`: temporary folders (conversion staging, training
  checkpoints in progress) named after the process that makes them, and their removal once that process is dead.
- `file_mode()` / `set_file_modes(folder)`: the mode a new file gets from the umask (0644 under the usual 022):
  what published files carry.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import shutil
from pathlib import Path

_AT_FDCWD = -100
_AT_SYMLINK_FOLLOW = 0x400
_libc = None


def file_mode() -> int:
    """`0o666` less the process's umask: the permissions `open()` gives a new file."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def set_file_modes(folder: str | os.PathLike) -> None:
    """Give every file directly in `folder` the permissions of a new file (`file_mode()`): what a folder written
    through temporary files (0600, e.g. transformers' model.safetensors) needs before it is published."""
    mode = file_mode()
    for entry in Path(folder).iterdir():
        if entry.is_file() and not entry.is_symlink():
            os.chmod(entry, mode)


def owned_name(prefix: str) -> str:
    """`PREFIX<pid>-<random>`: a temporary name that `remove_abandoned` can tell is abandoned."""
    return f"{prefix}{os.getpid()}-{os.urandom(4).hex()}"


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_abandoned(directory: str | os.PathLike, prefix: str) -> list[Path]:
    """Remove the files and folders `PREFIX<pid>-...` in `directory` whose process is no longer running (left by
    a SIGKILL or a crash); returns what was removed."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    pattern = re.compile(re.escape(prefix) + r"(\d+)-")
    removed = []
    for entry in directory.iterdir():
        match = pattern.match(entry.name)
        if match is None or _process_alive(int(match.group(1))):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def _link(fd: int, destination: Path) -> None:
    """Give the unnamed file behind `fd` the name `destination` (linkat through /proc, no privilege needed)."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    if _libc.linkat(_AT_FDCWD, f"/proc/self/fd/{fd}".encode(), _AT_FDCWD, os.fsencode(destination),
                    _AT_SYMLINK_FOLLOW) != 0:  # fmt: skip
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(destination))


def _open_unnamed(directory: Path) -> int | None:
    """An `O_TMPFILE` descriptor in `directory`, or None where the OS or the file system has none."""
    flag = getattr(os, "O_TMPFILE", None)
    if flag is None or not Path("/proc/self/fd").is_dir():
        return None
    try:
        return os.open(directory, flag | os.O_RDWR | os.O_CLOEXEC, 0o600)
    except OSError as error:
        if error.errno in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):  # no O_TMPFILE on this file system
            return None
        raise


class PendingFile:
    """A file written in `directory` that gets its name only when complete (see the module docstring).

    Use `path` (or `fileno()`) to write it, then `publish(destination)` (atomic: `destination` is replaced in one
    step, with the permissions of a new file) or `discard()`.
    """

    def __init__(self, directory: str | os.PathLike, name_hint: str = "", suffix: str = ""):
        self.directory = Path(directory)
        self._named: Path | None = None
        self._fd: int | None = _open_unnamed(self.directory)
        if self._fd is None:
            prefix = f".{name_hint}.part-"
            remove_abandoned(self.directory, prefix)
            self._named = self.directory / (owned_name(prefix) + suffix)
            self._fd = os.open(self._named, os.O_CREAT | os.O_EXCL | os.O_RDWR | getattr(os, "O_CLOEXEC", 0), 0o600)
        self.path = self._named or Path(f"/proc/self/fd/{self._fd}")

    @property
    def closed(self) -> bool:
        return self._fd is None

    def fileno(self) -> int:
        if self._fd is None:
            raise ValueError("the pending file is closed")
        return self._fd

    def publish(self, destination: str | os.PathLike) -> Path:
        """Flush the file to disk and give it the name `destination` (replacing any file there) in one step."""
        destination = Path(destination)
        fd = self.fileno()
        os.fchmod(fd, file_mode())
        os.fsync(fd)
        if self._named is not None:
            os.replace(self._named, destination)
        else:
            try:
                _link(fd, destination)
            except FileExistsError:  # replace it: link under a hidden name, then rename over it
                remove_abandoned(destination.parent, f".{destination.name}.part-")  # a killed run's, if any
                staged = destination.with_name(owned_name(f".{destination.name}.part-"))
                _link(fd, staged)
                os.replace(staged, destination)
        self._named = None
        self._close()
        return destination

    def discard(self) -> None:
        """Close and forget the file (nothing was ever visible under its destination)."""
        if self._named is not None:
            self._named.unlink(missing_ok=True)
            self._named = None
        self._close()

    def _close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` (UTF-8) through a temporary file in the same folder renamed over it, with the
    permissions of a new file (`file_mode()`); the folder is created if missing. A reader never sees half of it."""
    import tempfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(temp, file_mode())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
