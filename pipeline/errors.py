"""How a stage run ends for the user: bad input, a full disk, Ctrl-C, a second run at once.

A ``UserError`` names the problem and the fix; stage scripts turn it into one clear
message and exit status 2 instead of a traceback. Writing errors the user must fix (a full
disk, a read-only folder, an output path that is a folder) are reported the same way,
naming the path. Ctrl-C stops the stage with one line and exit status 130 (its staged
outputs are discarded on the way out). ``output_lock`` refuses a second run of a stage
writing the same output while the first one runs.

Everything here is written once and used by every stage (``exit_on_user_error`` around its
``main``, ``output_lock`` around its writing), so no stage handles these on its own.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import fcntl
import functools
import hashlib
import os
import signal
import socket
import sys
import tempfile
import threading
from pathlib import Path
from typing import Callable, Iterator


class UserError(Exception):
    """Something the user can fix (params, paths, data); the message says how."""


INTERRUPTED = 130  # the shell's status for a process stopped by SIGINT (128 + 2)
NOTHING_WRITTEN = "nothing was written"

_FIXES = {
    errno.ENOSPC: "free disk space and re-run",
    errno.EDQUOT: "free space within your disk quota and re-run",
    errno.EACCES: "make it writable (or run as its owner) and re-run",
    errno.EPERM: "make it writable (or run as its owner) and re-run",
    errno.EROFS: "the file system is read-only: write the outputs elsewhere",
    errno.EISDIR: "remove the folder or choose another output path",
    errno.ENOTDIR: "a parent of the path is a file: remove it or choose another output path",
}

# Set by ``pipeline.dist.relaunch_under_torchrun`` for the ranks it starts: a folder where a rank
# leaves its one-line error (the parent prints it once, instead of one line per rank and
# torchrun's ChildFailedError traceback).
RANK_ERRORS_ENV = "SSL_PIPELINE_RANK_ERRORS"
# Set while a process holds an output lock, so the ranks it starts under torchrun (which
# inherit its environment) do not try to take the lock their parent holds.
_LOCK_HELD_ENV = "SSL_PIPELINE_OUTPUT_LOCK"


def describe_os_error(err: OSError) -> str | None:
    """One line for the I/O errors a user must fix, or None for the others (bugs)."""
    fix = _FIXES.get(err.errno)
    if fix is None:
        return None
    where = err.filename or "an output file"
    return f"cannot write {where}: {err.strerror or 'I/O error'}; {fix}"


@contextlib.contextmanager
def naming(path: str | Path) -> Iterator[None]:
    """Give ``path`` to an ``OSError`` raised inside without a file name (a tar writer's full
    disk reports none), so the one-line message names where the stage was writing."""
    try:
        yield
    except OSError as err:
        if err.filename is None and err.errno in _FIXES:
            raise OSError(err.errno, err.strerror, str(path)) from err
        raise


def exit_on_user_error(main: Callable[[], None] | None = None, *, kept: str = NOTHING_WRITTEN):
    """Wrap a stage's ``main`` so a ``UserError`` (or a disk/permission error) prints
    ``error: ...`` and exits 2, and Ctrl-C prints ``error: interrupted; <kept>`` and exits 130,
    without a traceback. ``kept``: what an interrupted run leaves (e.g. its last checkpoint).

    Use as ``@exit_on_user_error`` or ``@exit_on_user_error(kept="...")``."""
    if main is None:
        return functools.partial(exit_on_user_error, kept=kept)

    @functools.wraps(main)
    def wrapper() -> None:
        try:
            main()
        except UserError as err:
            _fail(str(err), 2)
        except KeyboardInterrupt:  # the staged outputs and the worker pool were cleaned up on the way here
            try:
                _fail(f"interrupted; {kept}", INTERRUPTED)
            except SystemExit:
                _exit_now(INTERRUPTED)
        except OSError as err:
            message = describe_os_error(err)
            if message is None:
                raise
            _fail(message, 2)

    return wrapper


def _fail(message: str, status: int) -> None:
    """Print ``error: message`` and exit with ``status``; a rank started by the stage's own
    torchrun parent leaves the line for the parent instead (it prints it once)."""
    folder = os.environ.get(RANK_ERRORS_ENV)
    if folder and os.path.isdir(folder):
        rank = os.environ.get("RANK", "0")
        Path(folder, f"rank-{int(rank):05d}").write_text(f"{status}\n{message}\n")
    else:
        print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(status)


def _exit_now(status: int) -> None:
    """Exit at once after the exit handlers (multiprocessing's, which reap child processes): the
    interpreter's teardown of torch and the imported modules took 1-4 s more on a busy 2-core
    machine, time a user who pressed Ctrl-C waits for nothing."""
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


@contextlib.contextmanager
def interrupts_ignored() -> Iterator[None]:
    """Ctrl-C ignored while the block runs, e.g. while a pool forks its workers: a child forked
    here starts with SIGINT ignored (before its own code runs), so a Ctrl-C while the pool
    starts cannot kill a worker mid-start (a traceback, and a pool that may hang)."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def rank_error(folder: str | Path) -> tuple[int, str] | None:
    """(exit status, one line) that the lowest failed rank left in ``folder``, or None."""
    files = sorted(Path(folder).glob("rank-*"))
    if not files:
        return None
    status, message = files[0].read_text().split("\n", 1)
    return int(status), message.strip()


def ignore_interrupts() -> None:
    """For worker processes of a pool: Ctrl-C reaches every process of the terminal's group,
    and a worker that dies of it mid-task can leave its pool waiting forever. The stage's
    main process alone handles it, and terminates the pool on the way out."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _lock_path(output: Path) -> Path:
    """The lock file of an output: in this user's temporary folder, keyed by the output's
    absolute path, so no file appears beside the outputs (DVC hashes the folders that hold
    them, e.g. ``metrics/``)."""
    key = hashlib.sha256(str(output.resolve()).encode()).hexdigest()[:20]
    folder = Path(tempfile.gettempdir()) / f"ssl-pipeline-locks-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    return folder / f"{key}.lock"


@contextlib.contextmanager
def output_lock(output: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on ``output`` (a stage's output folder or file) while the stage
    runs; a second run writing the same output refuses at once, naming the process that holds
    it. The kernel drops the lock when its process ends, however it ends (kill -9 included), so
    a lock is never stale. Ranks of a torchrun (other than rank 0) and processes whose parent
    holds the lock run without one. Same host only (``flock`` on a local lock file)."""
    output = Path(output)
    key = str(output.resolve())
    if os.environ.get(_LOCK_HELD_ENV) == key or int(os.environ.get("RANK", "0")) != 0:
        yield
        return
    fd = os.open(_lock_path(output), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "another process"
            raise UserError(f"{output} is being written by another run of this stage ({holder}); wait for it to "
                            "finish or stop it, then re-run") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}: {' '.join(sys.argv)}".encode(), 0)
        os.environ[_LOCK_HELD_ENV] = key
        try:
            yield
        finally:
            os.environ.pop(_LOCK_HELD_ENV, None)
    finally:
        os.close(fd)  # releases the lock
