"""``avatar batch``: an avatar for every subject in a folder (or a CSV manifest), resumably.

    avatar batch photos/ --server http://127.0.0.1:3000
    avatar batch --manifest people.csv --server http://avatars.internal --concurrency 8

``photos/`` holds one folder per subject with ``front``, ``left`` and ``right`` photos (any of
``.jpg .jpeg .png .webp``, any case); a manifest has the columns ``subject,front,left,right`` with
paths relative to the CSV. GLBs are written to ``--out`` (default: a folder next to the input named
``<input>-avatars``, e.g. ``photos-avatars/alice.glb``), which also holds the state file and the
summary.

Run it again with the same options to resume: subjects that completed (GLB present) or failed for
good (e.g. "left: no face found") are skipped, subjects already accepted by the server are waited
for by their avatar id, and a submission whose answer was lost is repeated with its original
Idempotency-Key — nothing finished is submitted twice. Ctrl-C stops starting new subjects, records
what is in flight, prints the command that resumes, and exits with 130.

Exit status: 0 all completed, 1 some subject failed (or was left unfinished), 2 bad input or the
server unreachable, 130 interrupted.
"""
from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import threading
from pathlib import Path

from client.avatar_client import AvatarClient
from client.batch import BatchOptions, BatchReport, SubjectResult, run_batch, write_summary
from client.batch_state import StateLocked
from client.errors import ApiError, TransportError
from client.subjects import SubjectsError, discover_subjects, read_manifest

DEFAULT_SERVER = "http://127.0.0.1:3000"
DEFAULT_CONCURRENCY = 4
STATE_NAME = ".avatar-batch-state.jsonl"
SUMMARY_NAME = "batch-summary.jsonl"


def add_batch_arguments(parser: argparse.ArgumentParser, local_server: str | None = None) -> None:
    """The batch's options; ``local_server`` (the URL of a stack running here) is the default server
    when AVATAR_SERVER is not set."""
    default_server = os.environ.get("AVATAR_SERVER") or local_server or DEFAULT_SERVER
    parser.add_argument("dir", nargs="?", type=Path,
                        help="folder holding one folder per subject (with front/left/right photos)")
    parser.add_argument("--manifest", type=Path,
                        help="CSV with columns subject,front,left,right (paths relative to the CSV), instead of DIR")
    parser.add_argument("--server", default=default_server,
                        help=f"service base URL (default: $AVATAR_SERVER, else the stack `avatar up` runs "
                             f"here, else {DEFAULT_SERVER}; now {default_server})")
    parser.add_argument("--token", default=os.environ.get("AVATAR_TOKEN"),
                        help="JWT sent as 'Authorization: Bearer' (default: $AVATAR_TOKEN); the avatars become its user's")
    parser.add_argument("--out", type=Path,
                        help="where <subject>.glb files go (default: <input>-avatars next to DIR or the manifest)")
    parser.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY,
                        help=f"subjects in flight at once (default: {DEFAULT_CONCURRENCY})")
    parser.add_argument("--state", type=Path, help=f"resume file (default: <out>/{STATE_NAME})")
    parser.add_argument("--summary", type=Path,
                        help=f"per-subject results; JSON lines, or CSV if the name ends in .csv "
                             f"(default: <out>/{SUMMARY_NAME})")
    parser.add_argument("--retries", type=int, default=2,
                        help="new attempts per subject after a failure that was the service's, not the photos' (default: 2)")
    parser.add_argument("--wait-timeout", type=float, default=600.0,
                        help="seconds to wait for one avatar before leaving it to the next run (default: 600)")
    parser.add_argument("--retry-failed", action="store_true",
                        help="also submit again the subjects that failed for good in earlier runs")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def cmd_batch(args: argparse.Namespace) -> int:
    """Make avatars for a folder of subjects (or a CSV manifest) through a running service; resumable."""
    if (args.dir is None) == (args.manifest is None):
        print("avatar batch: give either DIR or --manifest FILE.csv (one of them)", file=sys.stderr)
        return 2
    if not 1 <= args.concurrency <= 64:
        print("avatar batch: --concurrency must be between 1 and 64", file=sys.stderr)
        return 2
    source = Path(args.manifest or args.dir).expanduser()
    out_dir = (args.out or default_out_dir(source)).expanduser()
    state_path = args.state or out_dir / STATE_NAME
    summary_path = args.summary or out_dir / SUMMARY_NAME
    try:
        subjects = read_manifest(source) if args.manifest else discover_subjects(source, exclude=[out_dir])
    except SubjectsError as exc:
        print(f"avatar batch: {exc}", file=sys.stderr)
        return 2

    stop = threading.Event()
    client = AvatarClient(args.server, args.token, stop_event=stop, max_retry_wait_s=900)
    try:
        health = client.health()
    except TransportError as exc:
        print(f"avatar batch: cannot reach the service at {args.server}: {exc.message}", file=sys.stderr)
        return 2
    except ApiError as exc:
        print(f"avatar batch: the service at {args.server} answered {exc.status}: {exc.message}", file=sys.stderr)
        return 2
    if health.get("status") != "healthy":
        # Submissions are still tried: 503s are waited out and retried, and the queue keeps jobs.
        print(f"avatar batch: warning: the service reports itself {health.get('status')}", file=sys.stderr)
    out_dir.mkdir(parents=True, exist_ok=True)

    progress = _Progress(len(subjects), enabled=not args.no_progress)
    previous_sigterm = _sigterm_as_interrupt()
    try:
        report = run_batch(client, subjects,
                           BatchOptions(out_dir=out_dir, state_path=state_path, concurrency=args.concurrency,
                                        retries=max(0, args.retries), wait_timeout_s=args.wait_timeout,
                                        retry_failed=args.retry_failed),
                           stop, on_result=progress.result, on_skipped=progress.skipped,
                           on_stop=lambda: progress.write(
                               "stopping: no new subjects; finishing the requests in flight "
                               "(Ctrl-C again to quit at once)"))
    except StateLocked as exc:
        progress.close()
        print(f"avatar batch: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # before any subject started: nothing to record
        progress.close()
        print(f"\ninterrupted; resume with:\n  {resume_command(args)}", file=sys.stderr)
        return 130
    finally:
        _restore_sigterm(previous_sigterm)
        client.close()
    progress.close()
    write_summary(summary_path, report.results)
    _print_report(report, out_dir, summary_path, args)
    return report.exit_code


def default_out_dir(source: Path) -> Path:
    """``photos/`` → ``photos-avatars/`` beside it; ``people.csv`` → ``people-avatars/`` beside it.

    Beside, not inside: a folder inside DIR would look like one more subject.
    """
    source = source.resolve()
    stem = source.stem if source.is_file() else source.name
    return source.parent / f"{stem or 'batch'}-avatars"


def resume_command(args: argparse.Namespace) -> str:
    """The command line that picks this batch up again (the token itself is not printed)."""
    parts = ["avatar", "batch"]
    parts += ["--manifest", str(args.manifest)] if args.manifest else [str(args.dir)]
    parts += ["--server", args.server]
    for flag, value in (("--out", args.out), ("--state", args.state), ("--summary", args.summary)):
        if value is not None:
            parts += [flag, str(value)]
    if args.concurrency != DEFAULT_CONCURRENCY:
        parts += ["--concurrency", str(args.concurrency)]
    command = shlex.join(parts)
    if args.token and args.token == os.environ.get("AVATAR_TOKEN"):
        return command
    return command + (" --token \"$AVATAR_TOKEN\"" if args.token else "")


def _print_report(report: BatchReport, out_dir: Path, summary_path: Path, args: argparse.Namespace) -> None:
    completed, failed = report.count("completed"), report.count("failed")
    earlier = sum(1 for r in report.results if r.run == "earlier")
    left = report.count("interrupted")
    rate = (len(report.results) - earlier - left) / report.elapsed_s if report.elapsed_s > 0 else 0.0
    line = (f"{completed} completed, {failed} failed" + (f", {left} not finished" if left else "")
            + f" of {len(report.results)} subjects" + (f" ({earlier} from earlier runs)" if earlier else "")
            + f" in {report.elapsed_s:.1f} s ({rate:.2f}/s), {report.new_submissions} submitted; "
              f"GLBs in {out_dir}, summary in {summary_path}")
    print(line, file=sys.stderr)
    failures = [r for r in report.results if r.status == "failed"]
    for r in failures[:20]:
        print(f"  {r.subject}: {r.errorMessage} ({r.errorCode})", file=sys.stderr)
    if len(failures) > 20:
        print(f"  … and {len(failures) - 20} more (see {summary_path})", file=sys.stderr)
    if report.aborted:
        print(f"avatar batch: stopped: {report.aborted}", file=sys.stderr)
    if report.interrupted or left or any(r.status == "failed" and not r.permanent for r in failures):
        print(f"resume with:\n  {resume_command(args)}", file=sys.stderr)


class _Progress:
    """tqdm bar with done / failed counts; its own rate and ETA ignore subjects skipped at the start."""

    def __init__(self, total: int, enabled: bool):
        from tqdm import tqdm

        self._bar = tqdm(total=total, unit="avatar", file=sys.stderr, disable=not enabled, dynamic_ncols=True,
                         smoothing=0.2)
        self._lock = threading.Lock()
        self.done = self.failed = 0

    def skipped(self, earlier: list[SubjectResult]) -> None:
        with self._lock:
            self.done = sum(1 for r in earlier if r.status == "completed")
            self.failed = len(earlier) - self.done
            # Counted as the bar's start, so its rate and ETA measure this run's subjects only.
            self._bar.initial = self._bar.n = len(earlier)
            self._bar.set_postfix(done=self.done, failed=self.failed, refresh=False)
            self._bar.refresh()

    def result(self, result: SubjectResult) -> None:
        with self._lock:
            if result.status == "interrupted":
                return
            if result.status == "completed":
                self.done += 1
            else:
                self.failed += 1
                self._bar.write(f"failed {result.subject}: {result.errorMessage}", file=sys.stderr)
            self._bar.set_postfix(done=self.done, failed=self.failed, refresh=False)
            self._bar.update(1)

    def write(self, message: str) -> None:
        self._bar.write(message, file=sys.stderr)

    def close(self) -> None:
        self._bar.close()


def _sigterm_as_interrupt():
    """SIGTERM stops the batch the way Ctrl-C does (only possible from the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def interrupt(_signum, _frame):
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, interrupt)


def _restore_sigterm(previous) -> None:
    if previous is not None:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    """``python -m client.batch_cli …``: the same as ``avatar batch …``."""
    parser = argparse.ArgumentParser(prog="avatar batch", description=cmd_batch.__doc__)
    add_batch_arguments(parser)
    return cmd_batch(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
