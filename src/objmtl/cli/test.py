"""objmtl-test: evaluate a run directory or checkpoint, print the metrics and write them as JSON.

--out writes the predictions (det/pose: COCO results json; seg: class-index PNGs; cls: json, or
text for any other suffix), --eval picks the printed metrics and --show-dir draws predictions
beside the ground truth."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from objmtl.cli.errors import report_user_errors
from objmtl.cli.paths import check_checkpoint
from objmtl.errors import UserError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="objmtl-test", description=__doc__,
        epilog="Trailing key=value items override the config stored in the checkpoint, "
               "e.g. data.num_workers=0.")
    p.add_argument("source", type=Path, help="a run directory (uses its best checkpoint) or a .ckpt file")
    p.add_argument("--data", type=Path, default=None, help="evaluate on this shard set instead of the run's")
    p.add_argument("--split", choices=("val", "test"), default=None,
                   help="default: test when the data has a test split, else val")
    p.add_argument("--out", type=Path, default=None,
                   help="write the predictions here: det: COCO results json (image_id, category_id as in the source "
                        "data, bbox [x, y, w, h] in original pixels, score); pose: COCO keypoint results json; "
                        "seg: a folder of class-index PNGs (IMAGE_ID.png); cls: a json list (.json) or "
                        "tab-separated text (key, label, class, score); inst: COCO segmentation results json "
                        "(RLE masks) and OUT_bbox.json beside it")
    p.add_argument("--metrics-out", type=Path, default=None,
                   help="metrics JSON (default RUN_DIR/eval_<split>/metrics.json; plots go beside it)")
    p.add_argument("--eval", nargs="+", default=None, dest="eval_metrics", metavar="GROUP",
                   help="metrics to print: cls: accuracy; det: bbox (COCO AP, AP50, AP75, APs/m/l, AR; the "
                        "default), map (VOC mAP at IoU 0.5), recall (VOC recall); seg: mIoU; pose: keypoints "
                        "(COCO keypoint AP/AR by OKS), pck; inst: segm (COCO mask AP/AR), bbox (both by default); "
                        "all go to the metrics JSON")
    det = p.add_argument_group("pictures")
    det.add_argument("--show-dir", type=Path, default=None,
                     help="write IMAGE_ID.png per image: predictions beside ground truth, original size (boxes, "
                          "mask overlays or skeletons)")
    det.add_argument("--show-score-thr", type=float, default=0.3,
                     help="lowest score drawn in --show-dir pictures (default 0.3)")
    p.add_argument("--fuse-conv-bn", action="store_true",
                   help="fold BatchNorm layers into their convolutions before evaluating (faster, same metrics)")
    p.add_argument("--format-only", action="store_true",
                   help="only write --out (e.g. for a test set without annotations); no metrics")
    p.add_argument("--trust", action="store_true", help="allow arbitrary unpickling of the checkpoint (trusted files)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--accelerator", default="auto", help="auto, cpu or gpu")
    p.add_argument("--devices", type=int, default=1,
                   help="evaluate with N processes under DDP (GPUs, or CPU processes with gloo); same "
                        "metrics as one process, predictions gathered on rank 0 (MMDetection's dist_test)")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_intermixed_args(argv)
    with report_user_errors():
        if args.eval_metrics:  # --eval's list swallows the key=value items that follow it: give them back
            args.overrides += [e for e in args.eval_metrics if "=" in e]
            args.eval_metrics = [e for e in args.eval_metrics if "=" not in e]
        bad = [o for o in args.overrides if "=" not in o]
        if bad:
            raise UserError(f"{bad[0]}: overrides are key=value")
        check_checkpoint(args.source)  # a wrong path answers before torch loads
        from objmtl.runs.evaluate import evaluate

        evaluate(args.source, split=args.split, data_root=args.data, out=args.out, metrics_out=args.metrics_out,
                 overrides=args.overrides, accelerator=args.accelerator, batch_size=args.batch_size,
                 eval_metrics=args.eval_metrics, show_dir=args.show_dir, show_score_thr=args.show_score_thr,
                 fuse_conv_bn=args.fuse_conv_bn, format_only=args.format_only, trust=args.trust,
                 devices=args.devices)


if __name__ == "__main__":
    sys.exit(main())
