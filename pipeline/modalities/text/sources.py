"""Read Debian's fortunes as labelled text: categories (English) and languages (transfer).

Files come from each package's own file list (``dpkg -L``), not from the folder, because the
translated packages install files beside the English ones.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from pipeline.errors import UserError

FORTUNE_DIR = "/usr/share/games/fortunes"
LANG_PACKAGES = {"en": "fortunes", "de": "fortunes-de", "es": "fortunes-es", "it": "fortunes-it"}


def package_files(package: str) -> list[Path]:
    """Sorted fortune data files of a package: regular files under the fortunes tree, without
    the ``.dat`` index / ``.u8`` copies; the English package only its top-level folder. A
    package that is not installed (or no ``dpkg``) is a ``UserError`` naming the apt package."""
    try:
        listed = subprocess.run(["dpkg", "-L", package], capture_output=True, text=True)
    except FileNotFoundError:  # not a Debian system
        raise UserError(f"cannot list the files of the Debian package '{package}' (no dpkg on this system): the text "
                        "corpus comes from Debian's fortunes packages; run on Debian/Ubuntu (or in the container)") from None
    if listed.returncode != 0:
        raise UserError(f"the Debian package '{package}' is not installed (the text corpus reads its files); install it with "
                        f"'sudo apt-get install {package}'")
    files = []
    for line in listed.stdout.splitlines():
        p = Path(line)
        if not line.startswith(FORTUNE_DIR + "/") or p.suffix in (".dat", ".u8") or not p.is_file() or p.is_symlink():
            continue
        if package == "fortunes" and p.parent != Path(FORTUNE_DIR):
            continue
        files.append(p)
    return sorted(files)


def read_entries(path: Path) -> list[str]:
    """Entries of one file in file order: split on lines holding only ``%``, whitespace
    collapsed to single spaces, empty entries dropped. An entry whose bytes are not UTF-8 is
    not text (e.g. a binary file put in the corpus): it is skipped, with a warning naming the
    file and the count (every file of the Debian packages is UTF-8)."""
    # surrogateescape: valid UTF-8 decodes as strict decoding would; each invalid byte becomes
    # one lone surrogate, which marks its entry
    text = path.read_bytes().decode("utf-8", errors="surrogateescape")
    chunks = re.split(r"^%\s*$", text, flags=re.MULTILINE)
    entries = [e for e in (" ".join(c.split()) for c in chunks) if e]
    kept = [e for e in entries if not _NOT_UTF8.search(e)]
    if len(kept) < len(entries):
        print(f"warning: skipped {len(entries) - len(kept)} of {len(entries)} entries of {path}: not UTF-8 text "
              "(a binary or differently encoded file?)", file=sys.stderr)
    return kept


_NOT_UTF8 = re.compile("[\udc80-\udcff]")  # the lone surrogates of surrogateescape: bytes that were not UTF-8


def fortunes_by_category(min_count: int = 50, merge_into: str | None = "other") -> tuple[list[str], list[str]]:
    """English entries and their category (file name), in deterministic (file, entry) order.
    Categories below ``min_count`` are merged into ``merge_into`` (or dropped when ``None``)."""
    texts, cats = [], []
    for f in package_files("fortunes"):
        for e in read_entries(f):
            texts.append(e)
            cats.append(f.name)
    counts = Counter(cats)
    keep_t, keep_c = [], []
    for t, c in zip(texts, cats):
        if counts[c] < min_count:
            if merge_into is None:
                continue
            c = merge_into
        keep_t.append(t)
        keep_c.append(c)
    return keep_t, keep_c


def fortunes_by_language(languages: tuple[str, ...] = ("en", "de", "es", "it")) -> tuple[list[str], list[str]]:
    """Entries labelled by language, for the transfer task, in (language, file, entry) order."""
    texts, langs = [], []
    for lang in languages:
        for f in package_files(LANG_PACKAGES[lang]):
            for e in read_entries(f):
                texts.append(e)
                langs.append(lang)
    return texts, langs


@dataclass(frozen=True)
class TextSet:
    """Labelled text entries, with ``SampleRefs``' interface (``len``, ``take``, ``labels``,
    ``classes``, ``skipped``) so ``split_stratified`` and ``make_splits`` split text as images."""

    texts: tuple[str, ...]
    labels: np.ndarray  # int64 [N]
    classes: list[str]
    skipped: tuple[str, ...] = ()  # always empty: nothing in a text source is skipped

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, idx: np.ndarray) -> "TextSet":
        """The entries at ``idx`` (classes kept)."""
        return replace(self, texts=tuple(self.texts[int(i)] for i in idx), labels=self.labels[idx])

    @classmethod
    def from_names(cls, texts: list[str], names: list[str]) -> "TextSet":
        """Entries labelled by class name; classes sorted by name (as ImageFolder's)."""
        classes = sorted(set(names))
        index = {c: i for i, c in enumerate(classes)}
        return cls(tuple(texts), np.array([index[n] for n in names], dtype=np.int64), classes)


def fortunes_set(min_count: int) -> TextSet:
    """``fortunes_by_category(min_count)`` (small categories merged into "other") as a ``TextSet``."""
    return TextSet.from_names(*fortunes_by_category(min_count=min_count))
