"""The embedding engine in-process on the tiny random encoder: shapes, unit length, mean pooling
checked against a manual computation with the model itself, batching across requests (forward
passes counted), dimensions, base64, token-id inputs, the bounded queue and bad inputs."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from worker.tiny import require_torch

require_torch()

import torch  # noqa: E402
from transformers import AutoModel, AutoTokenizer  # noqa: E402

from proxy.errors import InvalidRequestError, ServiceUnavailableError  # noqa: E402
from proxy.worker.embed_protocol import decode_embedding_params, from_base64  # noqa: E402
from proxy.worker.embedder import EmbeddingEngine, EmbeddingRequest, Vector  # noqa: E402
from proxy.worker.encoder import LoadedEncoder, load_encoder  # noqa: E402

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "hello",
    "Batching serves many requests together so the hardware stays busy.",
]


@pytest.fixture(scope="module")
def loaded(tiny_encoder: Path) -> LoadedEncoder:
    return load_encoder(str(tiny_encoder), "cpu")


@pytest.fixture
def engine(loaded: LoadedEncoder) -> Iterator[EmbeddingEngine]:
    engine = EmbeddingEngine(loaded, max_batch_size=8, max_queue=8)
    engine.start()
    yield engine
    engine.stop()


def submit(engine: EmbeddingEngine, **fields: Any) -> EmbeddingRequest:
    params, inputs = decode_embedding_params(json.dumps({"model": "enc", **fields}).encode())
    return engine.submit(params, inputs)


async def embed(engine: EmbeddingEngine, **fields: Any) -> list[Vector]:
    return await asyncio.wait_for(submit(engine, **fields).done, 30)


def manual_embeddings(folder: Path, texts: list[str]) -> torch.Tensor:
    """Mean pooling written out by hand, one text at a time (no padding at all)."""
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModel.from_pretrained(str(folder)).eval()
    vectors = []
    with torch.inference_mode():
        for text in texts:
            ids = tokenizer(text, return_tensors="pt")
            hidden = model(**ids).last_hidden_state[0]
            mean = hidden.sum(dim=0) / hidden.shape[0]
            vectors.append(mean / mean.norm())
    return torch.stack(vectors)


def norm(vector: list[float]) -> float:
    return math.sqrt(sum(v * v for v in vector))


async def test_vectors_are_unit_length_mean_pools_of_the_model(
    engine: EmbeddingEngine, tiny_encoder: Path
) -> None:
    vectors = await embed(engine, input=TEXTS)
    assert len(vectors) == len(TEXTS)
    assert all(isinstance(v, list) and len(v) == 32 for v in vectors)
    assert all(norm(v) == pytest.approx(1.0, abs=1e-5) for v in vectors)  # type: ignore[arg-type]
    expected = manual_embeddings(tiny_encoder, TEXTS)
    assert torch.allclose(torch.tensor(vectors), expected, atol=1e-5)  # padding changed nothing


async def test_usage_counts_the_tokens_with_special_tokens(
    engine: EmbeddingEngine, tiny_encoder: Path
) -> None:
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_encoder))
    request = submit(engine, input=TEXTS)
    await asyncio.wait_for(request.done, 30)
    assert request.prompt_tokens == sum(len(tokenizer(t)["input_ids"]) for t in TEXTS)


async def test_token_ids_embed_like_the_text_they_encode(
    engine: EmbeddingEngine, tiny_encoder: Path
) -> None:
    ids = AutoTokenizer.from_pretrained(str(tiny_encoder))(TEXTS[0])["input_ids"]
    by_text = await embed(engine, input=TEXTS[0])
    one_row = await embed(engine, input=ids)
    rows = await embed(engine, input=[ids, ids[:3]])
    assert one_row[0] == pytest.approx(by_text[0], abs=1e-6)
    assert rows[0] == pytest.approx(by_text[0], abs=1e-6) and len(rows) == 2


async def test_dimensions_cut_then_normalise_again(engine: EmbeddingEngine) -> None:
    [full] = await embed(engine, input=TEXTS[0])
    [cut] = await embed(engine, input=TEXTS[0], dimensions=8)
    assert isinstance(full, list) and isinstance(cut, list) and len(cut) == 8
    expected = torch.nn.functional.normalize(torch.tensor(full[:8]), dim=0)
    assert cut == pytest.approx(expected.tolist(), abs=1e-6)
    assert norm(cut) == pytest.approx(1.0, abs=1e-5)


async def test_base64_decodes_to_the_float_vectors(engine: EmbeddingEngine) -> None:
    floats = await embed(engine, input=TEXTS[:2])
    encoded = await embed(engine, input=TEXTS[:2], encoding_format="base64")
    assert all(isinstance(e, str) for e in encoded)
    decoded = [from_base64(e) for e in encoded]  # type: ignore[arg-type]
    assert decoded[0] == pytest.approx(floats[0], abs=1e-7)
    assert decoded[1] == pytest.approx(floats[1], abs=1e-7)


async def test_concurrent_requests_share_forward_passes(engine: EmbeddingEngine) -> None:
    before = sum(engine.stats.batch_sizes.values())
    requests = [submit(engine, input=[f"request {i}", TEXTS[i % 3]]) for i in range(8)]
    results = await asyncio.wait_for(asyncio.gather(*(r.done for r in requests)), 30)
    passes = sum(engine.stats.batch_sizes.values()) - before
    assert [len(r) for r in results] == [2] * 8
    assert passes <= 4, engine.stats.batch_sizes  # 16 inputs, batches of up to 8 texts
    assert max(engine.stats.batch_sizes) == 8
    alone = await embed(engine, input=["request 3", TEXTS[0]])
    assert results[3][0] == pytest.approx(alone[0], abs=1e-5)  # batching changes no result
    assert results[3][1] == pytest.approx(alone[1], abs=1e-5)


async def test_a_full_worker_refuses_with_503(loaded: LoadedEncoder) -> None:
    engine = EmbeddingEngine(loaded, max_batch_size=1, max_queue=1)  # not started: all wait
    submit(engine, input="a")
    submit(engine, input="b")
    with pytest.raises(ServiceUnavailableError) as raised:
        submit(engine, input="c")
    assert raised.value.code == "queue_full" and raised.value.retry_after is not None
    assert engine.stats.rejected == 1


async def test_a_cancelled_request_frees_its_slot_and_is_skipped(loaded: LoadedEncoder) -> None:
    engine = EmbeddingEngine(loaded, max_batch_size=4, max_queue=0)
    request = submit(engine, input=["a", "b"])
    engine.cancel(request)
    await asyncio.sleep(0)
    assert engine.in_flight == 0
    engine.start()
    try:
        await embed(engine, input="c")
    finally:
        engine.stop()
    assert engine.stats.inputs == 1  # the cancelled request's two inputs never ran


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"input": "x", "dimensions": 33}, "dimensions"),
        ({"input": [[1, 2], [100000]]}, "input[1]"),
        ({"input": "word " * 600}, "input"),
    ],
)
async def test_inputs_the_model_cannot_take_are_a_400(
    engine: EmbeddingEngine, fields: dict[str, Any], param: str
) -> None:
    with pytest.raises(InvalidRequestError) as raised:
        submit(engine, **fields)
    assert raised.value.param == param
    assert engine.in_flight == 0
