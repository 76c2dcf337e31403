"""The tagger: batched onnxruntime inference fed by threads that read, hash and preprocess.

While the model runs a batch (onnxruntime releases the GIL), worker threads decode and prepare
the next images, so on a real model the pipeline costs little more than the model itself
(``bench/tagger_bench.py`` measures it). Cached scores (same model, same image bytes) skip
both decoding and inference.
"""

from __future__ import annotations

import os
import queue
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from tagging.errors import UserError
from tagging.tagger.cache import ScoreCache, content_hash
from tagging.tagger.labels import Labels, load_labels
from tagging.tagger.models import ModelFiles, resolve_model
from tagging.tagger.preprocess import Profile, prepare_bytes
from tagging.tagger.runtime import detect_profile, input_spec, open_session, output_size


@dataclass(frozen=True)
class Progress:
    """Reported after every image (cached ones too) and every batch."""

    done: int
    total: int
    cached: int
    failed: int
    key: str | None = None


@dataclass
class ScoreRun:
    """Raw scores of one pass over a set of images."""

    scores: dict[str, np.ndarray] = field(default_factory=dict)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (key, human reason)
    cached: int = 0
    cancelled: bool = False


ProgressFn = Callable[[Progress], None]


def _describe(err: BaseException) -> str:
    if isinstance(err, UnidentifiedImageError):
        return "not a readable image (unknown or corrupt format)"
    if isinstance(err, Image.DecompressionBombError):
        return "image is too large to decode safely (decompression-bomb guard)"
    if isinstance(err, OSError) and err.strerror:
        return f"cannot read: {err.strerror}"
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    return f"cannot decode: {text}"


def usable_cpus() -> int:
    """CPUs this process may run on (respects taskset/cgroup affinity where the OS tells)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 2


def default_workers() -> int:
    """Preprocessing threads: half the usable CPUs (ORT takes the rest), at least 2, at most 8."""
    return max(2, min(8, usable_cpus() // 2))


class Tagger:
    """A loaded tagger model. Thread-compatible: one ``score_images`` call at a time."""

    def __init__(self, files: ModelFiles, *, device: str = "auto", profile: str = "auto",
                 threads: int | None = None) -> None:
        self.files = files
        self.labels: Labels = load_labels(files.labels_path)
        self.session = open_session(files.model_path, device, threads)
        self.spec = input_spec(self.session, files.model_path)
        n_out = output_size(self.session)
        if n_out is not None:
            self.labels.check_output_size(n_out, files.model_path)
        self._checked_output = n_out is not None
        self.profile: Profile = detect_profile(self.session, files.labels_path, profile)
        self.output_name = self.session.get_outputs()[0].name
        self.providers = list(self.session.get_providers())

    @classmethod
    def load(cls, model: str | Path, *, device: str = "auto", profile: str = "auto",
             threads: int | None = None, cache_dir: Path | None = None) -> Tagger:
        return cls(resolve_model(model, cache_dir=cache_dir), device=device, profile=profile, threads=threads)

    @property
    def model_id(self) -> str:
        return self.files.model_id

    @property
    def size(self) -> int:
        return self.spec.size

    # ---- inference ----
    def predict(self, batch: np.ndarray) -> np.ndarray:
        """NHWC float32 batch (already preprocessed) -> (N, n_tags) scores."""
        n = batch.shape[0]
        fixed = self.spec.fixed_batch
        if fixed is not None and n != fixed:
            if n > fixed:  # split into model-sized calls
                return np.concatenate([self.predict(batch[i:i + fixed]) for i in range(0, n, fixed)])
            pad = np.zeros((fixed - n, *batch.shape[1:]), dtype=batch.dtype)
            return self.predict(np.concatenate([batch, pad]))[:n]
        if self.spec.nchw:
            batch = np.ascontiguousarray(batch.transpose(0, 3, 1, 2))
        try:
            out = self.session.run([self.output_name], {self.spec.name: batch})[0]
        except Exception as err:
            raise UserError(
                f"The tagger model {self.files.model_path} failed on a batch: {str(err).splitlines()[0][:300]}",
                path=self.files.model_path,
                hint="Check that this is a WD14/DeepDanbooru tagger export; try --batch 1.",
            ) from None
        out = np.asarray(out, dtype=np.float32).reshape(n, -1)
        if not self._checked_output:
            self.labels.check_output_size(out.shape[1], self.files.model_path)
            self._checked_output = True
        return out

    def prepare(self, data: bytes) -> np.ndarray:
        return prepare_bytes(data, self.size, self.profile)

    def score_images(
        self,
        items: Sequence[tuple[str, Path]],
        *,
        cache: ScoreCache | None = None,
        batch_size: int = 8,
        workers: int | None = None,
        on_progress: ProgressFn | None = None,
        cancel: threading.Event | None = None,
    ) -> ScoreRun:
        """Scores for ``(key, path)`` items. Unreadable images are reported in ``failed`` and
        skipped; setting ``cancel`` stops after the current batch, keeping what is done."""
        batch_size = max(1, int(batch_size))
        if self.spec.fixed_batch is not None:
            batch_size = self.spec.fixed_batch
        workers = workers or default_workers()
        run = ScoreRun()
        total = len(items)
        done = 0
        if cache is not None:
            cache.save_labels(self.model_id, self.labels)

        def report(key: str | None) -> None:
            if on_progress is not None:
                on_progress(Progress(done, total, run.cached, len(run.failed), key))

        def work(key: str, path: Path):
            if cache is not None:
                known = cache.known_hash(key, path)
                if known is not None:
                    hit = cache.get(self.model_id, known, len(self.labels))
                    if hit is not None:
                        return ("cached", hit, known)
            try:
                st = path.stat()
                data = path.read_bytes()
            except OSError as err:
                return ("failed", _describe(err), None)
            digest = ""
            if cache is not None:  # without a cache the hash would be wasted work
                digest = content_hash(data)
                cache.remember_hash(key, path, digest, st)
                hit = cache.get(self.model_id, digest, len(self.labels))
                if hit is not None:
                    return ("cached", hit, digest)
            try:
                return ("array", self.prepare(data), digest)
            except Exception as err:  # any decoder failure is about this file, not about kazari
                return ("failed", _describe(err), digest)

        pending: deque[tuple[str, Future]] = deque()
        window = batch_size * 2 + workers
        batch_keys: list[str] = []
        batch_arrays: list[np.ndarray] = []
        batch_digests: list[str] = []
        # The model runs in its own thread so that assembling the next batch (np.stack), cache
        # writes and progress callbacks never leave it idle. At most one batch waits for it.
        to_model: queue.Queue = queue.Queue()
        from_model: queue.Queue = queue.Queue()
        in_flight = 0

        def model_loop() -> None:
            while (job := to_model.get()) is not None:
                if cancel is not None and cancel.is_set():
                    from_model.put(None)  # withdrawn: cancelled before the model started it
                    continue
                keys, digests, batch = job
                try:
                    from_model.put((keys, digests, self.predict(batch)))
                except BaseException as err:  # handed to the calling thread, which re-raises
                    from_model.put(err)

        def collect(block: bool, keep: int = 0) -> None:
            """Take the model's finished batches; blocking, until at most ``keep`` are in flight."""
            nonlocal done, in_flight
            while in_flight > keep:
                try:
                    result = from_model.get(block=block)
                except queue.Empty:
                    return
                in_flight -= 1
                if result is None:
                    continue
                if isinstance(result, BaseException):
                    raise result
                keys, digests, scores = result
                for key, digest, row in zip(keys, digests, scores, strict=True):
                    run.scores[key] = row
                    if cache is not None:
                        cache.put(self.model_id, digest, row)
                done += len(keys)
                report(keys[-1])

        def submit_batch() -> None:
            nonlocal in_flight
            if not batch_arrays:
                return
            # One batch at the model and one waiting, never more: a put never blocks, so the loop
            # keeps checking cancel between items.
            collect(block=True, keep=1)
            job = (list(batch_keys), list(batch_digests), np.stack(batch_arrays))
            batch_keys.clear()
            batch_arrays.clear()
            batch_digests.clear()
            in_flight += 1
            to_model.put(job)

        it = iter(items)
        model_thread = threading.Thread(target=model_loop, name="kazari-tag-model", daemon=True)
        model_thread.start()
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kazari-tag") as pool:
            try:
                while True:
                    collect(block=False)
                    if cancel is not None and cancel.is_set():
                        # Contract: at most the one batch already at the model is scored after a
                        # cancel; the model loop withdraws any batch it would start later.
                        run.cancelled = True
                        break
                    while len(pending) < window:
                        nxt = next(it, None)
                        if nxt is None:
                            break
                        pending.append((nxt[0], pool.submit(work, nxt[0], Path(nxt[1]))))
                    if not pending:
                        submit_batch()
                        break
                    key, fut = pending.popleft()
                    kind, payload, digest = fut.result()
                    if kind == "cached":
                        run.scores[key] = payload
                        run.cached += 1
                        done += 1
                        report(key)
                    elif kind == "failed":
                        run.failed.append((key, payload))
                        done += 1
                        report(key)
                    else:
                        batch_keys.append(key)
                        batch_arrays.append(payload)
                        batch_digests.append(digest)
                        if len(batch_arrays) >= batch_size:
                            submit_batch()
                collect(block=True)
            finally:
                for _, fut in pending:
                    fut.cancel()
                to_model.put(None)
                model_thread.join()
                if cache is not None:
                    cache.flush()
        return run
