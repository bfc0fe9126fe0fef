"""Small random models built locally: no download, for tests, benchmarks and smoke tests.

A chat model: a byte-level BPE tokenizer trained on a few sentences, a chatml template, and a
Llama architecture with random weights. With `--encoder`, an embedding model: a WordPiece
tokenizer (BERT's [CLS] ... [SEP] framing) and a BERT encoder with random weights. Both are
saved with `save_pretrained`, so the worker loads them like any other model folder:

    python -m proxy.worker.randmodel /tmp/llm-proxy-tiny --hidden 64 --layers 2
    llm-proxy worker --model /tmp/llm-proxy-tiny
    python -m proxy.worker.randmodel /tmp/llm-proxy-tiny-encoder --encoder
    llm-proxy worker --model /tmp/llm-proxy-tiny-encoder --task embed
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
BERT_SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "A proxy forwards requests from clients to upstream servers and relays their answers.",
    "Transformers turn a sequence of tokens into the probability of the next token.",
    "Say hello to the test suite, then count from one to ten: one two three four five.",
    "Streaming sends each piece of the answer as soon as it is ready.",
    "Batching serves many requests together so the hardware stays busy.",
    "system user assistant: how are you today? I am fine, thank you very much!",
]


def build_tokenizer(folder: Path, vocab_size: int = 512) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(SENTENCES * 4, trainer=trainer)
    wrapped = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call, unused-ignore]
        tokenizer_object=tokenizer,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
    )
    wrapped.chat_template = CHATML_TEMPLATE
    wrapped.save_pretrained(str(folder))


def build_random_model(
    folder: str | Path,
    *,
    hidden_size: int = 64,
    layers: int = 2,
    heads: int = 4,
    vocab_size: int = 512,
    max_positions: int = 2048,
    seed: int = 0,
) -> Path:
    """Write a tokenizer and a random-weight Llama model to `folder`; return the folder."""
    import torch
    from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    build_tokenizer(path, vocab_size)
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 4,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=max_positions,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(  # type: ignore[no-untyped-call, unused-ignore]
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    model.save_pretrained(str(path))
    return path


def build_wordpiece_tokenizer(folder: Path, vocab_size: int = 512) -> None:
    """A BERT-style tokenizer: lower-cased WordPiece, [CLS] text [SEP], [PAD] = 0."""
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=BERT_SPECIAL_TOKENS, show_progress=False
    )
    tokenizer.train_from_iterator(SENTENCES * 4, trainer=trainer)
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    wrapped = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call, unused-ignore]
        tokenizer_object=tokenizer,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=512,
    )
    wrapped.save_pretrained(str(folder))


def build_random_encoder(
    folder: str | Path,
    *,
    hidden_size: int = 32,
    layers: int = 2,
    heads: int = 4,
    vocab_size: int = 512,
    max_positions: int = 512,
    seed: int = 0,
) -> Path:
    """Write a WordPiece tokenizer and a random-weight BERT encoder to `folder`."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    build_wordpiece_tokenizer(path, vocab_size)
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 4,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        max_position_embeddings=max_positions,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    BertModel(config).save_pretrained(str(path))
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build a small random model folder.")
    parser.add_argument("folder")
    parser.add_argument("--encoder", action="store_true", help="a BERT encoder (--task embed)")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    build = build_random_encoder if args.encoder else build_random_model
    path = build(
        args.folder, hidden_size=args.hidden, layers=args.layers, heads=args.heads, seed=args.seed
    )
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
