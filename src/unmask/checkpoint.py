"""Writing run directories safely: atomic writes, one writer per run, verified training states.

checkpoints/ holds the last K training states (model, optimiser, step, data position, RNG
states: everything --resume needs; the format is unmask.training.state.TrainState's) and
manifest.json with a SHA-256 per file, so a torn or corrupt one is detected and skipped.
The layout of a whole run directory is described in unmask.run.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from unmask import __version__
from unmask.config import ConfigError, UnmaskError, WriteError, os_reason

CHECKPOINT_NAME = "step_{step:09d}.pt"


@contextmanager
def writing(path: Path, fix: str = "free space (or choose another folder) and run it again") -> Iterator[None]:
    """Turn a writer's failure with an OS cause (disk full, no permission; torch, safetensors, pyarrow and
    Python alike) into one WriteError naming the file, in the OS's own words."""
    try:
        yield
    except UnmaskError:
        raise
    except Exception as e:
        reason = os_reason(e)
        if reason is None:
            raise
        raise WriteError(f"could not write {path}: {reason}; {fix}") from None


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temporary file + fsync + rename: readers see the old file or the new one, never half (a failed
    write leaves the old file and no temporary one: one WriteError naming the file)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary sibling of `path` to write (any writer); renamed over `path` when the block ends, removed if it
    fails. An OS refusal is one WriteError naming `path`."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with writing(path):
        try:
            yield tmp
            tmp.replace(path)
        except BaseException:
            tmp.unlink(missing_ok=True)  # never leave a half-written file behind
            raise
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    """Make a rename durable: the directory entry itself must reach the disk."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # not supported on this platform (Windows)
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def warn(message: str) -> None:
    print(f"unmask: warning: {message}", file=sys.stderr, flush=True)


class Checkpoints:
    """The last `keep` training states of a run, each verified by its SHA-256 on load.

    A checkpoint is written to a temporary file, fsynced and renamed; only then does the
    manifest (itself replaced atomically) list it, and only then are older ones deleted. A
    kill at any instant therefore leaves the manifest pointing at complete files, and a
    file that was damaged afterwards (truncated copy, bad disk) fails its checksum and the
    previous checkpoint is used instead, with a warning.
    """

    def __init__(self, run: Path, keep: int = 3):
        self.dir = Path(run) / "checkpoints"
        self.manifest = self.dir / "manifest.json"
        self.keep = keep

    def entries(self) -> list[dict[str, Any]]:
        """Manifest entries, oldest first ({step, file, sha256, bytes}).

        A missing, empty or damaged manifest never hides checkpoints that exist: the list is rebuilt
        from the step_*.pt files themselves (without checksums; each must still load).
        """
        on_disk = self._files_on_disk()
        try:
            listed = json.loads(self.manifest.read_text())["checkpoints"]
            if isinstance(listed, list) and all(_valid_entry(e) for e in listed) and (listed or not on_disk):
                return listed
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
            pass
        if on_disk:
            warn(f"{self.manifest} is missing or damaged; using the checkpoint files found in {self.dir}")
        return on_disk

    def _files_on_disk(self) -> list[dict[str, Any]]:
        found = []
        for p in self.dir.glob("step_*.pt"):
            digits = p.stem.removeprefix("step_")
            if digits.isdigit() and p.is_file():
                found.append({"step": int(digits), "file": p.name})
        return sorted(found, key=lambda e: e["step"])

    def latest(self) -> dict[str, Any] | None:
        entries = self.entries()
        return entries[-1] if entries else None

    def save(self, step: int, state: dict[str, Any]) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        listed = [e for e in self.entries() if e["step"] != step]  # before the new file joins the folder
        path = self.dir / CHECKPOINT_NAME.format(step=step)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as f:
                torch.save(state, f)
                f.flush()
                os.fsync(f.fileno())
            entry = {"step": step, "file": path.name, "sha256": sha256_of(tmp), "bytes": tmp.stat().st_size}
            tmp.replace(path)
            _fsync_dir(self.dir)
        except BaseException:
            tmp.unlink(missing_ok=True)  # never leave a half-written file behind
            raise
        entries = listed + [entry]
        atomic_write_text(self.manifest, json.dumps({"checkpoints": entries[-self.keep :]}, indent=1))
        for old in entries[: -self.keep]:
            (self.dir / old["file"]).unlink(missing_ok=True)
        return path

    def load_latest(self) -> tuple[dict[str, Any], Path] | None:
        """The newest checkpoint that passes its checksum and loads; None when the run has none."""
        for stale in self.dir.glob("*.tmp"):  # left by a kill mid-write
            stale.unlink()
        entries = self.entries()
        for entry in reversed(entries):
            path = self.dir / entry["file"]
            problem = _verify(path, entry)
            if problem is None:
                try:
                    return load_state(path), path
                except Exception as e:  # a file that passed no checksum (unreadable manifest) can still be torn
                    problem = f"it does not load ({type(e).__name__})"
            older = [e["file"] for e in entries if e["step"] < entry["step"]]
            fallback = f"falling back to {older[-1]}" if older else "no older checkpoint is left"
            warn(f"checkpoint {path} is unusable: {problem}; {fallback}")
        if entries:
            raise ConfigError(
                f"every checkpoint in {self.dir} is corrupt; the run cannot be resumed, start it again with a new --out"
            )
        return None


def _valid_entry(entry: Any) -> bool:
    return (
        isinstance(entry, dict)
        and isinstance(entry.get("step"), int)
        and isinstance(entry.get("file"), str)
        and entry["file"] == CHECKPOINT_NAME.format(step=entry["step"])  # never a path outside checkpoints/
    )


def _verify(path: Path, entry: dict[str, Any]) -> str | None:
    if not path.is_file():
        return "the file is missing"
    if "bytes" in entry and path.stat().st_size != entry["bytes"]:
        return f"it has {path.stat().st_size} bytes, the manifest says {entry['bytes']} (truncated?)"
    if "sha256" in entry and sha256_of(path) != entry["sha256"]:
        return "its SHA-256 does not match the manifest"
    return None


def load_state(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)  # never unpickles code


def check_output_dir(out: Path, needed_bytes: int) -> None:
    """Fail before any work when `out` cannot be created/written or its disk cannot hold a checkpoint."""
    out = Path(out).absolute()
    existing = next(p for p in (out, *out.parents) if p.exists())
    if not existing.is_dir():
        raise ConfigError(f"cannot create output {out}: {existing} is a file, not a directory; choose another --out")
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".unmask-write-test-"):
            pass
    except OSError as e:
        raise ConfigError(f"output {out} is not writable ({e.strerror}); choose another --out") from None
    free = shutil.disk_usage(existing).free
    if free < needed_bytes:
        raise ConfigError(
            f"not enough disk space for {out}: a checkpoint needs ~{needed_bytes / 2**20:,.0f} MiB, "
            f"{free / 2**20:,.0f} MiB free; free space or choose another --out"
        )


def cpu_model() -> str:
    """The CPU's model name: float results of long runs differ across CPU families (their kernels round
    differently), so a number is tied to the CPU it was measured on."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def provenance() -> dict[str, Any]:
    try:
        sha = (
            subprocess.run(
                ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        sha = None
    return {
        "git_sha": sha,
        "unmask": __version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "argv": sys.argv,
    }


class RunLock:
    """One writer per run directory: an OS lock on OUT/.lock held for the life of the process.

    flock is released by the kernel when the process dies, so a SIGKILL never leaves a stale
    lock; the holder writes its PID into the file so a refused writer can name it.
    """

    def __init__(self, run: Path):
        self.path = Path(run) / ".lock"
        self._file = None

    def acquire(self) -> RunLock:
        try:
            f = open(self.path, "a+")
        except OSError as e:  # e.g. .lock is a folder
            raise ConfigError(f"cannot lock {self.path} ({e.strerror}); the run directory is damaged") from None
        self._lock(f)
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        self._file = f
        return self

    def check(self) -> None:
        """Refuse, naming its PID, while another process holds the lock; only reads (changes nothing)."""
        try:
            f = open(self.path)
        except OSError:  # no lock file: nobody has written this run (acquire names any other problem)
            return
        with f:
            self._lock(f)  # released again when f closes

    def _lock(self, f) -> None:
        """flock f exclusively, or close it and refuse, naming the holder."""
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            f.seek(0)
            holder = f.read().strip() or "another process"
            f.close()
            if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise ConfigError(
                    f"run directory {self.path.parent} is being written by PID {holder}; wait for it to finish "
                    f"or stop it (one writer per run)"
                ) from None
            raise

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing the descriptor releases the lock
            self._file = None

    def __enter__(self) -> RunLock:
        return self if self._file is not None else self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
