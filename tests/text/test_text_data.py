import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from pipeline.modalities.text import sources as T
from pipeline.shards.splits import split_stratified

needs_fortunes = pytest.mark.skipif(shutil.which("dpkg") is None or not Path(T.FORTUNE_DIR, "people").exists(),
                                    reason="Debian fortunes not installed")


def test_text_set_is_split_like_samples():
    s = T.TextSet.from_names([f"entry {i}" for i in range(80)], ["b", "a", "c", "a"] * 20)
    assert s.classes == ["a", "b", "c"] and s.labels[:4].tolist() == [1, 0, 2, 0] and s.labels.dtype == np.int64
    sub = s.take(np.array([3, 0]))
    assert sub.texts == ("entry 3", "entry 0") and sub.labels.tolist() == [0, 1] and sub.classes == s.classes
    train, test = split_stratified(s, 0.25, seed=0)
    assert len(test) == 20 and np.bincount(test.labels).tolist() == [10, 5, 5]
    assert sorted(train.texts + test.texts) == sorted(s.texts)
    assert list(test.texts) == sorted(test.texts, key=s.texts.index)  # source order kept


def test_read_entries(tmp_path):
    f = tmp_path / "cat"
    f.write_text("one\n  two\tthree\n%\n%\n\n  second  entry \n%\nlast\n")
    assert T.read_entries(f) == ["one two three", "second entry", "last"]


@needs_fortunes
def test_english_categories_from_package_list():
    texts, cats = T.fortunes_by_category(min_count=0)
    c = Counter(cats)
    assert len(c) == 40 and c["pratchett"] == 2 and c["people"] > 1000
    assert not any(x.endswith((".dat", ".u8")) for x in c)
    assert all(t and t == " ".join(t.split()) for t in texts)
    assert (texts, cats) == T.fortunes_by_category(min_count=0)  # deterministic


@needs_fortunes
def test_min_count_merges_or_drops():
    _, merged = T.fortunes_by_category(min_count=50)
    _, dropped = T.fortunes_by_category(min_count=50, merge_into=None)
    assert Counter(merged)["other"] == 54 and "pratchett" not in merged
    assert len(merged) - len(dropped) == 54 and min(Counter(dropped).values()) >= 50


@needs_fortunes
def test_languages():
    texts, langs = T.fortunes_by_language()
    c = Counter(langs)
    assert set(c) == {"en", "de", "es", "it"} and all(v > 5000 for v in c.values())
    # no file counted twice (the translated packages add symlinks beside the English files)
    assert c["en"] == len(T.fortunes_by_category(min_count=0)[0])


@needs_fortunes
def test_translated_symlinks_not_double_counted():
    # fortunes-it lists symlinks in the top folder pointing at it/<name>: read each file once
    for pkg in ("fortunes-de", "fortunes-es", "fortunes-it"):
        files = T.package_files(pkg)
        assert len({f.resolve() for f in files}) == len(files)


@needs_fortunes
def test_fortunes_set():
    s = T.fortunes_set(min_count=200)
    texts, cats = T.fortunes_by_category(min_count=200)
    assert s.texts == tuple(texts) and [s.classes[i] for i in s.labels] == cats
    assert len(s.classes) == 23 and "other" in s.classes and s.classes == sorted(s.classes)
