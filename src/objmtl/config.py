"""Where the Hydra config tree lives, and the resolvers it uses.

- ``${meta:KEY}``: a field of the training shards' ``meta.json`` (``num_classes``, ``classes``,
  ``num_keypoints``, ``sigmas``, ...), so heads are sized by the data, never by a typed number.
- ``${objmtl_run_dir:RESUME,DEFAULT}``: the run directory: RESUME when resuming, else DEFAULT.
- ``${objmtl_run_name:}``: the run directory's name, the same in every process of one distributed job:
  the start time, or under torchrun (a ``--rdzv-id``) and SLURM the date and the job's id, since the
  processes of several nodes start at different seconds and must share one run directory.
- ``${objmtl_direction:MODE}``: a task's ``main_mode`` (max / min) as Optuna's direction (maximize / minimize).
- ``${objmtl_log_name:NAME}``: NAME, with ``_rankR`` for the non-zero ranks of a torchrun / srun job.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from objmtl.locations import CONFIG_DIR

__all__ = ["CONFIG_DIR", "compose_config", "register_resolvers"]



def _meta(key: str, *, _root_: DictConfig) -> Any:
    from objmtl.data.datamodule import meta_of

    data = _root_.get("data") or {}

    def plain(key: str) -> Any:
        value = data.get(key)
        return OmegaConf.to_container(value) if value is not None and not isinstance(value, str) else value

    return meta_of(data.get("root"), plain("synth"), plain("sources")).field(key)


def _run_dir(resume: str | None, default: str) -> str:
    return str(resume) if resume else default


def _run_name() -> str:
    env = os.environ
    run_id = env.get("TORCHELASTIC_RUN_ID", "")
    if run_id and run_id != "none":
        return time.strftime("%Y-%m-%d") + f"_{run_id}"
    if env.get("SLURM_JOB_ID"):
        step = env.get("SLURM_STEP_ID")
        return time.strftime("%Y-%m-%d") + f"_slurm{env['SLURM_JOB_ID']}" + (f".{step}" if step else "")
    return time.strftime("%Y-%m-%d_%H-%M-%S")


def _log_name(name: str) -> str:
    rank = os.environ.get("RANK") or (os.environ.get("SLURM_PROCID") if os.environ.get("SLURM_NTASKS", "1") != "1"
                                      else None)
    return f"{name}_rank{rank}" if rank and rank != "0" else name


def _direction(mode: str) -> str:
    if mode not in ("max", "min"):
        raise ValueError(f"task.main_mode {mode!r}: use max or min")
    return "maximize" if mode == "max" else "minimize"


def register_resolvers() -> None:
    """Registers the resolvers (each only if missing, so safe to call again). Importing this module calls it:
    every importer of ``objmtl.config`` has them; call it again only after ``OmegaConf.clear_resolvers()``."""
    if not OmegaConf.has_resolver("meta"):
        OmegaConf.register_new_resolver("meta", _meta)
    if not OmegaConf.has_resolver("objmtl_run_dir"):
        OmegaConf.register_new_resolver("objmtl_run_dir", _run_dir)
    if not OmegaConf.has_resolver("objmtl_run_name"):
        OmegaConf.register_new_resolver("objmtl_run_name", _run_name, use_cache=True)
    if not OmegaConf.has_resolver("objmtl_direction"):
        OmegaConf.register_new_resolver("objmtl_direction", _direction)
    if not OmegaConf.has_resolver("objmtl_log_name"):
        OmegaConf.register_new_resolver("objmtl_log_name", _log_name)


register_resolvers()  # the one registration point: at import


def compose_config(*overrides: str, run_dir: str | Path | None = None) -> DictConfig:
    """``objmtl-train``'s config with ``overrides`` (``key=value``, ``group=option``), composed without running
    Hydra's app: for notebooks and scripts, which then call :func:`objmtl.runs.train.train` on it. The run
    goes to ``run_dir`` (default ``$OBJMTL_RUNS/notebook/<time>``, ``$OBJMTL_RUNS`` defaulting to ``runs``)."""
    from hydra import compose, initialize_config_dir

    if run_dir is None:
        run_dir = Path(os.environ.get("OBJMTL_RUNS", "runs")) / "notebook" / time.strftime("%Y-%m-%d_%H-%M-%S")
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=[*overrides, f"paths.output_dir={run_dir}"])
