"""Reading the raw Cityscapes packages, zipped or extracted, without extracting them.

The official downloads are an 11 GB and a 0.25 GB zip. Extracting them to a temp folder
doubles the disk needed and the time, so members are streamed one at a time straight
from the archive. Archives are checked before anything is read: a member with an
absolute path, a `..` component, or an implausible size refuses the whole archive.
"""

from __future__ import annotations

import functools
import hashlib
import re
import threading
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from cityseg.config import GroundTruth, LabelSource
from cityseg.errors import DataError, UnsafeArchiveError
from cityseg.progress import track

LEFTIMG_ZIP = "leftImg8bit_trainvaltest.zip"
GTFINE_ZIP = "gtFine_trainvaltest.zip"
GTCOARSE_ZIP = "gtCoarse.zip"
DOWNLOAD_URL = "https://www.cityscapes-dataset.com/downloads/"

OFFICIAL_SHA256 = {
    GTFINE_ZIP: "40461a50097844f400fef147ecaf58b18fd99e14e4917fb7c3bf9c0d87d95884",
    LEFTIMG_ZIP: "3ccff9ac1fa1d80a6a064407e589d747ed0657aac7dc495a4403ae1235a37525",
}
"""SHA-256 of the official packages, as catalogued by torchvision's dataset definitions."""

_KEY = r"(?P<key>(?P=city)_\d{6}_\d{6})"
IMAGE_MEMBER = re.compile(
    rf"(?:^|/)leftImg8bit/(?P<split>train|val|test)/(?P<city>[^/]+)/{_KEY}_leftImg8bit\.png$"
)
LABEL_MEMBER = re.compile(
    rf"(?:^|/)gtFine/(?P<split>train|val|test)/(?P<city>[^/]+)/{_KEY}_gtFine_labelIds\.png$"
)
SIBLING_MEMBER = re.compile(r"_gtFine_(?:color\.png|instanceIds\.png|polygons\.json)$")
ANNOTATION_FILES = ("color.png", "instanceIds.png", "labelIds.png", "polygons.json")
"""What each annotated image has in a gtFine or gtCoarse package."""
JUNK_NAMES = frozenset({"readme", "readme.md", "readme.txt", "license", "license.txt", ".ds_store"})


@dataclass(frozen=True)
class LabelLayout:
    """Where one kind of annotation lives and which of its files gives the labelIds."""

    zip_name: str
    folder: str
    """"gtFine" or "gtCoarse": the package's top folder and the infix of its file names."""
    splits: tuple[str, ...]
    file: str
    """"labelIds.png" or "polygons.json"."""

    @property
    def member(self) -> re.Pattern[str]:
        splits = "|".join(self.splits)
        return re.compile(
            rf"(?:^|/){self.folder}/(?P<split>{splits})/(?P<city>[^/]+)/"
            rf"{_KEY}_{self.folder}_{re.escape(self.file)}$"
        )

    @property
    def siblings(self) -> re.Pattern[str]:
        """The other annotation files, known and not read (so not "unrecognised")."""
        others = "|".join(re.escape(f) for f in ANNOTATION_FILES if f != self.file)
        return re.compile(rf"_{self.folder}_(?:{others})$")

    @property
    def polygons(self) -> bool:
        return self.file == "polygons.json"

    @property
    def noun(self) -> str:
        """What a message calls one label file."""
        return "polygons JSON" if self.polygons else "labelIds"

    def describe(self) -> str:
        return (
            f"{self.folder}/{{{','.join(self.splits)}}}/<city>/*_{self.folder}_{self.file} labels"
        )


def label_layout(
    annotations: GroundTruth = GroundTruth.fine, labels: LabelSource = LabelSource.labelids
) -> LabelLayout:
    """gtCoarse has no test split but a train_extra one, whose images prepare lacks."""
    file = "polygons.json" if labels is LabelSource.polygons else "labelIds.png"
    if annotations is GroundTruth.coarse:
        return LabelLayout(GTCOARSE_ZIP, "gtCoarse", ("train", "train_extra", "val"), file)
    return LabelLayout(GTFINE_ZIP, "gtFine", ("train", "val", "test"), file)


@dataclass(frozen=True)
class Member:
    """One image or labelIds file inside a package."""

    name: str
    split: str
    city: str
    key: str
    size: int


@dataclass
class PackageIndex:
    """What one package holds, after sorting out junk and unrelated files."""

    members: dict[str, Member] = field(default_factory=dict)
    """key -> member."""
    unrecognised: list[str] = field(default_factory=list)


class Package:
    """A leftImg8bit or gtFine package: a zip or an extracted folder."""

    kind: str
    path: Path

    def names_and_sizes(self) -> list[tuple[str, int]]:
        raise NotImplementedError

    def read(self, name: str) -> bytes:
        raise NotImplementedError

    def fingerprint(self) -> dict[str, Any]:
        """Identity cheap enough to check on every run (name, size, mtime)."""
        stat = self.path.stat()
        return {
            "kind": self.kind,
            "name": self.path.name,
            "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns,
        }

    def index(
        self, pattern: re.Pattern[str], siblings: re.Pattern[str] = SIBLING_MEMBER
    ) -> PackageIndex:
        """Members matching `pattern` by key; `siblings` are known files left unread."""
        found = PackageIndex()
        for name, size in self.names_and_sizes():
            match = pattern.search(name)
            if match:
                member = Member(name, match["split"], match["city"], match["key"], size)
                found.members[member.key] = member
            elif not is_junk(name) and not siblings.search(name):
                found.unrecognised.append(name)
        return found


def is_junk(name: str) -> bool:
    parts = PurePosixPath(name).parts
    base = parts[-1] if parts else ""
    return (
        name.endswith("/")
        or "__MACOSX" in parts
        or base.startswith("._")
        or base.lower() in JUNK_NAMES
    )


class ZipPackage(Package):
    kind = "zip"

    def __init__(self, path: Path, *, max_member_bytes: int, max_ratio: int) -> None:
        self.path = path
        self.max_member_bytes = max_member_bytes
        self._local = threading.local()
        try:
            with zipfile.ZipFile(path) as archive:
                infos = archive.infolist()
        except zipfile.BadZipFile as exc:
            raise DataError(f"{path} is not a valid zip (truncated download?): {exc}") from exc
        except OSError as exc:
            raise DataError(f"cannot read {path}: {exc.strerror or exc}") from exc
        for info in infos:
            check_member(path, info, max_member_bytes=max_member_bytes, max_ratio=max_ratio)
        self._infos = {info.filename: info for info in infos}

    def names_and_sizes(self) -> list[tuple[str, int]]:
        return [(name, info.file_size) for name, info in self._infos.items()]

    def read(self, name: str) -> bytes:
        archive = getattr(self._local, "archive", None)
        if archive is None:  # one handle per thread: zip reads seek a shared file
            archive = self._local.archive = zipfile.ZipFile(self.path)
        try:
            with archive.open(self._infos[name]) as stream:
                data: bytes = stream.read(self.max_member_bytes + 1)
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise DataError(
                f"{self.path.name}:{name} cannot be read ({exc}); re-download {self.path.name}"
            ) from exc
        return data


def check_member(
    archive: Path, info: zipfile.ZipInfo, *, max_member_bytes: int, max_ratio: int
) -> None:
    """Refuse members that could write outside the output or exhaust memory or disk."""
    name = info.filename
    posix = PurePosixPath(name.replace("\\", "/"))
    if posix.is_absolute() or re.match(r"^[A-Za-z]:", name) or ".." in posix.parts:
        raise UnsafeArchiveError(
            f"{archive.name} has a member with an absolute or '..' path ({name!r}); "
            "refusing to read it"
        )
    if info.file_size > max_member_bytes:
        raise UnsafeArchiveError(
            f"{archive.name} member {name!r} declares {info.file_size} bytes, beyond the "
            f"{max_member_bytes} byte bound for one file; refusing to read it"
        )
    if info.compress_size and info.file_size / info.compress_size > max_ratio:
        raise UnsafeArchiveError(
            f"{archive.name} member {name!r} would expand {info.file_size // info.compress_size}"
            f"x (zip bomb?); refusing to read it"
        )


class FolderPackage(Package):
    kind = "folder"

    def __init__(self, path: Path) -> None:
        self.path = path

    def names_and_sizes(self) -> list[tuple[str, int]]:
        return [
            (file.relative_to(self.path).as_posix(), file.stat().st_size)
            for file in sorted(self.path.rglob("*"))
            if file.is_file()
        ]

    def read(self, name: str) -> bytes:
        try:
            return (self.path / name).read_bytes()
        except OSError as exc:
            raise DataError(f"cannot read {self.path / name}: {exc.strerror or exc}") from exc

    def fingerprint(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.path.name}


def find_package(raw: Path, zip_name: str, folder_name: str, **zip_bounds: int) -> Package:
    """The zip if present, else an extracted folder (`raw/<folder>` or one level deeper)."""
    zip_path = raw / zip_name
    if zip_path.is_file():
        return ZipPackage(zip_path, **zip_bounds)
    for candidate in (raw / folder_name, *sorted(raw.glob(f"*/{folder_name}"))):
        if candidate.is_dir():
            return FolderPackage(candidate.parent)
    raise DataError(
        f"{raw} has no {zip_name} (nor an extracted {folder_name}/ folder); "
        f"download it from {DOWNLOAD_URL}"
    )


def file_digests(path: Path, *, show_progress: bool) -> dict[str, str]:
    """MD5 (what the Cityscapes site lists) and SHA-256 in one pass over the file."""
    md5, sha256 = hashlib.md5(), hashlib.sha256()
    chunk = 8 * 1024 * 1024
    chunks = max(1, -(-path.stat().st_size // chunk))
    with path.open("rb") as handle:
        blocks = iter(functools.partial(handle.read, chunk), b"")
        for block in track(blocks, chunks, f"checksum {path.name}", enabled=show_progress):
            md5.update(block)
            sha256.update(block)
    return {"md5": md5.hexdigest(), "sha256": sha256.hexdigest()}
