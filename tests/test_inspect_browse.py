"""objmtl-data inspect and browse, the shared drawing functions, and the CJK font fallback."""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from objmtl.cli.data import build_parser
from objmtl.data.browse import browse, sample_panels
from objmtl.data.inspect import _summary, inspect_shards
from objmtl.data.schema import read_meta
from objmtl.data.shard_reader import ShardDataset
from objmtl.data.synth import write_synthetic
from objmtl.errors import UserError
from objmtl.viz import fonts
from objmtl.viz.draw import (
    class_color,
    draw_boxes,
    draw_keypoints,
    draw_label_text,
    draw_mask,
    draw_polygons,
    side_by_side,
)

TOFU = "\U0010fffd"  # a private-use code point no font draws: renders as the .notdef box


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("inspect") / "shards"
    write_synthetic(root, n=24, seed=0, image_size=64)
    return root


def _cli(*argv: str) -> None:
    args = build_parser().parse_args(argv)  # objmtl-data's own parser, in this process
    args.func(args)


def _samples(root: Path, split: str) -> dict[str, dict]:
    return {s["key"]: s for s in ShardDataset(root=root, split=split)}


# ---- inspect ----

def test_inspect_matches_meta_and_an_independent_count(shards: Path) -> None:
    meta = read_meta(shards)
    report = inspect_shards(shards)
    assert report["counts"] == {s: meta.count(s) for s in meta.splits} == {"train": 17, "val": 5, "test": 2}
    assert report["all"]["scanned"] == 24
    for split, block in report["splits"].items():
        samples = list(_samples(shards, split).values())
        labels = Counter(meta.classes[s["ann"]["label"]] for s in samples)
        instances = Counter(meta.classes[c] for s in samples for c in s["ann"]["classes"])
        assert block["scanned"] == len(samples) == meta.count(split)
        assert block["labels"] == {c: labels[c] for c in meta.classes}
        assert block["instances"] == {c: instances[c] for c in meta.classes}
        n_inst = sum(instances.values())
        assert n_inst > 0 and block["instances_total"] == n_inst
        assert sum(block["box_area"]["counts"]) == sum(block["box_area"]["coco"].values()) == n_inst
        per_image = Counter(len(s["ann"]["boxes"]) for s in samples)
        assert block["instances_per_image"]["hist"] == dict(sorted(per_image.items()))
        assert block["width"] == {"min": 64, "median": 64, "max": 64, "mean": 64}
        vis = np.zeros((4, 3), int)
        for s in samples:
            for inst in s["ann"]["keypoints"]:
                for k, (_, _, v) in enumerate(inst):
                    vis[k, v] += 1
        assert [list(v.values()) for v in block["keypoint_visibility"].values()] == vis.tolist()
        pixels = sum(np.bincount(s["mask"].ravel(), minlength=5)[:5] for s in samples)
        shares = block["mask_pixel_shares"]
        assert shares["background"] == pytest.approx(pixels[0] / pixels.sum(), abs=1e-6)
        assert sum(shares.values()) == pytest.approx(1.0, abs=1e-4)


def test_inspect_split_and_limit(shards: Path) -> None:
    report = inspect_shards(shards, splits=["train"], limit=3)
    assert list(report["splits"]) == ["train"] and report["all"]["scanned"] == 3
    assert report["counts"]["train"] == 17  # counts are meta.json's, whatever was read
    with pytest.raises(UserError, match="no samples"):
        inspect_shards(shards, splits=["nope"])
    assert _summary(Counter({1: 2, 5: 1}))["median"] == 1
    assert _summary(Counter({1: 1, 3: 1})) == {"min": 1, "median": 2, "max": 3, "mean": 2}


def test_inspect_cli_tables_plots_json(shards: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _cli("inspect", str(shards), "--split", "all", "--plot", str(tmp_path / "plots"),
         "--json", str(tmp_path / "r.json"))
    out = capsys.readouterr().out
    assert "classes: image labels / instances" in out and "keypoint visibility" in out and "triangle" in out
    pngs = sorted(p.name for p in (tmp_path / "plots").glob("*.png"))
    assert pngs == ["box_area.png", "box_aspect.png", "class_histogram.png", "image_sizes.png"]
    for name in pngs:
        with Image.open(tmp_path / "plots" / name) as im:
            assert im.size[0] > 100 and np.asarray(im.convert("L")).std() > 5  # not blank
    assert json.loads((tmp_path / "r.json").read_text())["all"]["scanned"] == 24


# ---- drawing ----

def test_draw_boxes_marks_border_and_caption_only() -> None:
    image = np.full((100, 100, 3), 128, np.uint8)
    out = draw_boxes(image, [[20, 40, 80, 90]], [1], class_names=["a", "b"])
    assert (image == 128).all() and out.shape == image.shape  # input untouched
    changed = (out != image).any(-1)
    assert changed[40, 20:81].all() and changed[90, 20:81].all()
    assert changed[40:91, 20].all() and changed[40:91, 80].all()
    assert tuple(out[60, 20]) == class_color(1)
    assert not changed[45:86, 25:76].any()  # inside the box: nothing
    assert changed[25:40, 20:40].any() and not changed[:, 85:].any()  # the caption sits above the box


def test_draw_mask_colours_classes_hatches_ignore() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    mask = np.zeros((40, 60), np.uint8)
    mask[5:20, 5:30], mask[25:35, 10:50], mask[:, 55:] = 1, 2, 255
    out = draw_mask(image, mask, background_index=0)
    changed = (out != image).any(-1)
    assert not changed[mask == 0].any() and changed[(mask == 1) | (mask == 2)].mean() > 0.95
    assert changed[mask == 255].mean() > 0.95
    assert len(np.unique(out[mask == 255].reshape(-1, 3)[:, 0] // 64)) >= 1
    assert (draw_mask(image, mask) != image).any(-1)[mask == 0].mean() > 0.9  # class 0 coloured by default
    with pytest.raises(ValueError, match="differ in size"):
        draw_mask(image, mask[:10])


def test_draw_keypoints_visibility_and_skeleton() -> None:
    image = np.zeros((60, 90, 3), np.uint8)
    kps = [[[10, 10, 2], [40, 10, 1], [70, 10, 0], [10, 40, 2]]]
    out = draw_keypoints(image, kps, skeleton=[[0, 3], [1, 2]], radius=6, colors=[(255, 0, 0)])
    lit = (out != 0).any(-1)
    assert tuple(out[8, 12]) == tuple(out[42, 12]) == (255, 0, 0)  # v=2: filled (off the skeleton line)
    assert not lit[9:12, 39:42].any() and lit[4:17, 34:47].any()  # v=1: hollow ring
    assert not lit[:, 60:].any()  # v=0: not drawn, nor the skeleton line to it
    assert lit[25, 10] and not lit[10, 55]  # line between labelled points only


def test_draw_polygons_label_text_side_by_side() -> None:
    image = np.full((50, 50, 3), 200, np.uint8)
    out = draw_polygons(image, [[[10, 10, 40, 10, 40, 40, 10, 40]]], [0])
    changed = (out != image).any(-1)
    assert changed[25, 25] and changed[10, 25] and not changed[45:, :].any() and not changed[:, 45:].any()
    captioned = draw_label_text(image, "label: dog")
    assert captioned.shape[0] > 50 and (captioned[:50, :50] == image).all()
    assert (captioned[50:, :40] > 128).any()  # white text on the dark strip
    both = side_by_side([image, captioned], ["a", "b"])
    assert both.shape[1] == 50 + 4 + captioned.shape[1] and both.shape[0] > captioned.shape[0]
    assert [class_color(i) for i in range(40)] == [class_color(i) for i in range(40)]
    assert len({class_color(i) for i in range(40)}) == 40


# ---- browse ----

def _find(haystack: np.ndarray, needle: np.ndarray) -> tuple[int, int]:
    """Top-left of an exact copy of ``needle`` in ``haystack`` (x = 0 or after a 4-px gap)."""
    h, w = needle.shape[:2]
    for x in range(0, haystack.shape[1] - w + 1):
        for y in range(0, haystack.shape[0] - h + 1):
            if (haystack[y:y + h, x:x + w] == needle).all():
                return y, x
    raise AssertionError("panel not found in the picture")


def test_browse_shards_draws_every_annotation(shards: Path, tmp_path: Path) -> None:
    meta = read_meta(shards)
    result = browse(shards, out=tmp_path / "b", n=5, split="train", seed=1, grid=True, min_side=0)
    assert len(result.pictures) == 5 and result.grid is not None and result.grid.stat().st_size > 0
    samples = _samples(shards, "train")
    for path in result.pictures:
        s = samples[path.stem.split("_", 1)[1]]
        image, ann, mask = s["image"], s["ann"], s["mask"]
        with Image.open(path) as im:
            picture = np.asarray(im.convert("RGB"))
        panels = sample_panels(image, ann, mask, meta=meta, min_side=0)
        assert len(panels) == 2 and _find(picture, panels[0])[1] == 0
        shapes, mask_panel = panels[0][:64, :64], panels[1]
        changed = (shapes != image).any(-1)
        for x1, y1, x2, y2 in np.rint(ann["boxes"]).astype(int).clip(0, 63):
            band = changed[max(y1 - 1, 0):y1 + 2, x1:x2 + 1].any(0)  # the top edge, +-1 px
            assert band.mean() > 0.9, path
            assert changed[y1:y2 + 1, max(x1 - 1, 0):x1 + 2].any(1).mean() > 0.9
        assert changed[mask > 0].mean() > 0.9  # polygons are filled
        colour = class_color(ann["classes"][-1])  # the last instance is drawn last: its points are on top
        for x, y, v in ann["keypoints"][-1]:
            if v == 2:
                assert tuple(shapes[min(int(y), 63), min(int(x), 63)]) == colour
        no_kps = sample_panels(image, {k: v for k, v in ann.items() if k != "keypoints"}, None, meta=meta,
                               min_side=0)[0][:64, :64]
        kp_changed = (shapes != no_kps).any(-1)
        for x, y, _ in (p for inst in ann["keypoints"] for p in inst if p[2] > 0):
            # within 3 px: v=1 points are rings
            assert kp_changed[max(int(y) - 3, 0):int(y) + 4, max(int(x) - 3, 0):int(x) + 4].any()
        mchanged = (mask_panel != image).any(-1)
        assert not mchanged[mask == 0].any() and mchanged[mask > 0].mean() > 0.95
    big = browse(shards, out=tmp_path / "big", n=1, split="val")
    with Image.open(big.pictures[0]) as im:
        assert min(im.size) >= 256  # small images are enlarged for viewing


def test_browse_source_folder_without_shards(tmp_path: Path) -> None:
    src = tmp_path / "src"
    for shade, name in ((60, "cat"), (180, "猫")):
        (src / name).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(np.full((32, 40, 3), shade + 10 * i, np.uint8)).save(src / name / f"{i}.png")
    _cli("browse", str(src), "--format", "imagefolder", "--out", str(tmp_path / "b"), "--n", "10",
         "--val-fraction", "0", "--min-side", "0")
    pictures = sorted((tmp_path / "b").glob("*.png"))
    assert len(pictures) == 4 and not (tmp_path / "b" / "meta.json").exists()
    strips = {}
    for path in pictures:
        with Image.open(path) as im:
            picture = np.asarray(im.convert("RGB"))
        _, name, index = path.stem.split("_")  # NNN_CLASS_IMAGE
        y, x = _find(picture, np.asarray(Image.open(src / name / f"{index}.png").convert("RGB")))
        strip = picture[y + 32:y + 52, :40]
        assert (strip > 128).any(), path  # the caption is drawn under the image
        strips["猫" in path.name] = (strip > 128).sum()
    assert strips[True] != strips[False]
    (tmp_path / "list.txt").write_text("cat/0.png cat\n猫/1.png 猫\nmissing.png cat\n", encoding="utf-8")
    result = browse(src, out=tmp_path / "l", fmt="list", n=10, min_side=0,
                    source_options={"ann": [f"train={tmp_path / 'list.txt'}"], "val_fraction": 0.0})
    assert len(result.pictures) == 2 and result.skipped["label file without image"] == 1
    with pytest.raises(UserError, match="no meta.json"):
        browse(src, out=tmp_path / "x")


# ---- fonts ----

def _render(font: object, char: str) -> np.ndarray:
    im = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(im).text((8, 8), char, font=font, fill=255)
    return np.asarray(im) > 128


def _cjk_font() -> Path:
    path = fonts.font_path_for("猫狗")
    if fonts.missing_characters("猫狗", path=path):
        message = ("no CJK font installed: apt-get install fonts-wqy-microhei (or fonts-noto-cjk), "
                   "or set OBJMTL_FONT=/path/to/font.ttf")
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def test_cjk_class_names_render_legibly(monkeypatch: pytest.MonkeyPatch) -> None:
    dejavu = ImageFont.truetype(str(fonts.default_font_path()), 40)
    assert (_render(dejavu, "猫") == _render(dejavu, TOFU)).all()  # the check below does catch tofu
    path = _cjk_font()
    font = fonts.get_font(40, "猫 cat")
    assert Path(font.path) == path
    cat, dog, tofu = (_render(font, c) for c in ("猫", "狗", TOFU))
    for glyph in (cat, dog):
        assert not (glyph == tofu).all() and 150 < glyph.sum() < 0.6 * 40 * 40
    assert (cat != dog).sum() > 50  # tofu would make both the same box
    image = np.full((128, 128, 3), 90, np.uint8)
    latin = draw_boxes(image, [[10, 60, 120, 120]], [0], class_names=["cat"], font_size=16)
    cjk = draw_boxes(image, [[10, 60, 120, 120]], [0], class_names=["猫 cat"], font_size=16)
    caption = (slice(30, 60), slice(10, 128))
    assert (cjk[caption] != image[caption]).any() and (cjk[caption] != latin[caption]).any()
    monkeypatch.setenv(fonts.ENV_VAR, str(path))
    assert fonts.font_path_for("cat") == path  # $OBJMTL_FONT comes first


@pytest.fixture
def _fresh_font_caches() -> object:
    fonts._choose.cache_clear()
    yield
    fonts._choose.cache_clear()


@pytest.mark.usefixtures("_fresh_font_caches")
def test_missing_font_warns_once_and_falls_back(monkeypatch: pytest.MonkeyPatch,
                                                caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(fonts, "_candidates", lambda: [str(fonts.default_font_path())])
    monkeypatch.setattr(fonts, "_warned", False)
    monkeypatch.delenv(fonts.ENV_VAR, raising=False)
    with caplog.at_level(logging.WARNING, logger="objmtl.viz.fonts"):
        assert fonts.font_path_for("猫 cat") == fonts.default_font_path()
        assert fonts.font_path_for("狗") == fonts.default_font_path()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "U+732B" in warnings[0]
    assert "fonts-noto-cjk" in warnings[0] and "OBJMTL_FONT" in warnings[0]
    assert fonts.missing_characters("猫 cat", path=fonts.default_font_path()) == "猫"


@pytest.mark.usefixtures("_fresh_font_caches")
def test_a_last_resort_font_is_never_chosen(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """matplotlib 3.11 bundles LastResortHE: its cmap covers all of Unicode, its glyphs are placeholders."""
    last_resort = str(tmp_path / "LastResortHE-Regular.ttf")
    cjk = str(tmp_path / "wqy-microhei.ttc")
    installed = [(last_resort, "lastresorthe-regular.ttf last resort high-efficiency")]
    cmaps = {last_resort: frozenset(range(0x110000)), cjk: frozenset(map(ord, "猫狗"))}
    monkeypatch.setattr(fonts, "_installed_fonts", lambda: tuple(installed))
    real_cmap = fonts._cmap
    monkeypatch.setattr(fonts, "_cmap", lambda path: cmaps.get(path) or real_cmap(path))
    monkeypatch.setattr(fonts, "_warned", True)  # the fallback's warning is the test above's
    monkeypatch.delenv(fonts.ENV_VAR, raising=False)
    assert fonts.font_path_for("猫") == fonts.default_font_path()
    fonts._choose.cache_clear()
    installed.append((cjk, "wqy-microhei.ttc wenquanyi micro hei"))
    assert fonts.font_path_for("猫") == Path(cjk)
