"""How a worker loads its model: a throw-away child embeds a tiny batch first, so a crash is only a verdict.

Some llama.cpp kernels crash on some CPUs: on Intel CPUs with AMX the repacked kernel for quantized weights
(Q4_1, Q8_0) segfaults at the first `llama_decode` (ggml-org/llama.cpp#20824), in llama-server as well. A worker
that crashed itself would be restarted into the same crash. So before a worker loads its engine it runs this
module as a child (`python -m workers.embedder.canary`) with the loading it means to use; the child's death
(its signal logged) makes the worker try the safe loading, weight repacking off (llama-server's --no-repack).
Repacking is a choice per model: on one AMX machine MiniLM (f16) ran 10% faster with it, SmolLM2 (Q4_1)
crashed with it.

Verdicts are kept in CANARY_DIR/<model>.json (default DATA_DIR/canary), keyed by the model file, the CPU, the
llama.cpp build and the engine settings, so each combination is tried once; a lock makes a model's workers (and
the instances sharing the folder) wait for one trial.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from shared.file_integrity import atomic_write_text
from shared.lifecycle import child_prologue, describe_exit
from shared.settings import Settings
from workers.embedder.engine import Engine, EngineConfig

log = logging.getLogger(__name__)
WeightRepack = Literal["auto", "on", "off"]
_FINGERPRINT_BYTES = 1 << 20
_CANARY_TEXT = "The canary sentence checks that this model embeds on this CPU before the worker serves."


@dataclass(frozen=True)
class Verdict:
    """The loading a worker should use (`weight_repack`), or None when every allowed loading failed."""

    weight_repack: bool | None
    trials: dict[str, str]  # "repacking on" / "repacking off" -> "ok", or how the child failed ("killed by SIGSEGV")

    @property
    def failure(self) -> str:
        """Why the model cannot be served on this machine, for logs, status and 503 answers."""
        tried = "; ".join(f"weight {name}: {outcome}" for name, outcome in self.trials.items())
        return f"its canary embed failed on this CPU with every loading LLAMA_WEIGHT_REPACK allows ({tried})"


def choose_engine_config(settings: Settings, model: str, wanted: EngineConfig) -> tuple[EngineConfig | None, str]:
    """The engine config a worker of `model` should load (LLAMA_WEIGHT_REPACK decided), or None and why not."""
    verdict = choose_loading(wanted, settings.weight_repack, settings.canary_dir, model,
                             settings.test_engine_crash, settings.canary_timeout_seconds)
    if verdict.weight_repack is None:
        return None, verdict.failure
    repack = verdict.weight_repack
    return dataclasses.replace(wanted, weight_repack=repack,
                               crash_on_embed=crash_requested(settings.test_engine_crash, model, repack)), ""


def choose_loading(config: EngineConfig, mode: WeightRepack, state_dir: Path, model: str,
                   crash_spec: str = "", timeout: float = 120.0) -> Verdict:
    """Run (or recall) the canary for each loading `mode` allows, best first, until one works."""
    candidates = {"auto": [True, False], "on": [True], "off": [False]}[mode]
    state_dir.mkdir(parents=True, exist_ok=True)
    key = _verdict_key(config)
    path = state_dir / f"{model}.json"
    with open(state_dir / f"{model}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a model's other workers wait for this trial and reuse it
        known = _read_trials(path, key)
        trials: dict[str, str] = {}
        chosen: bool | None = None
        for repack in candidates:
            name = _trial_name(repack)
            if name not in known:
                known[name] = _run_child(dataclasses.replace(config, weight_repack=repack), model, crash_spec, timeout)
                atomic_write_text(path, json.dumps({"key": key, "trials": known}, indent=1))
                level = logging.INFO if known[name] == "ok" else logging.ERROR
                log.log(level, "canary for %s with weight %s: %s", model, name, known[name])
            trials[name] = known[name]
            if known[name] == "ok":
                chosen = repack
                break
    return Verdict(chosen, trials)


def crash_requested(crash_spec: str, model: str, weight_repack: bool) -> bool:
    """TEST_ENGINE_CRASH, a test-only setting: `model:repack` segfaults with repacking on (as AMX does),
    `model:always` with any loading. Entries are comma-separated."""
    for entry in filter(None, (part.strip() for part in crash_spec.split(","))):
        name, _, when = entry.partition(":")
        if name == model and (when == "always" or (when == "repack" and weight_repack)):
            return True
    return False


def _trial_name(repack: bool) -> str:
    return "repacking on" if repack else "repacking off"


def _run_child(config: EngineConfig, model: str, crash_spec: str, timeout: float) -> str:
    argv = [sys.executable, "-m", "workers.embedder.canary", json.dumps(dataclasses.asdict(config)), model, crash_spec]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return f"still running after CANARY_TIMEOUT_SECONDS={timeout:g}"
    if done.returncode == 0:
        return "ok"
    tail = "\n".join(done.stderr.strip().splitlines()[-12:])
    if tail:
        log.error("canary for %s (weight %s) said:\n%s", model, _trial_name(config.weight_repack), tail)
    if done.returncode < 0:
        return describe_exit(done.returncode)
    last_line = tail.splitlines()[-1] if tail else f"exit code {done.returncode}"
    return f"failed: {last_line}"


def _verdict_key(config: EngineConfig) -> str:
    """What a verdict depends on: the model's bytes, this CPU, this llama.cpp build, the engine settings."""
    import llama_cpp

    path = Path(config.model_path)
    digest = hashlib.sha256()
    size = path.stat().st_size
    with path.open("rb") as handle:
        # The head (GGUF header and tensor table) and the tail tell model files apart without reading GBs;
        # a RAM-disk copy of the same file gets the same key.
        digest.update(handle.read(_FINGERPRINT_BYTES))
        handle.seek(max(0, size - _FINGERPRINT_BYTES))
        digest.update(handle.read(_FINGERPRINT_BYTES))
    # Threads are left out: they change with scaling, not which kernels run.
    settings = {k: v for k, v in dataclasses.asdict(config).items()
                if k not in ("model_path", "weight_repack", "crash_on_embed", "threads")}
    return json.dumps({"model": f"{size}:{digest.hexdigest()[:32]}", "cpu": cpu_fingerprint(),
                       "llama_cpp": llama_cpp.__version__, "engine": settings}, sort_keys=True)


def cpu_fingerprint() -> str:
    """The CPU model and its flags, hashed: what decides which llama.cpp kernels run."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return "unknown"
    wanted = [next((line for line in lines if line.startswith(field)), "") for field in ("model name", "flags")]
    return hashlib.sha256("\n".join(wanted).encode()).hexdigest()[:16]


def _read_trials(path: Path, key: str) -> dict[str, str]:
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return dict(saved.get("trials", {})) if saved.get("key") == key else {}


def _canary(config: EngineConfig) -> None:
    """Embed a batch of short texts and one input of a call's token budget; raise unless vectors are unit length.

    The budget, not max_tokens: the kernels are the same, and SmolLM2's 2048 tokens took 30 s on one thread.
    """
    engine = Engine(config)
    try:
        short = [engine.tokenize(text) for text in ("Hello world", _CANARY_TEXT, "")]
        long = engine.tokenize(" ".join([_CANARY_TEXT] * 200))[: min(config.token_budget, engine.max_tokens)]
        for sequences in (short, [long]):
            vectors = engine.embed(sequences)
            if not np.all(np.isfinite(vectors)) or not np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3):
                raise RuntimeError("the canary's vectors are not finite unit vectors")
    finally:
        engine.close()


def main(argv: list[str]) -> int:
    """The canary child: embed with the engine config in argv[0]; 0 when the vectors are sound, 1 on an error."""
    child_prologue("llama-embeddings: canary")  # faulthandler prints where a crash happened, to our stderr
    fields, model, crash_spec = json.loads(argv[0]), argv[1], argv[2]
    config = EngineConfig(**fields)
    config = dataclasses.replace(config, crash_on_embed=crash_requested(crash_spec, model, config.weight_repack))
    try:
        _canary(config)
    except Exception as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main(sys.argv[1:]))
