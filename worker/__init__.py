"""Celery workers: thin tasks that load a job's files, call one pipeline stage, and record the result.

The service scales by worker processes, one task per process at a time. Numerical libraries that
start their own thread pools (OpenBLAS and OpenMP under numpy and OpenCV) would make every process
fight the others for the same cores: on 2 cores that made decoding and the mesh fit ~2x slower
and nearly halved the service's throughput (9 vs 17 avatars/s). Limit them to one thread per process before numpy is first imported; an operator can
still set these variables to something else.
"""
import os

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")
