"""objmtl-doctor: build the compiled op (multi-scale deformable attention) ahead of time and report what runs
where: torch and CUDA versions, the nvcc and toolkit found, whether the CPU and CUDA kernels built (and how
long that took), the GPU, and which implementation ``ms_deform_attn`` uses on CPU and CUDA tensors.

Exit status 0 when the CPU kernel builds and matches the reference; otherwise one line on stderr."""

from __future__ import annotations

import argparse
import sys

from objmtl.cli.errors import report_user_errors


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="objmtl-doctor", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cuda", action="store_true",
                   help="also compile the CUDA kernel where no GPU is visible (set TORCH_CUDA_ARCH_LIST, e.g. 8.0, "
                        "or every architecture torch supports is compiled)")
    p.add_argument("--verbose", action="store_true", help="show the compiler's commands and output")
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    with report_user_errors():
        from objmtl.errors import UserError
        from objmtl.ops.diagnose import diagnose

        print("building the compiled op (the first time takes about a minute)...", flush=True)
        report = diagnose(compile_cuda=args.cuda, verbose=args.verbose)
        width = max(len(label) for label, _ in report.rows)
        for label, value in report.rows:
            print(f"{label:<{width}}  {value}")
        if not report.cpu_ok:
            raise UserError(report.cpu_error)


if __name__ == "__main__":
    sys.exit(main())
