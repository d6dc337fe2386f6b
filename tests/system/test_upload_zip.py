"""Hostile zips uploaded with a dataset: every trick is refused with a StudioError before anything lands where the user
sees it, and nothing half-extracted stays behind; a good JSONL + zip of its images lands in one folder of the user's
workspace, where the dataset validates (`studio validate`) with its images resolved."""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
import struct
import zipfile
import zlib
from pathlib import Path
from types import SimpleNamespace

import helpers
import pytest

from studio.cli import main
from studio.config.schema import DataSpec
from studio.data import load_examples
from studio.errors import StudioError
from studio.ui import uploads
from studio.ui.access import check_data_path
from studio.ui.accounts import Account, hash_password
from studio.ui.tabs.data import store_upload

SHAPES = helpers.REPO / "examples" / "shapes"
PNG = (SHAPES / "imgs" / "0001.png").read_bytes()


@pytest.fixture
def ctx(tmp_path):
    from studio.ui.context import Context
    from studio.ui.jobs import JobQueue

    home = tmp_path / "home"
    accounts = [Account("alice", hash_password("a")), Account("bob", hash_password("b"))]
    ctx = Context(home=home, queue=JobQueue(home), accounts=accounts)
    yield ctx
    ctx.queue.close()


ALICE, BOB = SimpleNamespace(username="alice"), SimpleNamespace(username="bob")


def everything(root: Path) -> list[str]:
    """Every path under root (files, folders, links), relative, sorted."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def shapes_jsonl(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copyfile(SHAPES / "train.jsonl", folder / "train.jsonl"))


def write_zip(path: Path, entries: list, compression=zipfile.ZIP_DEFLATED) -> Path:
    """A zip of (name or ZipInfo, bytes) entries, written as given (zipfile keeps hostile names as they are)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, data in entries:
            if isinstance(name, zipfile.ZipInfo):
                name.compress_type = compression
            zf.writestr(name, data)
    return path


def shapes_zip(path: Path, prefix: str = "imgs/", extra: list | None = None) -> Path:
    images = [(f"{prefix}{p.name}", p.read_bytes()) for p in sorted((SHAPES / "imgs").iterdir())]
    return write_zip(path, images + (extra or []), zipfile.ZIP_STORED)


def refused(ctx, files, match: str, user=ALICE) -> StudioError:
    """Upload `files` as `user` and expect a StudioError matching `match`, with the uploads folder exactly as before
    (no partial folder, no extracted member) and nothing written next to the workspace either."""
    uploads_dir = ctx.workspace(user) / "uploads"
    before, around = everything(uploads_dir), everything(ctx.home)
    with pytest.raises(StudioError, match=match) as info:
        store_upload(ctx, user, [str(f) for f in files])
    assert info.value.where and info.value.fix
    assert everything(uploads_dir) == before
    assert everything(ctx.home) == around
    return info.value


# -- a good upload -------------------------------------------------------------------------------------------


def test_a_jsonl_and_a_zip_of_its_images_land_together_and_validate(ctx, tmp_path, capsys):
    data = shapes_jsonl(tmp_path / "browser")
    archive = shapes_zip(tmp_path / "browser" / "images.zip", extra=[("__MACOSX/imgs/._0001.png", b"\0junk"), ("imgs/.DS_Store", b"junk")])
    stored = Path(store_upload(ctx, ALICE, [str(data), str(archive)]))
    space = ctx.workspace(ALICE)
    assert stored == (space / "uploads" / "train" / "train.jsonl").resolve()
    assert everything(stored.parent) == ["imgs", *sorted(f"imgs/{p.name}" for p in (SHAPES / "imgs").iterdir()), "train.jsonl"]  # macOS extras skipped
    assert (stored.parent / "imgs" / "0007.png").read_bytes() == (SHAPES / "imgs" / "0007.png").read_bytes()
    assert check_data_path(space, str(stored), "data.path") == str(stored)
    assert not (ctx.workspace(BOB) / "uploads" / "train").exists()

    # The dataset's relative image paths resolve inside the new folder, and every image decodes.
    _, examples = load_examples(str(stored), DataSpec(path=str(stored)))
    images = [p["image"] for e in examples for m in e.messages if isinstance(m["content"], list) for p in m["content"] if p["type"] == "image"]
    assert len(images) == 24 and all(Path(p).parent == stored.parent / "imgs" for p in images)

    # And `studio validate` accepts a recipe naming it.
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(json.dumps({"model": {"name": "HuggingFaceTB/SmolVLM-256M-Instruct"}, "method": "lora",
                                  "data": {"path": str(stored)}, "output": {"dir": str(tmp_path / "runs")}}))
    capsys.readouterr()
    assert main(["validate", str(recipe), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["valid"] and report["data_rows"] == 24 and report["data_format"] == "chat"

    # Uploading again never replaces the folder a job may be reading: it gets a new one.
    again = Path(store_upload(ctx, ALICE, [str(data), str(archive)]))
    assert again == space.resolve() / "uploads" / "train-2" / "train.jsonl" and stored.exists()


def test_a_zip_alone_holding_the_dataset_and_windows_style_names(ctx, tmp_path):
    rows = (SHAPES / "train.jsonl").read_bytes()
    archive = shapes_zip(tmp_path / "shapes.zip", prefix="imgs\\", extra=[("train.jsonl", rows), ("notes\\val.jsonl", rows)])
    stored = Path(store_upload(ctx, ALICE, [str(archive)]))
    assert stored == (ctx.workspace(ALICE) / "uploads" / "shapes" / "train.jsonl").resolve()
    assert (stored.parent / "imgs" / "0024.png").is_file() and (stored.parent / "notes" / "val.jsonl").is_file()
    assert len(load_examples(str(stored), DataSpec(path=str(stored)))[1]) == 24


def test_a_single_dataset_file_still_lands_in_uploads(ctx, tmp_path):
    data = shapes_jsonl(tmp_path / "browser")
    stored = Path(store_upload(ctx, ALICE, str(data)))
    assert stored == (ctx.workspace(ALICE) / "uploads" / "train.jsonl").resolve()
    assert not [p for p in stored.parent.iterdir() if p.name.startswith(".")]


# -- names ---------------------------------------------------------------------------------------------------

SLIPS = [
    "../evil.png", "../../evil.png", "imgs/../../evil.png", "imgs/../../../home/evil.png", "/tmp/evil.png", "//server/evil.png",
    "C:/evil.png", "C:evil.png", "c:\\evil.png", "..\\evil.png", "imgs\\..\\..\\evil.png", "\\evil.png", "\\\\server\\share\\evil.png",
]


@pytest.mark.parametrize("name", SLIPS)
def test_zip_slip_names_are_refused(ctx, tmp_path, name):
    archive = shapes_zip(tmp_path / "images.zip", extra=[(name, PNG)])
    error = refused(ctx, [shapes_jsonl(tmp_path / "browser"), archive], "absolute path|leads out")
    assert "images.zip" in error.where
    assert not list(tmp_path.rglob("evil.png")) and not Path("/tmp/evil.png").exists()


@pytest.mark.parametrize("name", ["imgs/.hidden.png", "imgs/-rf.png", "imgs/a:b.png", "im gs/%2e%2e/../x.png", "imgs/" + "x" * 200 + ".png"])
def test_names_that_are_not_plain_are_refused(ctx, tmp_path, name):
    archive = write_zip(tmp_path / "images.zip", [("imgs/0001.png", PNG), (name, PNG)])
    refused(ctx, [shapes_jsonl(tmp_path / "browser"), archive], "invalid file name|leads out")


@pytest.mark.parametrize("names", [["imgs/a.png", "imgs/a.png"], ["imgs/a.png", "IMGS/A.PNG"], ["imgs/./a.png", "imgs//a.png"],
                                   ["train.jsonl"], ["a.png", "a.png/b.png"]], ids=["twice", "case", "spelled-twice", "dataset-twice", "file-and-folder"])
def test_duplicate_names_are_refused(ctx, tmp_path, names):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zipfile warns about the duplicate, and writes it
        archive = write_zip(tmp_path / "images.zip", [(n, PNG) for n in names])
    error = refused(ctx, [shapes_jsonl(tmp_path / "browser"), archive], "twice|name of a folder")
    assert ("name of a folder" in error.what) == (names[0] == "a.png")  # the clash is seen before extracting


# -- entry kinds ---------------------------------------------------------------------------------------------


def test_symlink_entries_are_refused(ctx, tmp_path):
    link = zipfile.ZipInfo("imgs/0002.png")
    link.create_system = 3  # unix
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    archive = write_zip(tmp_path / "images.zip", [("imgs/0001.png", PNG), (link, b"../../../../etc/passwd")])
    refused(ctx, [shapes_jsonl(tmp_path / "browser"), archive], "symbolic link")


def test_special_files_are_refused(ctx, tmp_path):
    fifo = zipfile.ZipInfo("imgs/0002.png")
    fifo.create_system = 3
    fifo.external_attr = (stat.S_IFIFO | 0o644) << 16
    archive = write_zip(tmp_path / "images.zip", [(fifo, b"")])
    refused(ctx, [shapes_jsonl(tmp_path / "browser"), archive], "not a regular file")


def test_encrypted_entries_are_refused(ctx, tmp_path):
    archive = write_zip(tmp_path / "images.zip", [("imgs/0001.png", PNG), ("imgs/0002.png", PNG)], zipfile.ZIP_STORED)
    raw = bytearray(archive.read_bytes())
    for signature, flags_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):  # set the encryption bit of the second member
        at = raw.rfind(signature)
        raw[at + flags_at] |= 0x1
    archive.write_bytes(bytes(raw))
    error = refused(ctx, [shapes_jsonl(tmp_path / "browser"), archive], "encrypted")
    assert error.what == "the zip member is encrypted" and "imgs/0002.png" in error.where  # from the entry's flag, before reading it


@pytest.mark.parametrize("name", ["run.sh", "imgs/payload.py", "imgs/nested.zip", "imgs/readme.txt", "imgs/page.html", "imgs/noext"])
def test_members_that_are_not_images_or_datasets_are_refused(ctx, tmp_path, name):
    archive = write_zip(tmp_path / "images.zip", [("imgs/0001.png", PNG), (name, b"#!/bin/sh\nrm -rf ~\n")])
    refused(ctx, [shapes_jsonl(tmp_path / "browser"), archive], "neither an image nor a dataset")


# -- sizes ---------------------------------------------------------------------------------------------------


def test_a_bomb_is_refused_by_its_compression_ratio(ctx, tmp_path):
    archive = write_zip(tmp_path / "images.zip", [("imgs/0001.png", PNG), ("imgs/big.png", bytes(20 * 2**20))])
    assert archive.stat().st_size < 100_000  # 20 MiB in a few tens of KiB: a thousandfold
    error = refused(ctx, [shapes_jsonl(tmp_path / "browser"), archive], "zip bomb")
    assert f"({20 * 2**20} bytes from" in error.what  # from the declared sizes, before a byte is extracted


def _lie_about_size(archive: Path, name: bytes, size: int, crc: int | None = None) -> None:
    """Rewrite a member's declared uncompressed size (and, optionally, CRC) in its local header and the central directory."""
    raw = bytearray(archive.read_bytes())
    for signature, crc_at, size_at, name_len_at, name_at in ((b"PK\x03\x04", 14, 22, 26, 30), (b"PK\x01\x02", 16, 24, 28, 46)):
        at = raw.find(signature)
        while at != -1:
            (length,) = struct.unpack_from("<H", raw, at + name_len_at)
            if raw[at + name_at : at + name_at + length] == name:
                struct.pack_into("<I", raw, at + size_at, size)
                if crc is not None:
                    struct.pack_into("<I", raw, at + crc_at, crc)
            at = raw.find(signature, at + 4)
    archive.write_bytes(bytes(raw))


def test_a_member_lying_about_its_size_is_refused_while_extracting(ctx, tmp_path):
    # Declared: 1000 bytes (a harmless ratio); really 20 MiB. The good image before it was already written when the
    # lie shows, and must go too.
    archive = write_zip(tmp_path / "images.zip", [("imgs/0001.png", PNG), ("imgs/big.png", bytes(20 * 2**20))])
    _lie_about_size(archive, b"imgs/big.png", 1000)
    with zipfile.ZipFile(archive) as zf:
        assert zf.getinfo("imgs/big.png").file_size == 1000
    refused(ctx, [shapes_jsonl(tmp_path / "browser"), archive], "damaged or its sizes lie|more than")


def test_a_forged_size_and_crc_never_write_more_than_declared(ctx, tmp_path):
    # With the CRC forged to match, the lie cannot be seen; the studio still never writes past what was declared.
    archive = write_zip(tmp_path / "images.zip", [("imgs/big.png", bytes(20 * 2**20))])
    _lie_about_size(archive, b"imgs/big.png", 1000, crc=zlib.crc32(bytes(1000)))
    stored = Path(store_upload(ctx, ALICE, [str(shapes_jsonl(tmp_path / "browser")), str(archive)]))
    assert (stored.parent / "imgs" / "big.png").stat().st_size == 1000


def test_too_much_in_all_is_refused(ctx, tmp_path, monkeypatch):
    monkeypatch.setattr(uploads, "MAX_EXTRACTED_BYTES", 2**20)
    members = [(f"imgs/{n}.png", os.urandom(300_000)) for n in range(4)]  # 1.2 MB, incompressible
    refused(ctx, [shapes_jsonl(tmp_path / "browser"), write_zip(tmp_path / "all.zip", members)], "declares more than 1 MiB")
    first, second = write_zip(tmp_path / "a.zip", members[:2]), write_zip(tmp_path / "b.zip", members[2:])
    for archive in (first, second):  # each zip alone fits; together they do not
        assert store_upload(ctx, ALICE, [str(shapes_jsonl(tmp_path / "browser")), str(archive)])
    refused(ctx, [shapes_jsonl(tmp_path / "browser"), first, second], "more than 1 MiB")


def test_too_many_entries_are_refused_before_they_are_read(ctx, tmp_path, monkeypatch):
    archive = write_zip(tmp_path / "images.zip", [(f"imgs/{n}.png", b"") for n in range(uploads.MAX_ENTRIES + 1)], zipfile.ZIP_STORED)

    def never(*args, **kwargs):
        raise AssertionError("the central directory was read before the entry count was checked")

    monkeypatch.setattr(uploads.zipfile, "ZipFile", never)
    error = refused(ctx, [shapes_jsonl(tmp_path / "browser"), archive], f"{uploads.MAX_ENTRIES + 1} entries")
    assert error.where == "images.zip"
    monkeypatch.undo()
    assert store_upload(ctx, ALICE, [str(shapes_jsonl(tmp_path / "browser")), str(shapes_zip(tmp_path / "ok.zip"))])


# -- other refusals ------------------------------------------------------------------------------------------


def test_a_file_that_is_not_a_zip_is_refused(ctx, tmp_path):
    fake = tmp_path / "images.zip"
    fake.write_bytes(b"PK\x03\x04 not really" + os.urandom(100))
    refused(ctx, [shapes_jsonl(tmp_path / "browser"), fake], "not a readable zip")
    truncated = shapes_zip(tmp_path / "cut" / "images.zip")
    truncated.write_bytes(truncated.read_bytes()[:-30])  # the end record cut off
    refused(ctx, [shapes_jsonl(tmp_path / "browser"), truncated], "not a readable zip")


def test_an_upload_without_a_dataset_is_refused(ctx, tmp_path):
    refused(ctx, [shapes_zip(tmp_path / "images.zip")], "no dataset file")


def test_two_uploaded_files_of_one_name_are_refused(ctx, tmp_path):
    refused(ctx, [shapes_jsonl(tmp_path / "a"), shapes_jsonl(tmp_path / "b"), shapes_zip(tmp_path / "images.zip")], "same name")


def test_other_file_types_are_refused(ctx, tmp_path):
    script = tmp_path / "setup.sh"
    script.write_text("echo")
    refused(ctx, [shapes_jsonl(tmp_path / "browser"), shapes_zip(tmp_path / "images.zip"), script], "unsupported file type")


def test_a_refusal_leaves_other_users_and_earlier_uploads_alone(ctx, tmp_path):
    good = Path(store_upload(ctx, BOB, [str(shapes_jsonl(tmp_path / "browser")), str(shapes_zip(tmp_path / "images.zip"))]))
    bobs = everything(good.parent)
    refused(ctx, [shapes_jsonl(tmp_path / "browser"), shapes_zip(tmp_path / "bad.zip", extra=[("../../bob/uploads/train/train.jsonl", b"{}")])], "leads out")
    assert everything(good.parent) == bobs and good.read_bytes() == (SHAPES / "train.jsonl").read_bytes()


def test_a_crashed_extraction_is_swept_later(ctx, tmp_path):
    folder = ctx.workspace(ALICE) / "uploads"
    crashed = folder / f"{uploads.PARTIAL}crashed"
    (crashed / "imgs").mkdir(parents=True)
    (crashed / "imgs" / "0001.png").write_bytes(PNG)
    fresh = folder / f"{uploads.PARTIAL}in-flight"
    fresh.mkdir()
    old = os.path.getmtime(crashed) - uploads.STALE_S - 60
    os.utime(crashed, (old, old))
    store_upload(ctx, ALICE, [str(shapes_jsonl(tmp_path / "browser"))])
    assert not crashed.exists() and fresh.exists()  # another upload may still be writing the fresh one


def test_extract_zip_alone_writes_only_what_it_checked(tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("imgs/0001.png", PNG)
        zf.writestr("imgs/sub/0002.png", PNG)
    archive = tmp_path / "ok.zip"
    archive.write_bytes(buffer.getvalue())
    root = tmp_path / "root"
    root.mkdir()
    written = uploads.extract_zip(archive, root)
    assert sorted(p.relative_to(root).as_posix() for p in written) == ["imgs/0001.png", "imgs/sub/0002.png"]
    assert all(p.read_bytes() == PNG for p in written)
