"""The file store's keys against what the workers write, on the volume (no server needed)."""
from __future__ import annotations

from pathlib import Path

from jobs.encryption import FileCipher, generate_key
from jobs.files import STAGE_NAMES, FileStore


def test_the_stage_files_a_job_end_deletes_by_name_are_the_ones_the_workers_write() -> None:
    from worker.tasks import LANDMARKS, PREPARED

    assert set(STAGE_NAMES) == {PREPARED, LANDMARKS}


def test_a_job_end_deletes_its_files_and_folders_and_the_sweep_anything_else(tmp_path: Path) -> None:
    files = FileStore(tmp_path, FileCipher.from_encoded(generate_key()))
    for view in ("front", "left", "right"):
        files.save_upload("job-1", view, b"photo")
    for name in STAGE_NAMES:
        files.save_stage("job-1", name, b"stage")
    files.save_result("job-1", b"glTF")
    files.discard_inputs("job-1")
    assert not files.has_inputs("job-1") and files.has_result("job-1")
    assert not (tmp_path / "uploads" / "job-1").exists() and not (tmp_path / "work" / "job-1").exists()

    files.storage.put("work/job-2/from-an-older-version.npz", b"x")
    files.discard_inputs("job-2")
    assert files.input_ages().keys() == {"job-2"}  # not a name the job's end knows...
    files.purge_inputs("job-2")
    assert files.input_ages() == {}  # ... the sweep's listing finds it
