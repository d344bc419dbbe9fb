"""Finding the batch's subjects: one folder per person, or a CSV manifest.

Folder layout: ``DIR/<subject>/front.jpg``, ``left.png``, ``right.webp``, … — each view found by its
file name (``front``/``left``/``right``, any case) with a photo suffix (``.jpg .jpeg .jpe .jfif .png
.webp``, any case). Hidden folders (``.x``) are skipped. A subject that cannot be submitted (a
view missing, two files for one view, a file that is not there) is still listed, with ``problem``
saying what to fix; it is reported as failed without being sent.

Manifest: a CSV with the header ``subject,front,left,right`` (any order and case; a UTF-8 BOM is
fine); photo paths are relative to the CSV's folder unless absolute.
"""
from __future__ import annotations

import csv
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from client.errors import VIEWS

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp")
MANIFEST_COLUMNS = ("subject",) + VIEWS

_UNSAFE_FILENAME = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|]')


class SubjectsError(Exception):
    """The input as a whole cannot be read (no such folder, a manifest without its columns)."""


@dataclass(frozen=True)
class Subject:
    """One person to make an avatar of; ``photos`` maps each view to its file."""

    name: str
    photos: dict[str, Path]
    problem: str | None = None
    # Where it came from, for messages: the folder, or "manifest.csv line 4".
    origin: str = ""

    @property
    def output_stem(self) -> str:
        return safe_filename(self.name)


def discover_subjects(root: Path, exclude: Iterable[Path] = ()) -> list[Subject]:
    """Every subject folder directly under ``root``, sorted by name."""
    root = Path(root)
    if not root.is_dir():
        raise SubjectsError(f"{root} is not a folder: pass the folder that holds one folder per subject, "
                            f"or --manifest FILE.csv")
    excluded = {_resolved(p) for p in exclude}
    subjects = []
    for folder in sorted(root.iterdir(), key=lambda p: p.name):
        if not folder.is_dir() or folder.name.startswith(".") or _resolved(folder) in excluded:
            continue
        photos, problem = find_views(folder)
        subjects.append(Subject(folder.name, photos, problem, str(folder)))
    if not subjects:
        loose = [p.name for p in root.iterdir() if p.is_file() and p.suffix.lower() in PHOTO_SUFFIXES]
        hint = (f" (it holds photos itself: put them in a subfolder named after the person, "
                f"e.g. {root}/alice/front.jpg)") if loose else ""
        raise SubjectsError(f"{root} holds no subject folders{hint}")
    return _flag_clashing_names(subjects)


def find_views(folder: Path) -> tuple[dict[str, Path], str | None]:
    """(view → file, problem or None) for one subject folder."""
    found: dict[str, list[Path]] = {view: [] for view in VIEWS}
    others = []
    for path in sorted(folder.iterdir(), key=lambda p: p.name):
        if not path.is_file() or path.name.startswith("."):
            continue
        view = path.stem.strip().lower()
        if view in found and path.suffix.lower() in PHOTO_SUFFIXES:
            found[view].append(path)
        else:
            others.append(path.name)
    photos = {view: paths[0] for view, paths in found.items() if len(paths) == 1}
    problems = []
    doubled = {view: paths for view, paths in found.items() if len(paths) > 1}
    for view, paths in doubled.items():
        problems.append(f"more than one {view} photo ({', '.join(p.name for p in paths)}): keep one")
    missing = [view for view, paths in found.items() if not paths]
    if missing:
        names = " and ".join(missing) if len(missing) <= 2 else "front, left and right"
        noun = "photo" if len(missing) == 1 else "photos"
        seen = f"; found {', '.join(others[:5])}{'…' if len(others) > 5 else ''}" if others else ""
        problems.append(f"missing {names} {noun} (expected e.g. {missing[0]}.jpg, .jpeg, .png or .webp{seen})")
    return photos, "; ".join(problems) or None


def read_manifest(csv_path: Path) -> list[Subject]:
    """The subjects a CSV manifest lists, in file order."""
    csv_path = Path(csv_path)
    try:
        handle = open(csv_path, newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise SubjectsError(f"cannot read the manifest {csv_path}: {exc.strerror}") from None
    base = csv_path.parent
    subjects = []
    with handle:
        reader = csv.DictReader(handle)
        columns = {(name or "").strip().lower(): name for name in (reader.fieldnames or [])}
        missing = [c for c in MANIFEST_COLUMNS if c not in columns]
        if missing:
            raise SubjectsError(f"{csv_path}: the header must name the columns {','.join(MANIFEST_COLUMNS)}; "
                                f"missing {', '.join(missing)} (found: {', '.join(columns) or 'nothing'})")
        for row in reader:
            cells = {col: (row.get(columns[col]) or "").strip() for col in MANIFEST_COLUMNS}
            if not any(cells.values()):
                continue  # blank line
            origin = f"{csv_path.name} line {reader.line_num}"
            name = cells["subject"] or f"line-{reader.line_num}"
            photos: dict[str, Path] = {}
            problems = [] if cells["subject"] else ["the subject column is empty"]
            for view in VIEWS:
                if not cells[view]:
                    problems.append(f"no {view} photo given")
                    continue
                path = Path(cells[view]).expanduser()
                path = path if path.is_absolute() else base / path
                if not path.is_file():
                    problems.append(f"{view} photo not found: {path}")
                    continue
                photos[view] = path
            subjects.append(Subject(name, photos, "; ".join(problems) or None, origin))
    if not subjects:
        raise SubjectsError(f"{csv_path} lists no subjects")
    return _flag_clashing_names(subjects)


def safe_filename(name: str) -> str:
    """``name`` usable as one file name: separators and control characters become ``_``."""
    cleaned = _UNSAFE_FILENAME.sub("_", name).strip().lstrip(".")
    return cleaned[:200] or "_"


def _flag_clashing_names(subjects: list[Subject]) -> list[Subject]:
    """A later subject whose name or output file clashes with an earlier one gets a problem."""
    seen: dict[str, Subject] = {}
    result = []
    for subject in subjects:
        key = subject.output_stem.casefold()  # case-insensitive file systems would merge them
        first = seen.get(key)
        if first is not None and subject.problem is None:
            clash = "the same subject name" if first.name == subject.name else \
                f"a name that gives the same file name as {first.name!r}"
            subject = Subject(subject.name, subject.photos,
                              f"{clash} as {first.origin or first.name}: subject names must be unique",
                              subject.origin)
        seen.setdefault(key, subject)
        result.append(subject)
    return result


def _resolved(path: Path) -> Path:
    try:
        return Path(path).resolve()
    except OSError:
        return Path(path).absolute()
