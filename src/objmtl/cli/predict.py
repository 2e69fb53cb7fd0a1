"""objmtl-predict MODEL INPUT: run a checkpoint (PyTorch) or an exported .onnx file (onnxruntime) on an
image, a folder of images or a shard set; writes OUT/predictions.json, pictures, and for classification
OUT/predictions.txt (name, class, score per line). An .onnx file needs nothing else: its metadata
carries the task, class names and preprocessing."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from objmtl.cli.errors import report_user_errors
from objmtl.cli.paths import check_exists, check_model


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="objmtl-predict", description=__doc__)
    p.add_argument("model", type=Path, help="a .onnx file, a checkpoint, or a run directory")
    p.add_argument("input", type=Path, help="an image file, a folder of images, or a shard folder")
    p.add_argument("--out", type=Path, default=Path("predictions"), help="output folder (default: predictions/)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--score-thr", type=float, default=0.3, help="detection: lowest score kept (default 0.3)")
    p.add_argument("--top-k", type=int, default=5, help="classification: classes listed per image (default 5)")
    p.add_argument("--no-pictures", action="store_true", help="only the json (and txt)")
    p.add_argument("--split", default=None, help="shard input: the split to read (default: test, else val, else train)")
    p.add_argument("--limit", type=int, default=None, help="at most this many images")
    p.add_argument("--trust", action="store_true", help="allow arbitrary unpickling of the checkpoint")
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    with report_user_errors():
        check_model(args.model)  # a wrong path answers before torch loads
        check_exists(args.input)
        from objmtl.export.predict import predict

        predict(args.model, args.input, out=args.out, batch_size=args.batch_size, score_thr=args.score_thr,
                top_k=args.top_k, draw=not args.no_pictures, split=args.split, limit=args.limit, trust=args.trust)


if __name__ == "__main__":
    sys.exit(main())
