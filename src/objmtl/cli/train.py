"""objmtl-train: the Hydra command (``key=value`` overrides, ``-m`` for sweeps)."""

from __future__ import annotations

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from objmtl.cli.errors import report_user_errors
from objmtl.config import CONFIG_DIR, register_resolvers

register_resolvers()


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def _main(cfg: DictConfig) -> float | None:
    from objmtl.runs.train import train

    with report_user_errors():
        summary = train(cfg, overrides=list(HydraConfig.get().overrides.task))
    best = summary.get("best") or {}
    return best.get("value")  # the value an Optuna sweeper optimises


def main() -> None:
    _main()


if __name__ == "__main__":
    sys.exit(main())
