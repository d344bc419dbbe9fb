"""Finding subjects: folders by view name, CSV manifests, and the per-subject problems."""
from __future__ import annotations

from pathlib import Path

import pytest

from client.subjects import SubjectsError, discover_subjects, read_manifest, safe_filename


def touch(path: Path, content: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def test_views_are_found_by_name_in_any_case_and_photo_suffix(tmp_path: Path) -> None:
    touch(tmp_path / "zoë" / "Front.JPEG")
    touch(tmp_path / "zoë" / "LEFT.png")
    touch(tmp_path / "zoë" / "right.WebP")
    touch(tmp_path / "zoë" / "notes.txt")
    touch(tmp_path / "Bob Smith" / "front.jpg")
    touch(tmp_path / "Bob Smith" / "left.jpe")
    touch(tmp_path / "Bob Smith" / "right.jfif")
    subjects = discover_subjects(tmp_path)
    assert [s.name for s in subjects] == ["Bob Smith", "zoë"]
    assert all(s.problem is None for s in subjects)
    zoe = subjects[1]
    assert {view: p.name for view, p in zoe.photos.items()} == \
        {"front": "Front.JPEG", "left": "LEFT.png", "right": "right.WebP"}


def test_hidden_folders_files_and_the_output_folder_are_not_subjects(tmp_path: Path) -> None:
    for view in ("front", "left", "right"):
        touch(tmp_path / "alice" / f"{view}.jpg")
        touch(tmp_path / "out" / "stale" / f"{view}.jpg")
    touch(tmp_path / ".cache" / "front.jpg")
    touch(tmp_path / "readme.md")
    assert [s.name for s in discover_subjects(tmp_path, exclude=[tmp_path / "out"])] == ["alice"]


def test_a_missing_or_doubled_view_is_a_problem_of_that_subject_only(tmp_path: Path) -> None:
    for view in ("front", "left", "right"):
        touch(tmp_path / "good" / f"{view}.jpg")
    touch(tmp_path / "no-right" / "front.jpg")
    touch(tmp_path / "no-right" / "left.jpg")
    touch(tmp_path / "no-right" / "right.gif")  # not a photo suffix the service takes
    touch(tmp_path / "two-fronts" / "front.jpg")
    touch(tmp_path / "two-fronts" / "FRONT.png")
    touch(tmp_path / "two-fronts" / "left.jpg")
    touch(tmp_path / "two-fronts" / "right.jpg")
    touch(tmp_path / "misnamed" / "IMG_001.jpg")
    by_name = {s.name: s for s in discover_subjects(tmp_path)}
    assert by_name["good"].problem is None
    assert by_name["no-right"].problem.startswith("missing right photo (expected e.g. right.jpg")
    assert "found right.gif" in by_name["no-right"].problem
    assert by_name["two-fronts"].problem.startswith("more than one front photo (FRONT.png, front.jpg)")
    assert by_name["misnamed"].problem.startswith("missing front, left and right photos")
    assert "IMG_001.jpg" in by_name["misnamed"].problem


def test_an_empty_or_missing_root_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SubjectsError, match="is not a folder"):
        discover_subjects(tmp_path / "nope")
    touch(tmp_path / "front.jpg")
    with pytest.raises(SubjectsError, match="put them in a subfolder"):
        discover_subjects(tmp_path)


def test_manifest_paths_are_relative_to_the_csv(tmp_path: Path) -> None:
    photos = tmp_path / "shoot"
    for view in ("front", "left", "right"):
        touch(photos / f"a-{view}.jpg")
    absolute = touch(tmp_path / "elsewhere" / "b-right.png")
    manifest = tmp_path / "people.csv"
    # A BOM, header in another order and case, a blank line, an absolute path, a missing file.
    manifest.write_text("\ufeffSubject, Left ,front,RIGHT\n"
                        "Ann,shoot/a-left.jpg,shoot/a-front.jpg,shoot/a-right.jpg\n"
                        ",,,\n"
                        f"Ben,shoot/a-left.jpg,shoot/a-front.jpg,{absolute}\n"
                        "Cy,shoot/nope.jpg,shoot/a-front.jpg,\n", encoding="utf-8")
    subjects = read_manifest(manifest)
    assert [s.name for s in subjects] == ["Ann", "Ben", "Cy"]
    assert subjects[0].problem is None and subjects[0].photos["left"] == photos / "a-left.jpg"
    assert subjects[1].problem is None and subjects[1].photos["right"] == absolute
    assert subjects[2].problem == f"left photo not found: {photos / 'nope.jpg'}; no right photo given"
    assert subjects[2].origin == "people.csv line 5"


def test_manifest_without_its_columns_is_an_error(tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text("name,front,left\nx,a,b\n")
    with pytest.raises(SubjectsError, match="missing subject, right"):
        read_manifest(manifest)
    with pytest.raises(SubjectsError, match="cannot read"):
        read_manifest(tmp_path / "absent.csv")


def test_duplicate_and_clashing_names_are_flagged_on_the_later_subject(tmp_path: Path) -> None:
    for view in ("front", "left", "right"):
        touch(tmp_path / f"{view}.jpg")
    manifest = tmp_path / "m.csv"
    manifest.write_text("subject,front,left,right\n"
                        "a/b,front.jpg,left.jpg,right.jpg\n"
                        "a_b,front.jpg,left.jpg,right.jpg\n"
                        "Carl,front.jpg,left.jpg,right.jpg\n"
                        "carl,front.jpg,left.jpg,right.jpg\n")
    subjects = read_manifest(manifest)
    assert subjects[0].problem is None and subjects[0].output_stem == "a_b"
    assert "same file name as 'a/b'" in subjects[1].problem
    assert subjects[2].problem is None
    assert "must be unique" in subjects[3].problem  # would overwrite Carl.glb on macOS/Windows


@pytest.mark.parametrize("name, expected", [
    ("alice", "alice"), ("Bob Smith", "Bob Smith"), ("zoë", "zoë"), ("../etc/passwd", "_etc_passwd"),
    ("..", "_"), (".hidden", "hidden"), ("a:b*c?", "a_b_c_"), ("tab\there", "tab_here"),
])
def test_safe_filename(name: str, expected: str) -> None:
    assert safe_filename(name) == expected
