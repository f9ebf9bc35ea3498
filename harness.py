"""The harness: what train.py, evaluate.py and sample.py need that is not the paper.

- files: safe loading, checkpoints, writes that are whole or absent (a Ctrl-C waits for them);
- configs: the models' hyperparameters are dataclasses beside each model (`VAEConfig` in vae.py,
  `GeneratorConfig` in generator.py, `BackTranslatorConfig` in backtranslation.py); their fields
  become train.py's flags, the checkpoint's model arguments and evaluate.py's row names here
  (docs/adding-a-flag.md);
- a run: the process group, logging, and the out-dir rules (resume, refusal before any write).

cluster.py adds what a shared cluster needs: preemption, the out-dir lock, a step order that
survives a new number of processes.
"""
import argparse
import contextlib
import dataclasses
import json
import logging
import logging.handlers
import os
import signal
import sys
import threading

import numpy as np
import torch
import torch.distributed as dist

log = logging.getLogger("a2vslp")


class DataError(ValueError):
    """A data file or sample that cannot be used; the message names the file and the sample."""


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------

def _numpy_safe_globals():
    """numpy's array reconstruction, so that releases storing numpy arrays load with weights_only."""
    core = getattr(np, "_core", None) or np.core
    names = [core.multiarray._reconstruct, np.ndarray, np.dtype]
    names += [getattr(np.dtypes, n) for n in ("Float16DType", "Float32DType", "Float64DType")
              if hasattr(np, "dtypes") and hasattr(np.dtypes, n)]
    return names


def safe_load(path, what="file"):
    """torch.load(weights_only=True) with one clear error for missing, corrupt or unsafe files.

    A file whose pickle would import anything beyond tensors, plain containers and numpy arrays is
    refused before any of its code can run.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such {what}")
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - one message for every way a file can be unreadable
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "Unsupported global" in str(e) or "weights_only" in str(e).lower():
            unsafe = [ln.strip() for ln in str(e).splitlines() if "Unsupported global" in ln]
            reason = ("refused: it carries a pickled payload that is not plain data "
                      f"({unsafe[0] if unsafe else reason})")
        raise DataError(f"{path}: cannot load this {what}: {type(e).__name__}: {reason}") from None


STAGE_NAMES = {"vae": "VAE", "generator": "generator", "backtranslation": "back-translation"}


def load_checkpoint(path, stage, *or_stages):
    """The dict of a `train.py --stage STAGE` checkpoint (or of one of `or_stages`); one DataError
    naming the path and both stages for anything else (another stage's, a predictions file, ...)."""
    ckpt = safe_load(path, what="checkpoint")
    expected = "expected " + " or ".join(f"a {STAGE_NAMES[s]} checkpoint (stage {s!r})"
                                         for s in (stage, *or_stages))
    if not isinstance(ckpt, dict) or "stage" not in ckpt:
        what = (f"a {type(ckpt).__name__} of {len(ckpt)} entries" if hasattr(ckpt, "__len__")
                else type(ckpt).__name__)
        raise DataError(f"{path}: not a checkpoint of train.py ({what} without a 'stage'; a "
                        "predictions file?), " + expected)
    if ckpt["stage"] not in (stage, *or_stages):
        raise DataError(f"{path}: a {ckpt['stage']!r} checkpoint, {expected}")
    return ckpt


@contextlib.contextmanager
def sigint_deferred():
    """Hold a Ctrl-C (SIGINT) that arrives inside the block until the block ends, then act on it as
    the previous handler would (by default: raise KeyboardInterrupt). torch.save turns an interrupt
    in the middle of writing into a RuntimeError about its zip stream, so a save must not be
    interrupted. The Python-level handler is swapped, not the thread's signal mask: in a process with
    worker threads (torch's, OpenMP's) the kernel may deliver the signal to any of them. Signal
    handlers belong to the main thread; elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught = []
    old = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)
        if caught:
            if callable(old):
                old(signal.SIGINT, None)                 # default_int_handler raises KeyboardInterrupt
            elif old == signal.SIG_DFL:
                os.kill(os.getpid(), signal.SIGINT)


def atomic_write(path, write, mode="wb"):
    """write(f) into a temporary file in the same folder, fsync, then rename over `path`; a Ctrl-C
    during the write waits for it to finish (sigint_deferred), so a file is whole or absent."""
    with sigint_deferred():
        path = os.fspath(path)
        tmp = f"{path}.tmp.{os.getpid()}"
        try:
            with open(tmp, mode) as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except (OSError, RuntimeError) as e:   # disk full, read-only folder; torch.save: RuntimeError
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise OSError(f"{path}: cannot write ({reason}); the previous file, if any, is "
                          "unchanged") from None
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)


def atomic_save(obj, path):
    """torch.save(obj, path), whole or not at all (atomic_write)."""
    atomic_write(path, lambda f: torch.save(obj, f))


def atomic_json(obj, path):
    """Strict JSON (no NaN or Infinity) of obj at path, whole or not at all (atomic_write)."""
    text = json.dumps(obj, indent=2, allow_nan=False)
    atomic_write(path, lambda f: f.write(text), mode="w")


# ---------------------------------------------------------------------------------------------
# Configs: a hyperparameter is one dataclass field beside its model
# ---------------------------------------------------------------------------------------------

def hyper(default, help, *, flag=None, type=None, choices=None, model=False, label=None):
    """A config field with its flag. `default` is the paper's value where the paper gives one;
    `help` the flag's help; `flag` overrides --PREFIX-NAME; `type` is needed when the default is
    None; `model`: a constructor argument of the model (saved as the checkpoint's model_args);
    `label`: how evaluate.py's row names show a value other than the default (a format string, a
    function (value, config) -> str or None, or False: never; unset: "--flag value")."""
    return dataclasses.field(default=default, metadata=dict(
        help=help, flag=flag, type=type, choices=choices, model=model, label=label))


def hyper_fields(cls):
    return [f for f in dataclasses.fields(cls) if "help" in f.metadata]


def flag_name(cls, f):
    return f.metadata["flag"] or "--" + getattr(cls, "FLAG_PREFIX", "") + f.name.replace("_", "-")


def flag_dest(cls, f):
    return flag_name(cls, f)[2:].replace("-", "_")


def add_flags(group, cls):
    """One flag per field of config class `cls`, added to `group` (a parser or an argument group)."""
    for f in hyper_fields(cls):
        m, kw = f.metadata, dict(default=f.default, help=f.metadata["help"])
        if isinstance(f.default, bool):
            kw["action"] = argparse.BooleanOptionalAction
        elif isinstance(f.default, tuple):
            kw.update(nargs=len(f.default), type=m["type"] or type(f.default[0]))
        else:
            kw["type"] = m["type"] or type(f.default)
        if m["choices"]:
            kw["choices"] = m["choices"]
        group.add_argument(flag_name(cls, f), **kw)


def from_args(cls, args):
    """The config that parsed flags hold (a Namespace, or a checkpoint's "args" dict); a field the
    flags lack (a checkpoint older than the field) takes its default."""
    get = args.get if isinstance(args, dict) else lambda k, d: getattr(args, k, d)
    values = {}
    for f in hyper_fields(cls):
        v = get(flag_dest(cls, f), f.default)
        values[f.name] = tuple(v) if isinstance(v, list) else v
    return cls(**values)


def to_flags(cls, **values):
    """The command-line flags that set these fields of `cls`: to_flags(G, window=5) -> ["--window", "5"]."""
    by_name, out = {f.name: f for f in hyper_fields(cls)}, []
    for name, v in values.items():
        flag = flag_name(cls, by_name[name])
        if isinstance(v, bool):
            out.append(flag if v else "--no-" + flag[2:])
        else:
            out += [flag, *map(str, v if isinstance(v, tuple) else (v,))]
    return out


def model_args(cfg, **given):
    """The model's constructor arguments: the config's model fields, plus those `given` (from data)."""
    return {**{f.name: getattr(cfg, f.name) for f in hyper_fields(type(cfg)) if f.metadata["model"]},
            **given}


def describe(cfg):
    """The fields that differ from their defaults, as labels for a row name."""
    out = []
    for f in hyper_fields(type(cfg)):
        value, label = getattr(cfg, f.name), f.metadata["label"]
        if value == f.default or label is False:
            continue
        text = label(value, cfg) if callable(label) else label.format(value) if label else \
            " ".join(to_flags(type(cfg), **{f.name: value}))
        if text:
            out.append(text)
    return out


# ---------------------------------------------------------------------------------------------
# A run: processes, logging, the out dir
# ---------------------------------------------------------------------------------------------

def setup_distributed():
    """(rank, world_size, device); without RANK in the environment: one plain process."""
    if "RANK" not in os.environ:
        return 0, 1, torch.device("cuda" if torch.cuda.is_available() else "cpu")
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    # The store outlives a torchrun restart; without a per-attempt key prefix the restarted workers
    # read the dead workers' addresses and gloo hangs connecting to them.
    agent_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world,
                          is_master=rank == 0 and not agent_store, multi_tenant=not agent_store)
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    dist.init_process_group(backend, store=dist.PrefixStore(f"a2vslp/attempt{attempt}", store),
                            rank=rank, world_size=world)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    return rank, world, device


def rank0_first(distributed, fn, *args):
    """fn(*args) on rank 0, then on the other ranks: what rank 0 writes (caches, the corpus), they read."""
    if distributed and dist.get_rank() != 0:
        dist.barrier()
    out = fn(*args)
    if distributed and dist.get_rank() == 0:
        dist.barrier()
    return out


def all_reduce_sum(t, distributed):
    if distributed:
        dist.all_reduce(t)
    return t


LOG_FORMAT = logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S")


def setup_logging(master):
    """stdout now; on rank 0 the records are also held back for log.txt, which open_log_file
    starts once the run is accepted (a refused run leaves log.txt as it was)."""
    log.handlers.clear()
    log.setLevel(logging.INFO if master else logging.WARNING)
    log.propagate = False
    held = [logging.handlers.MemoryHandler(capacity=1 << 20, flushLevel=logging.CRITICAL + 1)] if master else []
    for h in [logging.StreamHandler(sys.stdout), *held]:
        h.setFormatter(LOG_FORMAT)
        log.addHandler(h)


def open_log_file(out_dir):
    """Append the held-back records, and all later ones, to OUT_DIR/log.txt."""
    file = logging.FileHandler(os.path.join(out_dir, "log.txt"))
    file.setFormatter(LOG_FORMAT)
    held = next(h for h in log.handlers if isinstance(h, logging.handlers.MemoryHandler))
    held.setTarget(file)
    held.flush()
    log.removeHandler(held)
    log.addHandler(file)


def log_epoch(epoch, epochs, step, train_logs, dev_logs, frames_per_s, lr, elapsed, improved, skips,
              first_batch):
    """The log line of an epoch; "*" marks a better dev criterion (a new best.pt)."""
    def fmt(d):
        return " ".join(f"{k} {d[k]:.4g}" for k in sorted(d, key=lambda k: (k != "loss", k)))
    log.info("epoch %d/%d step %d | train %s | dev %s | %.0f frames/s | lr %.2e | %.0fs%s%s%s",
             epoch, epochs, step, fmt(train_logs), fmt(dev_logs), frames_per_s, lr, elapsed,
             " *" if improved else "", f" | {skips} skipped" if skips else "",
             f" | train logs of batches {first_batch + 1}+ (resumed)" if first_batch else "")


def check_finite(model, where, out_dir):
    """Before a save: FloatingPointError naming `where` and the first weights that are NaN or inf."""
    bad = [k for k, v in model.state_dict().items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise FloatingPointError(f"{where}: non-finite weights in {bad[:3]}; not saved, the last good "
                                 f"checkpoint in {out_dir} is kept")


def fill_defaults(parser, args, defaults, announce, checkpoints=()):
    """Flags left unset (None) take `defaults` {dest: value}, each printed when `announce` (by rank
    0); a defaulted checkpoint flag (`checkpoints`) whose file is missing is a usage error."""
    for k, default in defaults.items():
        if getattr(args, k) is None and default is not None:
            setattr(args, k, default)
            if announce and os.environ.get("RANK", "0") == "0":
                print(f"--{k.replace('_', '-')} {default} (default)", flush=True)
            if k in checkpoints and not os.path.exists(default):
                parser.error(f"--{k} defaults to {default}, which does not exist: train that stage "
                             f"first or pass --{k} PATH")


def changed_flags(args, saved, defaults, resumable, path_flags):
    """Flags of this call (a Namespace) that differ from a checkpoint's `saved` args, outside
    `resumable`, as "--flag: OLD in the checkpoint, NEW now"; a flag the checkpoint predates counts
    as its default; `path_flags` are compared as absolute paths."""
    def norm(k, v):
        return os.path.abspath(v) if k in path_flags and isinstance(v, str) else \
            tuple(v) if isinstance(v, list) else v

    return [f"--{k.replace('_', '-')}: {saved.get(k, defaults.get(k))} in the checkpoint, {v} now"
            for k, v in vars(args).items()
            if k not in resumable and norm(k, saved.get(k, defaults.get(k))) != norm(k, v)]


def restore(part, ckpt, key, where):
    """part.load_state_dict(ckpt[key]) when both exist; a damaged entry is one DataError naming `where`."""
    if part is not None and ckpt.get(key) is not None:
        try:
            part.load_state_dict(ckpt[key])
        except (KeyError, TypeError, ValueError) as e:
            first = str(e).splitlines()[0] if str(e) else ""
            raise DataError(f"{where}: damaged {key!r}: {type(e).__name__}: {first}") from None


def check_out_dir(args, last_path, best_path, diff):
    """The checkpoint to resume from, or None for a fresh run; refuses (before anything is written)
    a run that would overwrite a checkpoint, or resume one whose flags `diff(saved_args)` (a list of
    differences) finds changed."""
    held = [p for p in (last_path, best_path) if os.path.exists(p)]
    if args.resume == "never" and held:
        raise DataError(f"--resume never: {held[0]} exists; choose another --out-dir (nothing was changed)")
    if args.resume == "always" and not os.path.exists(last_path):
        raise DataError(f"--resume: {last_path} does not exist")
    if not os.path.exists(last_path) or args.resume == "never":
        if held:
            raise DataError(f"{best_path} exists but {last_path} does not: nothing to resume, and a fresh "
                            "run would overwrite best.pt; choose another --out-dir (nothing was changed)")
        return None
    ckpt = load_checkpoint(last_path, args.stage)
    changed = diff(ckpt["args"] if isinstance(ckpt.get("args"), dict) else {})
    if changed:
        raise DataError(f"{last_path}: incompatible with these flags, a resume keeps the run's settings "
                        f"(use another --out-dir for a new run): {'; '.join(changed)}")
    return ckpt


def add_run_flags(parser, resumable):
    """The flags of running train.py, beside what it trains: resume, caches, workers, mid-epoch
    saves, mixed precision, bad input. `resumable`: the flags a resume may change."""
    g = parser.add_argument_group("running")
    g.add_argument("--resume", nargs="?", const="always", default="auto",
                   choices=["auto", "always", "never"],
                   help="auto: continue from OUT_DIR/last.pt when it exists; --resume / always: "
                   "require it; never: start fresh and refuse an out dir that holds a checkpoint. A "
                   "resume with other flags than the checkpoint's is refused, except for "
                   + ", ".join("--" + k.replace("_", "-") for k in resumable))
    g.add_argument("--cache-dir", help="text-embedding and latent caches, keyed by content "
                   "(default: OUT_DIR/cache)")
    g.add_argument("--num-workers", type=int, default=0, help="DataLoader worker processes per rank")
    g.add_argument("--save-every", type=int, default=0, metavar="STEPS",
                   help="also write last.pt every STEPS optimizer steps inside an epoch, so that a "
                   "killed run loses at most STEPS steps (default 0: at the end of each epoch only); "
                   "a resume from it continues the same order of batches")
    g.add_argument("--amp", action="store_true",
                   help="bf16 autocast on CUDA (a no-op with a notice on CPU)")
    g.add_argument("--skip-bad-samples", action="store_true",
                   help="skip malformed samples with a warning")
    g.add_argument("--skip-nonfinite", action="store_true",
                   help="skip a step whose loss is NaN/Inf (counted) instead of stopping the run")


@dataclasses.dataclass
class Progress:
    """Where a run is, for the message of a Ctrl-C: the epoch being trained (0: not yet), the
    optimizer steps taken, and what last.pt holds, (epochs, global batches of the next) or None."""
    epoch: int = 0
    step: int = 0
    saved: tuple = None

    def interrupted(self):
        where = (f"interrupted at epoch {self.epoch} step {self.step}" if self.epoch
                 else "interrupted before training started")
        epoch, batch = self.saved or (0, 0)
        saved = f"last.pt is epoch {epoch}" + (f" + {batch} batches" if batch else "") \
            if self.saved else "no last.pt was written"
        return f"{where}; {saved}"


def rng_states(distributed):
    """Every rank's random-number state (CPU, and CUDA when present), a list indexed by rank, on every
    rank (all ranks must call this together). Saved in last.pt, so a mid-epoch resume on as many ranks
    continues each rank's noise stream (VAE sampling, dropout)."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    if not distributed:
        return [state]
    every = [None] * dist.get_world_size()
    dist.all_gather_object(every, state)
    return every


def set_rng_state(state):
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


class Checkpoints:
    """OUT_DIR/last.pt and best.pt of a training run. Each holds `parts` (objects with a
    state_dict: model, optimizer, ...; None is saved as None), `fixed` (entries every save carries
    unchanged: the stage, the flags, what inference needs) and the loop's counters (epoch: epochs
    done; batch: global batches of the next epoch done; step; best_val; val; bad_epochs)."""

    def __init__(self, out_dir, parts, fixed, progress, rank, world):
        self.last, self.best = os.path.join(out_dir, "last.pt"), os.path.join(out_dir, "best.pt")
        self.parts, self.fixed, self.progress = parts, fixed, progress
        self.rank, self.world = rank, world

    def resume(self, ckpt):
        """Restore the parts from last.pt's dict; returns its counters and this rank's saved
        random-number state (None when the world size changed: the noise streams start anew)."""
        for key, part in self.parts.items():
            if key == "model":
                try:
                    part.load_state_dict(ckpt["model"])
                except RuntimeError as e:
                    raise DataError(f"{self.last}: incompatible with the model built from these "
                                    f"flags: {str(e).splitlines()[0]}") from None
            else:
                restore(part, ckpt, key, self.last)
        counters = {k: ckpt[k] for k in ("epoch", "step", "best_val", "bad_epochs")}
        counters.update(val=ckpt.get("val"), batch=ckpt.get("batch", 0))
        saved_world, rng = ckpt.get("world_size", 1), ckpt.get("rng")
        log.info("resumed from %s at epoch %d, batch %d, step %d%s", self.last, counters["epoch"],
                 counters["batch"], counters["step"], "" if saved_world == self.world else
                 f" (saved under world size {saved_world}, now {self.world}: the same global batches "
                 "in the same order; the per-rank noise streams of a mid-epoch resume start anew)")
        self.progress.step, self.progress.saved = counters["step"], (counters["epoch"], counters["batch"])
        return counters, rng[self.rank] if isinstance(rng, list) and len(rng) == self.world else None

    def save(self, counters, improved=False):
        """last.pt (and best.pt when improved), on every rank together: the ranks' random-number
        states are gathered, rank 0 writes, a Ctrl-C waits for the writes (so last.pt and its
        message agree), then all ranks meet."""
        rng = rng_states(self.world > 1)
        with sigint_deferred():
            if self.rank == 0:
                ckpt = {**self.fixed, **counters, "world_size": self.world, "rng": rng,
                        **{k: p.state_dict() if p is not None else None for k, p in self.parts.items()}}
                if improved:
                    atomic_save(ckpt, self.best)
                atomic_save(ckpt, self.last)
            self.progress.saved = (counters["epoch"], counters["batch"])
        if self.world > 1:
            dist.barrier()


def sum_over_ranks(sums, device, distributed):
    """{name: float} of the sums of {name: 0-d tensor} over all ranks, in one all-reduce; a rank may
    lack some names (no dev batch, say): the names are agreed on first, a missing one counts 0."""
    keys = sorted(sums)
    if distributed:
        every = [None] * dist.get_world_size()
        dist.all_gather_object(every, keys)
        keys = sorted(set().union(*every))
    zero = torch.zeros((), dtype=torch.float64, device=device)
    packed = torch.stack([torch.as_tensor(sums.get(k, zero)).to(device, torch.float64) for k in keys])
    return dict(zip(keys, all_reduce_sum(packed, distributed).tolist()))


def autocast(amp, device):
    """bf16 autocast on CUDA with --amp; float32 otherwise (with a notice when --amp is given)."""
    if amp and device.type != "cuda":
        log.info("--amp: bf16 autocast is for CUDA; running in float32 on %s", device.type)
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def load_for(flag, path, stage, build, model_args=None):
    """build(checkpoint dict) of a `stage` checkpoint given as `flag PATH` (flag "" for a path
    alone); anything wrong with it (a damaged file, arguments the model refuses, model_args other
    than the given ones) is one DataError naming the flag and the file."""
    where = f"{flag} {path}" if flag else str(path)
    try:
        ckpt = load_checkpoint(path, stage)
    except DataError as e:
        raise DataError(f"{flag} {e}" if flag else str(e)) from None
    if model_args is not None and ckpt.get("model_args") != model_args:
        saved = ckpt.get("model_args") or {}
        diff = {k: (saved.get(k), v) for k, v in model_args.items() if saved.get(k) != v}
        raise DataError(f"{where}: incompatible configuration (checkpoint vs flags): {diff}")
    try:
        return build(ckpt)
    except (DataError, KeyError, TypeError, RuntimeError, AssertionError) as e:   # bad model_args
        raise DataError(f"{where}: damaged {STAGE_NAMES[stage]} checkpoint: "
                        f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
