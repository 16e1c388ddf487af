"""The watch folder (an inbox): files are taken in, stored, then removed from the folder.

Two kinds of entries:

* a DICOM file directly in the folder (``*.dcm``, ``*.dicom``, or any name starting with
  the DICOM preamble): the same path as a C-STORE (``Ingestor.ingest``, source ``watch``);
* a sub-folder per case, ``<folder>/<case_id>/<task>.<ext>``, one image file per task of
  the model (PNG, JPEG, TIFF, NPY or DICOM): stored as an upload and the case goes READY
  once every task has its file.

Only finished files are taken: with inotify (default) a file is taken when it is *closed
after writing* or *renamed into* the folder (a new sub-folder is also scanned at once
and again ``poll_interval_s`` later, as inotify may miss files written right after
``mkdir``); with ``polling = true`` (network shares,
where inotify sees nothing) and at every rescan (at start-up, then every ``rescan_s``) a
file is taken when its size and mtime are unchanged between two scans. Temporary names
(``.*``, ``~*``, ``*.tmp``, ``*.part``, ``*.partial``, ``*.crdownload``, ``*.swp``) and
non-image files are ignored. A file that is refused goes to ``<folder>/.rejected/`` with a
``.reason.txt`` beside it (and the audit line ``rejected``).
"""

from __future__ import annotations

import logging
import queue
import shutil
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from drifa_edge.errors import missing_dependency

if TYPE_CHECKING:
    from drifa_edge.serve.service import Service

log = logging.getLogger(__name__)

TEMP_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", ".swp")
DICOM_SUFFIXES = (".dcm", ".dicom")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".npy", *DICOM_SUFFIXES)
REJECTED = ".rejected"


def is_temporary(path: Path) -> bool:
    name = path.name
    return name.startswith((".", "~")) or name.lower().endswith(TEMP_SUFFIXES)


def has_dicom_magic(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(132)[128:132] == b"DICM"
    except OSError:
        return False


class Watcher:
    def __init__(self, service: Service, folder: Path) -> None:
        try:
            import watchdog  # noqa: F401
        except ImportError as e:
            raise missing_dependency("watchdog", "serve") from e
        self.service = service
        self.folder = Path(folder).resolve()
        self.cfg = service.cfg.watch
        self._queue: queue.Queue[Path | None] = queue.Queue()
        self._seen: dict[Path, tuple[int, float]] = {}  # path -> (size, mtime) at the previous scan
        self._stop = threading.Event()
        self._kick = threading.Event()
        self._observer = None
        self._threads = [
            threading.Thread(target=self._work, name="drifa-watch", daemon=True),
            threading.Thread(target=self._rescan_loop, name="drifa-watch-rescan", daemon=True),
        ]
        self.taken = 0

    # -------------------------------------------------------------- life cycle

    def start(self) -> None:
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer

        self.folder.mkdir(parents=True, exist_ok=True)
        watcher = self

        class Handler(FileSystemEventHandler):
            def on_closed(self, event):  # inotify IN_CLOSE_WRITE
                if not event.is_directory:
                    watcher._queue.put(Path(event.src_path))

            def on_moved(self, event):
                watcher._queue.put(Path(event.dest_path))

            def on_created(self, event):
                # files written right after mkdir may beat inotify's new watch: scan the folder soon
                if event.is_directory:
                    watcher._kick.set()

        if not self.cfg.polling:  # polling mode: the scans every poll_interval_s do the work
            self._observer = Observer()
            self._observer.schedule(Handler(), str(self.folder), recursive=True)
            self._observer.start()
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        self._kick.set()
        self._queue.put(None)
        if self._observer is not None and self._observer.is_alive():
            self._observer.stop()
            self._observer.join(timeout=10)
        for t in self._threads:
            if t.is_alive():
                t.join(timeout=10)

    # -------------------------------------------------------------- scanning

    def _rescan_loop(self) -> None:
        interval = self.cfg.poll_interval_s if self.cfg.polling else self.cfg.rescan_s
        self.scan()  # start-up: the first observation, the second one poll_interval_s later
        timeout = self.cfg.poll_interval_s
        while not self._stop.is_set():
            kicked = self._kick.wait(timeout)
            if self._stop.is_set():
                return
            self.scan()
            timeout = interval
            if kicked:  # a new sub-folder: look twice, poll_interval_s apart (stable files)
                self._kick.clear()
                timeout = self.cfg.poll_interval_s

    def scan(self) -> int:
        """Queue every entry whose files did not change since the previous scan; returns how many."""
        current: dict[Path, tuple[int, float]] = {}
        for path in self.folder.rglob("*"):
            if REJECTED in path.relative_to(self.folder).parts or not path.is_file() or is_temporary(path):
                continue
            try:
                st = path.stat()
            except OSError:
                continue
            current[path] = (st.st_size, st.st_mtime)
        stable = [p for p, sig in current.items() if self._seen.get(p) == sig]
        self._seen = current
        for path in stable:
            self._queue.put(path)
        return len(stable)

    # -------------------------------------------------------------- taking entries

    def _work(self) -> None:
        while True:
            path = self._queue.get()
            if path is None or self._stop.is_set():
                return
            try:
                self.take(path)
            except Exception:
                log.exception("watch folder: %s", path)

    def take(self, path: Path) -> None:
        path = Path(path)
        if not path.exists() or is_temporary(path):
            return
        try:
            rel = path.resolve().relative_to(self.folder)
        except ValueError:
            return
        if not rel.parts or rel.parts[0] == REJECTED:
            return
        if len(rel.parts) == 1 and path.is_file():
            self._take_dicom(path)
        else:
            self._take_case_folder(self.folder / rel.parts[0])

    def _take_dicom(self, path: Path) -> None:
        if not (path.suffix.lower() in DICOM_SUFFIXES or has_dicom_magic(path)):
            return  # not an image we know: left alone
        outcome = self.service.ingestor.ingest(path.read_bytes(), source="watch")
        if outcome.accepted:
            path.unlink(missing_ok=True)
            self.taken += 1
        else:
            self._reject(path, f"{outcome.reason} (status 0x{outcome.status:04X})")

    def _take_case_folder(self, folder: Path) -> None:
        if not folder.is_dir():
            return
        tasks = self.service.tasks
        files = [p for p in folder.iterdir() if p.is_file() and not is_temporary(p)]
        by_task: dict[str, list[Path]] = {}
        for p in files:
            if p.suffix.lower() in IMAGE_SUFFIXES and p.stem in tasks:
                by_task.setdefault(p.stem, []).append(p)
        if any(len(v) > 1 for v in by_task.values()):
            self._reject(
                folder, f"more than one file for task(s) {[t for t, v in by_task.items() if len(v) > 1]}"
            )
            return
        from drifa_edge.serve.http import CASE_ID, submit_files

        if not CASE_ID.match(folder.name):
            self._reject(folder, "the folder name is the case id: use 1-64 of A-Z a-z 0-9 . _ -")
            return
        if set(by_task) != set(tasks):
            return  # not complete yet; max wait does not apply to folders (nothing is acknowledged)

        blobs = {t: (v[0].suffix.lower(), v[0].read_bytes()) for t, v in by_task.items()}
        try:
            submit_files(self.service, folder.name, blobs, "watch")
        except ValueError as e:  # same case id still in flight: try again at the next scan
            log.info("watch folder %s: %s", folder, e)
            return
        shutil.rmtree(folder, ignore_errors=True)
        self.taken += 1

    def _reject(self, path: Path, reason: str) -> None:
        target = self.folder / REJECTED / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            shutil.rmtree(target, ignore_errors=True) if target.is_dir() else target.unlink()
        shutil.move(str(path), target)
        target.with_name(target.name + ".reason.txt").write_text(reason + "\n")
        self.service.audit.write("watch_rejected", path=path.name, reason=reason)
