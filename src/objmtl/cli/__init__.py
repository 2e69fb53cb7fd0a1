"""The command-line entry points. Importing this package sets how OpenMP threads wait, before torch loads.

``OMP_WAIT_POLICY=PASSIVE``: a thread that waits at a barrier sleeps instead of spinning. On a machine that
another job shares, spinning threads take cores from the job and from their own slower sibling thread:
``make demo``'s training took 4.4x its quiet time beside another training job with spinning threads, and
1.4x with passive ones, for a 7 % loss when quiet (bench/shared_machine.py, docs/benchmarks.md). A value
the user set is kept.
"""

import os as _os

_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
