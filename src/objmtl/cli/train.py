"""objmtl-train: the Hydra command (``key=value`` overrides, ``-m`` for sweeps).

Hydra's composition errors (a misspelled option or key, an override it can't parse) are printed as one
``error:`` line plus at most one hint, without the config search path, and exit 2 like every other user
error. Set ``HYDRA_FULL_ERROR=1`` for Hydra's own report and tracebacks.
"""

from __future__ import annotations

import os
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from objmtl.cli.errors import OURS, hydra_message, report_user_errors, user_full_error
from objmtl.config import CONFIG_DIR  # its import registers the resolvers


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def _main(cfg: DictConfig) -> float | None:
    from objmtl.runs.train import train

    with report_user_errors():
        summary = train(cfg, overrides=list(HydraConfig.get().overrides.task))
    best = summary.get("best") or {}
    return best.get("value")  # the value an Optuna sweeper optimises


def main() -> None:
    if user_full_error():
        _main()
        return
    # Hydra prints its errors itself (with the search path) and exits 1, unless HYDRA_FULL_ERROR is set:
    # then they reach us, to be said in one line
    os.environ["HYDRA_FULL_ERROR"] = os.environ[OURS] = "1"
    try:
        _main()
    except Exception as e:  # noqa: BLE001 - anything that is not Hydra's composition error goes on up
        said = hydra_message(e)
        if said is None:
            raise
        line, hint = said
        print(f"error: {line}" + (f"\n{hint}" if hint else ""), file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    sys.exit(main())
