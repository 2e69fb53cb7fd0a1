"""objmtl-export onnx CKPT --out FILE: a trained model as an ONNX file that needs nothing else.

Input INPUT__0 [B, 3, H, W] RGB; outputs OUTPUT__0, OUTPUT__1, ... (Triton's naming). By default the
input is normalised as in training ((pixels / 255 - mean) / std, float32); --bake-norm puts the
normalisation in the graph (input: [0, 255] pixels, float32, or uint8 with --uint8). Detection:
--nms onnx (default) gives boxes [B, D, 4], scores [B, D], labels [B, D] (-1 = empty) and a count [B]
with NMS in the graph; --nms none gives ObjectiveMTL's layout, one OUTPUT__0 [B, anchors, 4 + classes]
(boxes xyxy in input pixels, class scores) with NMS left to the caller. The file's metadata_props
(objmtl.*) carry the task, class names, input size, mean/std and the eval transform."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from objmtl.cli.errors import report_user_errors
from objmtl.cli.paths import check_checkpoint


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="objmtl-export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="format", required=True, metavar="{onnx}")
    o = sub.add_parser("onnx", help="export to ONNX (options: objmtl-export onnx --help)", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    o.add_argument("ckpt", type=Path, help="a checkpoint, or a run directory (its best checkpoint)")
    o.add_argument("--out", type=Path, required=True, help="the .onnx file to write")
    o.add_argument("--shape", type=int, nargs=2, metavar=("H", "W"), default=None,
                   help="input size traced at (default: the run's data.image_size)")
    o.add_argument("--dynamic", action="store_true", help="dynamic height and width (batch is always dynamic)")
    o.add_argument("--opset", type=int, default=17, help="ONNX opset, >= 16 (default 17)")
    o.add_argument("--bake-norm", action="store_true", help="normalise inside the graph: input is [0, 255] pixels")
    o.add_argument("--uint8", action="store_true", help="with --bake-norm: uint8 input")
    o.add_argument("--nms", choices=("onnx", "none"), default="onnx", help="detection: NMS in the graph or not")
    o.add_argument("--verify", action="store_true",
                   help="run onnxruntime and PyTorch on real images (batch 1, batch 3, and another size with "
                        "--dynamic); fail if an output differs by more than --tolerance")
    o.add_argument("--tolerance", type=float, default=1e-3, help="largest max-abs difference accepted (1e-3)")
    o.add_argument("--image", type=Path, default=None,
                   help="image file or folder for --verify/--show (default: the run's evaluation shards)")
    o.add_argument("--show", type=Path, default=None, help="draw the onnxruntime result on the first image here")
    o.add_argument("--triton", type=Path, default=None, help="also write a Triton model repository in this folder")
    o.add_argument("--max-batch-size", type=int, default=8, help="Triton max_batch_size (default 8)")
    o.add_argument("--trust", action="store_true", help="allow arbitrary unpickling of the checkpoint")
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    with report_user_errors():
        check_checkpoint(args.ckpt)  # a wrong path answers before torch and onnx load
        from objmtl.checkpoint import find_checkpoint
        from objmtl.export.pipeline import run_export

        run_export(find_checkpoint(args.ckpt), out=args.out, shape=args.shape, dynamic=args.dynamic, opset=args.opset,
                   bake_norm=args.bake_norm, uint8=args.uint8, nms=args.nms, verify_images=args.verify,
                   image=args.image, tolerance=args.tolerance, show=args.show, triton=args.triton,
                   max_batch_size=args.max_batch_size, trust=args.trust)


if __name__ == "__main__":
    sys.exit(main())
