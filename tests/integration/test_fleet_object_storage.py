"""A fleet with no shared directory: two worker nodes and the API, each with its own private DATA_DIR,
keep every photo, stage file and GLB in object storage (moto's S3 server), and every job completes,
its stages passed from one node to the other through the bucket.

Node A takes the CPU stages and node B the GPU stage, so every job crosses between them: with both
queues on both nodes a job crossed only by chance (a CI run once saw all 12 stay on one node each)."""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.photos import avatar_views
from client.avatar_client import AvatarClient
from jobs import localstack
from jobs.files import FileStore
from jobs.store import JobStore
from service_stack import start_api, start_redis_and_store

JOBS = 12
NODES = {"node-a@fleet": ("cpu",), "node-b@fleet": ("gpu",)}


def files_under(folder: Path) -> list[str]:
    return [os.path.join(root, name) for root, _dirs, names in os.walk(folder) for name in names]


def test_two_nodes_with_private_data_dirs_complete_every_job(tmp_path: Path, s3_endpoint: str) -> None:
    processes = []
    try:
        settings = start_redis_and_store(
            tmp_path, processes, mongodb_db="avatar_fleet_s3", api_workers=1, api_connections=1000,
            storage_url="s3://avatar-itest/fleet-private-dirs", s3_endpoint_url=s3_endpoint
        ).replace(data_dir=tmp_path / "api-data")
        nodes = {}
        for name, queues in NODES.items():
            # Each node its own DATA_DIR, as on machines that share no filesystem.
            node_settings = settings.replace(data_dir=tmp_path / f"{name.partition('@')[0]}-data")
            nodes[name] = localstack.start_solo_workers(node_settings, queues, 1, name,
                                                        tmp_path / name.partition("@")[0])
            processes.extend(nodes[name].values())
        base_url = start_api(settings, tmp_path, processes)
        for started in nodes.values():
            localstack.wait_solo_workers(settings, started)

        views = avatar_views(512)
        client = AvatarClient(base_url, timeout=30)
        with ThreadPoolExecutor(max_workers=4) as pool:
            ids = list(pool.map(lambda _: client.submit(views["front"], views["left"], views["right"]).avatar_id,
                                range(JOBS)))
            states = list(pool.map(lambda avatar_id: client.wait(avatar_id, timeout=90), ids))
        assert [state.status for state in states] == ["completed"] * JOBS

        store = JobStore.from_settings(settings)
        docs = list(store.jobs.find({"_id": {"$in": ids}}, {"workers": 1}))
        ran_on = {name.rsplit("-", 1)[0] for doc in docs for name in doc["workers"].values()}
        assert ran_on == {"node-a", "node-b"}, ran_on
        crossed = sum(1 for doc in docs if len({name for name in doc["workers"].values()}) > 1)
        assert crossed == JOBS, f"only {crossed} of {JOBS} jobs had stages on both nodes"

        files = FileStore.from_settings(settings, keyed=False)
        assert set(files.result_ages()) >= set(ids)
        assert not set(files.input_ages()) & set(ids), "photos or stage files outlived their jobs"
        downloaded = client.download(ids[0], tmp_path / "first.glb").read_bytes()
        assert downloaded == files.read_result(ids[0]) and downloaded[:4] == b"glTF"
        for folder in [tmp_path / "api-data", *(tmp_path / f"{n.partition('@')[0]}-data" for n in NODES)]:
            assert files_under(folder) == [], f"object storage wrote under DATA_DIR {folder}"
    finally:
        for process in reversed(processes):
            localstack.stop(process)
