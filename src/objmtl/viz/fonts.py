"""Fonts that can draw a given text, so that class names in Chinese or other scripts stay legible.

Pillow's default font and matplotlib's DejaVuSans have no CJK glyphs: a class named ``猫`` would be
drawn as empty boxes ("tofu"). :func:`get_font` picks, per text, the first font whose character map
covers every character:

1. ``$OBJMTL_FONT`` (a .ttf / .otf / .ttc file), when set;
2. DejaVuSans (bundled with matplotlib), for Latin, Greek, Cyrillic, ...;
3. well-known CJK fonts found in the usual font folders or matplotlib's font list (Noto Sans CJK,
   Source Han Sans, WenQuanYi Micro Hei / Zen Hei, Droid Sans Fallback, AR PL UMing / UKai, ...);
4. any other font in those places (for other scripts), except "Last Resort" fonts (matplotlib 3.11 ships
   one): they map every code point to a placeholder glyph, which is tofu under another name.

Coverage is read from each font's ``cmap`` table with fontTools (a matplotlib dependency), once per
font file; the choice is cached per set of characters. When no font covers the text, one warning
names the characters and how to install a font; the font covering most characters (DejaVuSans on
a tie) is used.
"""

from __future__ import annotations

import functools
import logging
import os
import unicodedata
from pathlib import Path

from PIL import ImageFont

__all__ = ["ENV_VAR", "default_font_path", "font_path_for", "get_font", "missing_characters"]

log = logging.getLogger(__name__)

ENV_VAR = "OBJMTL_FONT"
FONT_SUFFIXES = (".ttf", ".otf", ".ttc", ".otc")
FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts", "~/.fonts", "~/.local/share/fonts",
             "/Library/Fonts", "/System/Library/Fonts", "~/Library/Fonts", "C:/Windows/Fonts")
# lower-case fragments of file or family names of fonts with wide CJK coverage, best first
KNOWN_CJK = ("notosanscjk", "noto sans cjk", "notosanssc", "noto sans sc", "sourcehansans", "source han sans",
             "wqy-microhei", "wenquanyi micro hei", "wqy-zenhei", "wenquanyi zen hei", "droidsansfallback",
             "droid sans fallback", "uming", "ar pl uming", "ukai", "ar pl ukai", "notoserifcjk",
             "noto serif cjk", "msyh", "microsoft yahei", "simhei", "simsun", "pingfang", "hiragino",
             "applegothic", "malgun", "nanumgothic", "arialuni", "arial unicode")
# fonts whose every glyph is a placeholder ("this script has no font here"): never a choice
PLACEHOLDER = ("lastresort", "last resort")

_warned = False
_bad_env: set[str] = set()


def default_font_path() -> Path:
    """matplotlib's bundled DejaVuSans: always present, Latin and many other alphabets."""
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"


def _needed(text: str) -> frozenset[int]:
    """Code points that need a glyph (not whitespace, controls or format characters)."""
    return frozenset(ord(c) for c in text if not c.isspace() and unicodedata.category(c)[0] not in "CZ")


@functools.cache
def _cmap(path: str) -> frozenset[int]:
    """The code points a font file (its first face, for a collection) maps to glyphs; empty if unreadable."""
    from fontTools.ttLib import TTFont

    try:
        with TTFont(path, fontNumber=0, lazy=True) as font:
            return frozenset(font.getBestCmap() or ())
    except Exception as e:  # any broken or unsupported file is just not a candidate
        log.debug("font %s unreadable: %s", path, e)
        return frozenset()


@functools.lru_cache(maxsize=1)
def _installed_fonts() -> tuple[tuple[str, str], ...]:
    """(path, lower-case family-or-file name) of the fonts in the usual folders and matplotlib's list."""
    found: dict[str, str] = {}
    for folder in FONT_DIRS:
        root = Path(folder).expanduser()
        if root.is_dir():
            for p in sorted(root.rglob("*")):
                if p.suffix.lower() in FONT_SUFFIXES and p.is_file():
                    found.setdefault(str(p), p.name.lower())
    try:
        from matplotlib import font_manager

        for entry in font_manager.fontManager.ttflist:
            found[entry.fname] = f"{Path(entry.fname).name.lower()} {entry.name.lower()}"
    except Exception as e:  # matplotlib's cache may be unwritable; the folders above still count
        log.debug("matplotlib font list unavailable: %s", e)
    return tuple(found.items())


def _candidates() -> list[str]:
    """Font files to try, in order of preference (after $OBJMTL_FONT)."""
    installed = [(p, name) for p, name in _installed_fonts() if not any(f in name for f in PLACEHOLDER)]
    known: list[str] = []
    for fragment in KNOWN_CJK:
        known += [p for p, name in installed if fragment in name and p not in known]
    rest = [p for p, _ in installed if p not in known]
    return [str(default_font_path()), *known, *rest]


@functools.lru_cache(maxsize=4096)
def _choose(chars: frozenset[int], env: str) -> str:
    if env:
        if not Path(env).is_file():
            if env not in _bad_env:
                _bad_env.add(env)
                log.warning("%s=%s: no such font file; ignored", ENV_VAR, env)
        elif chars <= _cmap(env):
            return env
    candidates = _candidates()
    for path in candidates:
        if chars <= _cmap(path):
            return path
    best = max(candidates, key=lambda p: len(chars & _cmap(p)))  # first on ties: DejaVuSans
    _warn(chars - _cmap(best))
    return best


def _warn(missing: frozenset[int]) -> None:
    global _warned
    shown = ", ".join(f"{chr(c)!r} (U+{c:04X})" for c in sorted(missing)[:12])
    more = f" and {len(missing) - 12} more" if len(missing) > 12 else ""
    if _warned:
        log.debug("no font can draw %s%s", shown, more)
        return
    _warned = True
    log.warning("no installed font can draw %s%s: they will show as empty boxes. Install a font that "
                "covers them (for Chinese, Japanese, Korean: apt-get install fonts-noto-cjk, or "
                "fonts-wqy-microhei) or set %s=/path/to/font.ttf. (Further such characters are not "
                "reported.)", shown, more, ENV_VAR)


def font_path_for(text: str) -> Path:
    """The font file :func:`get_font` uses for ``text`` (see the module docstring for the order).

    Args:
        text: the text to draw; only its set of characters matters.

    Returns:
        The path of a font covering every character of ``text``, or the best partial one.
    """
    chars, env = _needed(text), os.environ.get(ENV_VAR, "")
    if not chars:
        return Path(env) if env and Path(env).is_file() else default_font_path()
    return Path(_choose(chars, env))


def missing_characters(text: str, *, path: str | Path) -> str:
    """The characters of ``text`` that the font at ``path`` has no glyph for (in text order)."""
    cmap, needed = _cmap(str(path)), _needed(text)
    return "".join(dict.fromkeys(c for c in text if ord(c) in needed and ord(c) not in cmap))


@functools.lru_cache(maxsize=256)
def _load(path: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, size=size, index=0)


def get_font(size: int, text: str = "") -> ImageFont.FreeTypeFont:
    """A Pillow font of ``size`` pixels that can draw every character of ``text``.

    Args:
        size: font size in pixels.
        text: the text that will be drawn with it (class names, captions, titles).

    Returns:
        A cached :class:`PIL.ImageFont.FreeTypeFont`.
    """
    return _load(str(font_path_for(text)), max(1, int(size)))
