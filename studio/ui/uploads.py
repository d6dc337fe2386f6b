"""Uploads into a user's workspace: dataset files, and zips of a dataset's images, extracted safely.

Where an upload lands (always in the user's `uploads/` folder, named by check_name's rules):

- one dataset file (.jsonl, .json, .csv, .parquet) becomes `uploads/<name>`;
- files uploaded together (a JSONL with a .zip of its images, or one zip holding the dataset and its images) land in
  one new folder `uploads/<name>/` (`<name>-2`, ... when that is taken: a running job may be reading the old one),
  each zip extracted in it, so the dataset's relative image paths resolve. The dataset file's path is returned.

A zip is untrusted input. Refused, each a StudioError naming the archive and the member:

- names that escape the folder (absolute, `..`, drive letters; a backslash counts as a folder separator, as the
  zips Windows tools write mean it), names that are not plain (check_name on every folder and file name), and
  duplicate names (compared case-folded, since they collide on some disks), or a file named like a folder;
- symlinks and other special entries, encrypted entries, members that are neither images nor dataset files
  (macOS's `__MACOSX/` and `.DS_Store` are skipped, not refused);
- more than MAX_ENTRIES entries, more than MAX_EXTRACTED_BYTES in all, and a member more than MAX_RATIO times
  smaller compressed than extracted (a zip bomb): first from the sizes the archive declares, then by counting the
  bytes really extracted, since declared sizes can lie; and a damaged archive (a bad CRC, a truncated member).

Everything is written to a hidden `.partial-*` folder inside the uploads folder and renamed into place at the end;
on any failure that folder is removed, so nothing partly extracted stays behind (one a crash left is swept later).
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import stat
import tempfile
import time
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from studio.data.readers import FILE_SUFFIXES
from studio.errors import StudioError
from studio.ui.access import check_name, safe_path
from studio.ui.context import MAX_UPLOAD_BYTES

ZIP_SUFFIX = ".zip"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff")
MAX_ENTRIES = 10_000
MAX_EXTRACTED_BYTES = 2**30  # 1 GiB extracted, all zips of one upload together
MAX_RATIO = 100  # extracted / compressed size of one member
RATIO_FLOOR = 2**20  # members up to 1 MiB may compress as well as they like (the total still bounds them)
CHUNK = 2**20
PARTIAL = ".partial-"  # prefix of the staging folders; check_name refuses a leading dot, so no user names one
STALE_S = 6 * 3600  # a staging folder this old was left by a crash
_DRIVE = re.compile(r"^[A-Za-z]:")
_SKIPPED_FOLDERS = {"__MACOSX"}
_SKIPPED_FILES = {".DS_Store", "Thumbs.db"}


@dataclass
class _Budget:
    """What one upload may still extract, and the member names it holds (case-folded)."""

    left: int = field(default_factory=lambda: MAX_EXTRACTED_BYTES)
    names: set[str] = field(default_factory=set)


def store_files(uploads: Path, files: list[Path], max_bytes: int = MAX_UPLOAD_BYTES) -> Path:
    """Store the files of one upload in `uploads` (see the module's rules); the path of its dataset file."""
    if not files:
        raise StudioError("nothing was uploaded", where="Data tab", fix="upload a dataset file, with a .zip of its images if it has any")
    for source in files:
        _check_upload(source, max_bytes)
    uploads.mkdir(parents=True, exist_ok=True)
    _sweep(uploads)
    if len(files) == 1 and files[0].suffix.lower() != ZIP_SUFFIX:
        return _store_one(uploads, files[0])
    return _store_together(uploads, files)


def _check_upload(source: Path, max_bytes: int) -> None:
    if source.suffix.lower() not in (*FILE_SUFFIXES, ZIP_SUFFIX):
        raise StudioError(f"unsupported file type '{source.suffix}'", where=source.name, fix=f"upload one of {', '.join((*FILE_SUFFIXES, ZIP_SUFFIX))}")
    if source.stat().st_size > max_bytes:
        raise StudioError(f"file is larger than {max_bytes // 2**20} MiB", where=source.name, fix="upload a smaller file")
    check_name(source.name)


def _store_one(uploads: Path, source: Path) -> Path:
    target = safe_path(uploads, source.name)
    handle, staged = tempfile.mkstemp(prefix=PARTIAL, dir=uploads)
    os.close(handle)
    try:
        shutil.copyfile(source, staged)
        os.replace(staged, target)
    except BaseException:
        Path(staged).unlink(missing_ok=True)
        raise
    return target


def _store_together(uploads: Path, files: list[Path]) -> Path:
    direct = [f for f in files if f.suffix.lower() != ZIP_SUFFIX]
    name = check_name((direct or files)[0].stem)
    staging = Path(tempfile.mkdtemp(prefix=PARTIAL, dir=uploads))
    try:
        budget, found = _Budget(), []
        for source in direct:  # the dataset files first: a zip member of the same name is then a duplicate
            if source.name.casefold() in budget.names:
                raise StudioError("two uploaded files have the same name", where=source.name, fix="give every file its own name")
            budget.names.add(source.name.casefold())
            shutil.copyfile(source, safe_path(staging, source.name))
        for source in files:
            if source.suffix.lower() == ZIP_SUFFIX:
                found += [p for p in extract_zip(source, staging, budget) if p.suffix.lower() in FILE_SUFFIXES]
        datasets = [staging / f.name for f in direct] or sorted(found, key=lambda p: (len(p.relative_to(staging).parts), str(p)))
        if not datasets:
            raise StudioError("the upload holds no dataset file", where=", ".join(f.name for f in files),
                              fix=f"upload the dataset ({', '.join(FILE_SUFFIXES)}) together with the zip of its images, or put it in the zip")
        dataset = next((d for d in datasets if d.stem.casefold() == "train"), datasets[0])
        folder = _rename_free(staging, uploads, name)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return folder / dataset.relative_to(staging)


def _rename_free(staging: Path, uploads: Path, name: str) -> Path:
    """Rename the staging folder to uploads/<name> or the first free <name>-N; the new folder."""
    for number in range(1, 1000):
        candidate = safe_path(uploads, name if number == 1 else f"{name}-{number}")
        if candidate.exists() or candidate.is_symlink():
            continue
        try:
            os.rename(staging, candidate)
        except OSError as exc:  # taken meanwhile by a concurrent upload
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                continue
            raise
        return candidate
    raise StudioError(f"too many uploads named {name!r}", where="uploads", fix="rename the dataset file, or delete old uploads")


def extract_zip(archive: Path, root: Path, budget: _Budget | None = None) -> list[Path]:
    """Extract a zip of images (and dataset files) into the existing folder `root`, refusing anything the module's
    rules refuse; the files written. On a refusal, what was written stays in `root` for the caller to remove."""
    budget = budget or _Budget()
    _check_entries(_declared_entries(archive), archive.name)  # before zipfile reads (and holds) every entry's record
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError) as exc:
        raise StudioError(f"not a readable zip archive: {exc}", where=archive.name,
                          fix="make the zip again (e.g. `zip -r images.zip imgs/`) and upload it") from None
    with zf:
        members = _plan(zf.infolist(), archive.name, budget)
        return [_extract(zf, info, name, root, f"{archive.name}: {name}", budget) for info, name in members]


def _declared_entries(archive: Path) -> int:
    """The entry count the archive's end record declares (0 when it has none: zipfile then refuses the file)."""
    try:
        with open(archive, "rb") as handle:
            record = zipfile._EndRecData(handle)  # the stdlib's reader of that record, zip64 included
    except (OSError, AttributeError, zipfile.BadZipFile):
        return 0
    return int(record[zipfile._ECD_ENTRIES_TOTAL]) if record else 0


def _check_entries(entries: int, where: str) -> None:
    if entries > MAX_ENTRIES:
        raise StudioError(f"the zip holds {entries} entries, more than the {MAX_ENTRIES} allowed", where=where,
                          fix="split the images over several datasets, or pack them in fewer, larger files")


def _plan(infos: list[zipfile.ZipInfo], archive: str, budget: _Budget) -> list[tuple[zipfile.ZipInfo, str]]:
    """The members to extract, each with its checked relative name; every refusal comes from the declared sizes and
    names here, before a byte is written."""
    _check_entries(len(infos), archive)
    out, declared = [], 0
    for info in infos:
        where = f"{archive}: {info.filename[:200]!r}"
        parts = _parts(info.filename, where)
        if parts is None:
            continue
        if info.flag_bits & 0x1:
            raise StudioError("the zip member is encrypted", where=where, fix="make the zip without a password")
        kind = stat.S_IFMT(info.external_attr >> 16)
        if kind == stat.S_IFLNK:
            raise StudioError("the zip member is a symbolic link", where=where, fix="zip the files themselves, not links to them (zip without --symlinks)")
        if info.is_dir() or kind == stat.S_IFDIR:
            _plain(parts, where)
            continue
        if kind not in (0, stat.S_IFREG):
            raise StudioError("the zip member is not a regular file", where=where, fix="zip only image files and the dataset")
        name = "/".join(_plain(parts, where))
        if Path(name).suffix.lower() not in (*IMAGE_SUFFIXES, *FILE_SUFFIXES):
            raise StudioError("the zip member is neither an image nor a dataset file", where=where,
                              fix=f"zip only images ({', '.join(IMAGE_SUFFIXES)}) and dataset files ({', '.join(FILE_SUFFIXES)})")
        if name.casefold() in budget.names:
            raise StudioError("the upload holds this name twice (names are compared ignoring case)", where=where, fix="give every file its own name")
        budget.names.add(name.casefold())
        _check_ratio(info.file_size, info.compress_size, where)
        declared += info.file_size
        if declared > budget.left:
            raise StudioError(f"the zip declares more than {MAX_EXTRACTED_BYTES // 2**20} MiB of files", where=archive, fix="upload fewer or smaller images")
        out.append((info, name))
    folders = {name.casefold().rsplit("/", n)[0] for name in budget.names for n in range(1, name.count("/") + 1)}
    clash = sorted(folders & budget.names)
    if clash:
        raise StudioError("a file of the upload has the name of a folder", where=f"{archive}: {clash[0]!r}", fix="rename the file or the folder")
    return out


def _parts(raw: str, where: str) -> list[str] | None:
    """A member name's folder and file names; None for what is skipped (empty names, macOS's extras)."""
    name = raw.replace("\\", "/")
    if "\0" in name:
        raise StudioError("the zip member's name holds a NUL byte", where=where, fix="rename the file")
    if name.startswith("/") or _DRIVE.match(name):
        raise StudioError("the zip member has an absolute path", where=where, fix="zip the files with paths relative to the dataset's folder")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise StudioError("the zip member's path leads out of the folder ('..')", where=where, fix="zip the files with paths relative to the dataset's folder")
    if not parts or parts[0] in _SKIPPED_FOLDERS or parts[-1] in _SKIPPED_FILES:
        return None
    return parts


def _plain(parts: list[str], where: str) -> list[str]:
    for part in parts:
        try:
            check_name(part)
        except StudioError as exc:
            raise StudioError(f"the zip member's path has {exc.what}", where=where, fix=exc.fix) from None
    return parts


def _check_ratio(size: int, compressed: int, where: str) -> None:
    if size > RATIO_FLOOR and size > MAX_RATIO * max(compressed, 1):
        raise StudioError(f"the zip member expands {size // max(compressed, 1)}-fold ({size} bytes from {compressed}): a zip bomb", where=where,
                          fix=f"images barely compress; zip the real files (at most {MAX_RATIO}-fold compression)")


def _extract(zf: zipfile.ZipFile, info: zipfile.ZipInfo, name: str, root: Path, where: str, budget: _Budget) -> Path:
    """One member written to root/name, its real bytes counted against what it declared and the upload's budget."""
    target = safe_path(root, name)
    count = 0
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with zf.open(info) as source, open(target, "xb") as out:
            while chunk := source.read(CHUNK):
                count += len(chunk)
                if count > info.file_size:
                    raise StudioError(f"the zip member holds more than the {info.file_size} bytes it declares", where=where, fix="make the zip again")
                _check_ratio(count, info.compress_size, where)
                if count > budget.left:
                    raise StudioError(f"the zip holds more than {MAX_EXTRACTED_BYTES // 2**20} MiB of files", where=where, fix="upload fewer or smaller images")
                out.write(chunk)
    except (FileExistsError, NotADirectoryError):
        raise StudioError("the upload holds this name twice, or as a file and a folder", where=where, fix="give every file its own name") from None
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as exc:
        raise StudioError(f"the zip member is damaged or its sizes lie: {exc}", where=where, fix="make the zip again and upload it") from None
    except OSError as exc:  # the disk, not the zip: full, or the folder not writable
        raise StudioError(f"cannot write the extracted file: {exc.strerror or exc}", where=where,
                          fix="free some disk space, or ask the server's owner") from None
    if count != info.file_size:
        raise StudioError(f"the zip member holds {count} bytes but declares {info.file_size}", where=where, fix="make the zip again and upload it")
    budget.left -= count
    return target


def _sweep(uploads: Path) -> None:
    """Remove staging folders and files that a crash left behind (older than STALE_S)."""
    now = time.time()
    for stale in uploads.glob(PARTIAL + "*"):
        try:
            if now - stale.lstat().st_mtime < STALE_S:
                continue
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale)
            else:
                stale.unlink()
        except OSError:
            pass


__all__ = ["IMAGE_SUFFIXES", "MAX_ENTRIES", "MAX_EXTRACTED_BYTES", "MAX_RATIO", "ZIP_SUFFIX", "extract_zip", "store_files"]
