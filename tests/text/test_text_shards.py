"""Text shards: the writer (byte-identical, stratified, tokenizer from the pretrain split
only), the shared readers on a text folder (packed int64 ``[N, 2, L]``), the DataLoader, the
shard stage on text, and the errors for a bad tokenizer or sample."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from pipeline.config import DataParams
from pipeline.modalities.text.params import TextParams
from pipeline.shards.manifest import read_manifest
from pipeline.shards.read import load_split, stream_batches
from pipeline.shards.verify import sha256
from pipeline.data.loader import epoch_batches
from pipeline.shards.splits import split_stratified
from pipeline.shards.splits import make_splits
from pipeline.modalities.text.sources import FORTUNE_DIR, TextSet
from pipeline.modalities.text.codec import read_texts, write_text_shards
from pipeline.modalities.text.tokenizer import SPECIALS, load_tokenizer, train_tokenizer
from pipeline.errors import UserError

REPO = Path(__file__).resolve().parents[2]
MAX_LENGTH = 16
WORDS = {"sea": "wave tide salt ship harbour gull anchor reef", "code": "bug stack heap loop kernel byte patch merge",
         "food": "bread cheese olive soup pepper honey garlic plum"}


def synthetic(n: int = 360, seed: int = 0) -> TextSet:
    """``n`` entries of three classes (class words plus shared ones), some long enough to be
    truncated at ``MAX_LENGTH`` tokens, and some non-ASCII."""
    rng = np.random.default_rng(seed)
    shared = "the a of and is was very never always über café".split()
    texts, names = [], []
    for i in range(n):
        cls = list(WORDS)[i % 3]
        words = WORDS[cls].split() + shared
        texts.append(f"{i}: " + " ".join(rng.choice(words, size=int(rng.integers(2, 30)))))
        names.append(cls)
    return TextSet.from_names(texts, names)


DATA = DataParams(source="fortunes", val_size=50, pretrain_size=None, train_size=200, test_fraction=0.2, shard_size=64)


def text_splits(data: TextSet | None = None, params: DataParams = DATA, seed: int = 0) -> dict:
    train, test = split_stratified(synthetic() if data is None else data, params.test_fraction, seed)
    return make_splits(train, test, params, seed)


def write(out: Path, splits: dict | None = None) -> dict:
    return write_text_shards(splits or text_splits(), out, DATA.shard_size, source={"test": True}, vocab_size=300,
                             max_length=MAX_LENGTH)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("text") / "shards"
    write(out)
    return out


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def tar_samples(path: Path) -> dict[str, dict[str, bytes]]:
    """{key: {extension: bytes}} of one shard."""
    out: dict[str, dict[str, bytes]] = {}
    with tarfile.open(path) as tar:
        for m in tar.getmembers():
            key, ext = m.name.split(".", 1)
            out.setdefault(key, {})[ext] = tar.extractfile(m).read()
    return out


# --- the writer ----------------------------------------------------------------------------


def test_same_input_gives_identical_bytes(folder, tmp_path):
    write(tmp_path / "again")
    assert files(tmp_path / "again") == files(folder)
    assert {"manifest.json", "tokenizer.json", "pretrain-000000.tar", "test-000000.tar"} <= set(files(folder))


def test_identical_bytes_in_another_process(folder, tmp_path):
    """The tokenizer's training must not depend on per-process hashing (Rust HashMap seeds)."""
    code = ("import sys; from pathlib import Path; sys.path.insert(0, sys.argv[2]); "
            "from tests.text.test_text_shards import write; write(Path(sys.argv[1]))")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "other"), str(REPO)], check=True, cwd=REPO, timeout=120)
    assert files(tmp_path / "other") == files(folder)


def test_manifest(folder):
    m = read_manifest(folder)
    splits = text_splits()
    tok = train_tokenizer(list(splits["pretrain"].texts), 300)
    assert m["modality"] == "text" and m["max_length"] == MAX_LENGTH and m["classes"] == ["code", "food", "sea"]
    assert not {"image_size", "channels", "mean", "std"} & set(m)
    # trained on the pretrain split's entries only, and stored as to_str() says
    assert (folder / "tokenizer.json").read_text() == tok.to_str()
    assert m["vocab_size"] == tok.get_vocab_size() <= 300
    assert m["tokenizer"] == {"file": "tokenizer.json", "sha256": sha256(folder / "tokenizer.json")}
    assert list(m["splits"]) == ["pretrain", "train", "val", "test"]
    for name, split in splits.items():
        info = m["splits"][name]
        assert info["count"] == len(split) == sum(info["shard_counts"].values())
        assert info["shards"] == {n: sha256(folder / n) for n in info["shard_counts"]}
        assert max(info["shard_counts"].values()) <= DATA.shard_size


def test_splits_are_stratified_and_pretrain_unlabelled(folder):
    m = read_manifest(folder)
    test, val, train = (m["splits"][s]["per_class"] for s in ("test", "val", "train"))
    assert test == {"code": 24, "food": 24, "sea": 24}  # a stratified 20% of 120 per class
    assert sum(val.values()) == 50 and sum(train.values()) == 200 and min(train.values()) > 50
    assert m["splits"]["pretrain"]["per_class"] is None and m["splits"]["pretrain"]["count"] == 288 - 50
    for name in m["splits"]["pretrain"]["shards"]:
        assert all(set(s) == {"txt"} for s in tar_samples(folder / name).values())
    first = tar_samples(folder / "test-000000.tar")
    assert all(set(s) == {"txt", "cls"} for s in first.values()) and "test_00000000" in first


def test_splits_seeded():
    a, b, c = text_splits(seed=0), text_splits(seed=0), text_splits(seed=1)
    assert all(a[s].texts == b[s].texts for s in a) and a["val"].texts != c["val"].texts
    # pretrain and train come from one pool, disjoint from val and test
    assert set(a["train"].texts) <= set(a["pretrain"].texts)
    assert not set(a["pretrain"].texts) & (set(a["val"].texts) | set(a["test"].texts))


# --- the readers ---------------------------------------------------------------------------


def _decoded(folder: Path, x: torch.Tensor) -> list[str]:
    tok = load_tokenizer(folder)
    return [tok.decode(row[0][row[1] == 1].tolist()[1:-1]).strip() for row in x]


def test_load_split_packed_and_decodes_back(folder):
    splits = text_splits()
    for name in ("pretrain", "val", "test"):
        x, y = load_split(folder, name)
        assert x.dtype == torch.int64 and x.shape == (len(splits[name]), 2, MAX_LENGTH)
        want = torch.from_numpy(splits[name].labels) if name != "pretrain" else torch.full((len(x),), -1)
        assert torch.equal(y, want)
        ids, att = x[:, 0], x[:, 1]
        assert (ids[:, 0] == SPECIALS.index("[CLS]")).all() and (ids[att == 0] == 0).all()
        n = att.sum(1)
        assert (ids[torch.arange(len(x)), n - 1] == SPECIALS.index("[SEP]")).all()
        tok = load_tokenizer(folder)
        truncated = [len(tok.encode(t, add_special_tokens=False).ids) > MAX_LENGTH - 2 for t in splits[name].texts]
        assert torch.equal(n, torch.tensor([MAX_LENGTH if cut else 2 + len(tok.encode(t).ids)
                                            for t, cut in zip(splits[name].texts, truncated)]))
        assert 0 < sum(truncated) < len(x)  # both kinds are checked below
        for text, got, cut in zip(splits[name].texts, _decoded(folder, x), truncated):
            assert text.startswith(got) and len(got) < len(text) if cut else got == text


def test_read_texts(folder):
    splits = text_splits()
    texts, labels = read_texts(folder, "val")
    assert texts == list(splits["val"].texts) and labels.dtype == torch.int64
    assert torch.equal(labels, torch.from_numpy(splits["val"].labels))
    assert read_texts(folder, "pretrain")[1].eq(-1).all()


def test_read_texts_refuses_images(tiny_shards):
    with pytest.raises(UserError, match="image shards, not text"):
        read_texts(tiny_shards, "val")


def test_stream_batches(folder):
    x, y = load_split(folder, "train")
    ordered = list(stream_batches(folder, "train", 32, 1, seed=0, ordered=True, drop_last=False))
    assert torch.equal(torch.cat([b[0] for b in ordered]), x) and torch.equal(torch.cat([b[1] for b in ordered]), y)
    epoch = lambda seed: list(stream_batches(folder, "train", 32, 100, seed))  # noqa: E731
    a, b, c = epoch(3), epoch(3), epoch(4)
    assert len(a) == 200 // 32 and all(bx.shape == (32, 2, MAX_LENGTH) and bx.dtype == torch.int64 for bx, _ in a)
    assert all(torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(a, b))
    assert not torch.equal(a[0][0], c[0][0])
    # every streamed row is a row of the split, with its label
    rows = {tuple(r.flatten().tolist()): int(label) for r, label in zip(x, y)}
    assert all(rows[tuple(r.flatten().tolist())] == int(label) for bx, by in a for r, label in zip(bx, by))


def test_dataloader_workers_give_the_same_batches(folder, capfd):
    load_split(folder, "val")  # the tokenizer's thread pool used in this process before the fork
    run = lambda workers: list(epoch_batches(folder, "train", 32, 100, 5, workers, torch.device("cpu")))  # noqa: E731
    one, two = run(0), run(2)
    assert len(one) == len(two) == 6
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(one, two))
    assert "TOKENIZERS_PARALLELISM" not in capfd.readouterr().err  # no fork warning from the workers


# --- errors --------------------------------------------------------------------------------


@pytest.fixture
def copy(folder, tmp_path) -> Path:
    out = tmp_path / "copy"
    shutil.copytree(folder, out)
    return out


@pytest.mark.parametrize("damage", ["missing", "corrupt"])
def test_bad_tokenizer_is_a_user_error(copy, damage):
    path = copy / "tokenizer.json"
    path.unlink() if damage == "missing" else path.write_text(path.read_text().replace("[MASK]", "[MASQ]"))
    for read in (lambda: load_split(copy, "val"), lambda: next(stream_batches(copy, "val", 8, 1, 0)),
                 lambda: next(epoch_batches(copy, "val", 8, 1, 0, 2, torch.device("cpu"))),
                 lambda: load_tokenizer(copy)):
        with pytest.raises(UserError, match=r"tokenizer.json is missing or differs .*'dvc repro -f text-shard'"):
            read()


def test_undecodable_text_is_a_user_error(copy):
    """A sample whose bytes are not UTF-8 (shard and manifest consistent otherwise)."""
    name = "val-000000.tar"
    with tarfile.open(copy / name) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(copy / name, "w", format=tarfile.USTAR_FORMAT) as tar:
        for m, data in members:
            data = b"\xff\xfe" + data if m.name == "val_00000003.txt" else data
            m.size = len(data)
            tar.addfile(m, io.BytesIO(data))
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["splits"]["val"]["shards"][name] = sha256(copy / name)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UserError, match=r"cannot decode sample 'val_00000003' .*UnicodeDecodeError.*text-shard"):
        load_split(copy, "val")


def test_corrupt_text_shard_names_the_text_stage(copy):
    with open(copy / "test-000000.tar", "r+b") as f:
        f.seek(600)
        f.write(b"X")
    with pytest.raises(UserError, match=r"test-000000.tar is corrupt .*'dvc repro -f text-shard'"):
        load_split(copy, "test")


# --- the shard stage -----------------------------------------------------------------------


def _write_text(p, out: str) -> dict:
    """What the shard stage does for ``data.source: fortunes``: the source's (train, test), then
    the text modality's writer."""
    from pipeline.registry import MODALITIES, SOURCES

    train, test = SOURCES.get("fortunes").load(p)
    return MODALITIES.get("text").write_shards(p, train, test, out)


def test_stage_writes_text_shards(monkeypatch, tmp_path):
    """``data.source: fortunes``: the entries' stratified test split, make_splits, the text
    writer, all inside the stage's all-or-nothing output folder."""
    from pipeline.modalities.text import sources as text_sources

    data = synthetic()
    monkeypatch.setattr(text_sources, "fortunes_by_category",
                        lambda min_count: ([t for t in data.texts], [data.classes[i] for i in data.labels]))
    # what the source and the writer read of the params
    p = SimpleNamespace(seed=0, data=DATA, modality_params={"text": TextParams(vocab_size=300, max_length=MAX_LENGTH)})
    manifest = _write_text(p, str(tmp_path / "out"))
    assert (tmp_path / "out" / "manifest.json").is_file() and not (tmp_path / "out.tmp").exists()
    assert read_manifest(tmp_path / "out") == json.loads(json.dumps(manifest))
    assert manifest["source"]["source"] == "fortunes" and manifest["source"]["text"]["vocab_size"] == 300
    assert not {"image_size", "channels", "workers"} & set(manifest["source"])
    # the same splits as the writer's test fixture: the same bytes
    write(tmp_path / "direct")
    assert {k: v for k, v in files(tmp_path / "out").items() if k != "manifest.json"} == \
        {k: v for k, v in files(tmp_path / "direct").items() if k != "manifest.json"}


@pytest.mark.skipif(shutil.which("dpkg") is None or not Path(FORTUNE_DIR, "people").exists(),
                    reason="Debian fortunes not installed")
def test_stage_on_the_fortunes(tmp_path):
    data = DataParams(source="fortunes", root=FORTUNE_DIR, pretrain_size=None, train_size=None, val_size=1000,
                      test_fraction=0.2, shard_size=5000)
    p = SimpleNamespace(seed=0, data=data, modality_params={"text": TextParams()})  # the text preset's sizes
    m = _write_text(p, str(tmp_path / "out"))
    counts = {s: v["count"] for s, v in m["splits"].items()}
    assert counts == {"pretrain": 10516, "train": 10516, "val": 1000, "test": 2880}
    assert len(m["classes"]) == 23 and "other" in m["classes"] and m["vocab_size"] == p.modality_params['text'].vocab_size
    x, y = load_split(tmp_path / "out", "test")
    assert x.shape == (2880, 2, p.modality_params['text'].max_length) and y.min() >= 0 and len(y.unique()) == 23
