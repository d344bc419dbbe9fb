"""Celery configuration for the avatar workers (and for the API, which only sends).

Only job ids travel through Redis: the photos, crops, landmarks and GLB are files on the shared
volume, so no result backend is configured (passing 1.5 MB through one costs ~10x a file path).
"""
from kombu import Queue

from jobs.settings import Settings


def settings_dependent(settings: Settings) -> dict:
    """The options that follow from the service settings (the API and tests pass their own)."""
    return {
        "broker_url": settings.broker_url,
        # A stage that runs past this is told to stop (soft), then killed (hard).
        "task_soft_time_limit": settings.job_timeout_s,
        "task_time_limit": settings.job_timeout_s + 30,
        # Redis redelivers an unacknowledged message after the visibility timeout: it must exceed
        # the longest a task can run, or a slow job would run twice at once.
        "broker_transport_options": {"visibility_timeout": settings.job_timeout_s * 2 + 60},
    }


CPU_QUEUE = "cpu"
GPU_QUEUE = "gpu"
# Completion webhooks wait on other people's servers: their own queue and workers, so that a slow
# receiver never holds a process that runs the stages.
WEBHOOK_QUEUE = "webhooks"
# The queues a job's stages wait in (what the reconciler looks through), and every queue.
STAGE_QUEUES = (CPU_QUEUE, GPU_QUEUE)
QUEUE_NAMES = (*STAGE_QUEUES, WEBHOOK_QUEUE)

_derived = settings_dependent(Settings.from_env())
broker_url = _derived["broker_url"]
task_soft_time_limit = _derived["task_soft_time_limit"]
task_time_limit = _derived["task_time_limit"]
broker_transport_options = _derived["broker_transport_options"]
broker_connection_retry_on_startup = True
result_backend = None
task_ignore_result = True

task_queues = tuple(Queue(name, routing_key=name) for name in QUEUE_NAMES)
task_default_queue = CPU_QUEUE
# Decoding, detection and GLB export are CPU work; only the landmark model benefits from a GPU.
task_routes = {
    "avatar.preprocess": {"queue": CPU_QUEUE},
    "avatar.inference": {"queue": GPU_QUEUE},
    "avatar.export": {"queue": CPU_QUEUE},
    # Completion webhooks: network I/O with retries, never where the stages run.
    "avatar.webhook": {"queue": WEBHOOK_QUEUE},
}

# A job must survive a worker dying mid-task: acknowledge only after the task ran, and put the
# message back if the worker process was lost.
task_acks_late = True
task_reject_on_worker_lost = True
# Long tasks: never let one process hoard messages another idle process could run.
worker_prefetch_multiplier = 1

# No task has a rate limit; skipping the per-message token-bucket check shortens every hop.
worker_disable_rate_limits = True

task_serializer = "json"
accept_content = ["json"]
worker_send_task_events = False
