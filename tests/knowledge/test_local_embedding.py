"""LocalEmbedding on a real (tiny, randomly initialised) BERT encoder and tokenizer built offline in the test."""

from __future__ import annotations

import json
import math
from pathlib import Path

import anyio
import anyio.to_thread
import pytest

from agentscope.knowledge import KnowledgeBase, KnowledgeError, LocalEmbedding

pytest.importorskip("torch", reason="pip install -e '.[rl]'")
pytest.importorskip("transformers", reason="pip install -e '.[rl]'")

CORPUS = [
    "The penguin colony on Bouvet Island doubled.",
    "Refunds are paid within fourteen days of a return.",
    "On Debian, install the package with apt and start the daemon.",
]


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder like a sentence-transformers model's: a 2-layer BERT with a word-level tokenizer."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-encoder")
    words = sorted({w for text in CORPUS for w in text.lower().replace(".", " ").replace(",", " ").split()})
    vocab = {"[PAD]": 0, "[UNK]": 1, **{w: i + 2 for i, w in enumerate(words)}}
    raw = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=raw, pad_token="[PAD]", unk_token="[UNK]").save_pretrained(
        folder
    )
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
    )
    BertModel(config).save_pretrained(folder)
    return folder


async def test_vectors_are_deterministic_mean_pooled_and_padding_free(tiny_encoder: Path) -> None:
    model = LocalEmbedding(tiny_encoder, batch_size=2)
    together = await model.embed(CORPUS)
    alone = [(await model.embed([text]))[0] for text in CORPUS]
    assert [len(v) for v in together] == [32, 32, 32]
    # Padding a text to the longest of its batch changes nothing: the mask keeps pad tokens out of the mean.
    for a, b in zip(together, alone, strict=True):
        assert max(abs(x - y) for x, y in zip(a, b, strict=True)) < 1e-4
    assert together[0] != together[1]


async def test_knowledge_base_searches_with_the_local_model(tiny_encoder: Path, tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    for i, text in enumerate(CORPUS):
        (folder / f"doc{i}.txt").write_text(text, encoding="utf-8")
    async with KnowledgeBase(tmp_path / "kb.db", embedder=LocalEmbedding(tiny_encoder)) as kb:
        await kb.add_folder(folder)
        [hit] = await kb.search(CORPUS[1], mode="vector", limit=1)
    assert hit.source == "doc1.txt"
    assert math.isclose(hit.score, 1.0, abs_tol=1e-4)  # the query is the chunk itself


async def test_models_in_same_named_folders_are_told_apart(tiny_encoder: Path, tmp_path: Path) -> None:
    import shutil

    other = tmp_path / "elsewhere" / tiny_encoder.name
    shutil.copytree(tiny_encoder, other)
    config = json.loads((other / "config.json").read_text(encoding="utf-8"))
    (other / "config.json").write_text(json.dumps({**config, "layer_norm_eps": 1e-6}), encoding="utf-8")
    first, again, second = LocalEmbedding(tiny_encoder), LocalEmbedding(tiny_encoder), LocalEmbedding(other)
    names = [await anyio.to_thread.run_sync(lambda m=m: m.name) for m in (first, again, second)]
    assert names[0] == names[1]  # the same model keeps its name
    assert names[0] != names[2]
    assert all(n.startswith(f"{tiny_encoder.name}-") for n in names)
    async with KnowledgeBase(tmp_path / "kb.db", embedder=first) as kb:
        await kb.add_file(_doc(tmp_path))
    with pytest.raises(KnowledgeError, match=r"holds vectors of embedding model"):
        async with KnowledgeBase(tmp_path / "kb.db", embedder=second) as kb:
            await kb.search("penguin", mode="vector")
    async with KnowledgeBase(tmp_path / "kb.db", embedder=LocalEmbedding(other, name=names[0])) as kb:
        assert await kb.search("penguin", mode="vector")  # a name given by hand is taken as it is


def _doc(folder: Path) -> Path:
    path = folder / "doc.txt"
    path.write_text(CORPUS[0], encoding="utf-8")
    return path


async def test_a_folder_without_a_model_is_named(tmp_path: Path) -> None:
    with pytest.raises(KnowledgeError, match=r"no model in .*empty.*: it has no config\.json"):
        await LocalEmbedding(tmp_path / "empty").embed(["x"])
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        LocalEmbedding(tmp_path, batch_size=0)
