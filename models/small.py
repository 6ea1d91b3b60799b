"""Small models: `mlp` (harness overhead), `tiny-cnn` (fast engine tests), `lstm` classifier."""

from __future__ import annotations

import torch
from torch import nn

from inferbench.models.base import InputSpec, ModelDef


class TinyCNN(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
        )
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.features(x), 1))


class LSTMClassifier(nn.Module):
    def __init__(self, vocab: int, embed: int, hidden: int, num_classes: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, embed)
        self.lstm = nn.LSTM(embed, hidden, num_layers=2, batch_first=True)
        self.fc = nn.Linear(hidden, num_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(self.embedding(tokens))
        return self.fc(out[:, -1])


def build_mlp(seed: int = 0) -> ModelDef:
    torch.manual_seed(seed)
    module = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10)).eval()
    return ModelDef(
        name="mlp",
        module=module,
        inputs=(InputSpec("input", (64,)),),
        output_names=("logits",),
        task="classification",
        seed=seed,
    )


def build_tiny_cnn(seed: int = 0) -> ModelDef:
    torch.manual_seed(seed)
    return ModelDef(
        name="tiny-cnn",
        module=TinyCNN().eval(),
        inputs=(InputSpec("input", (3, 32, 32)),),
        output_names=("logits",),
        task="classification",
        seed=seed,
    )


LSTM_VOCAB, LSTM_SEQ = 10_000, 64


def build_lstm(seed: int = 0) -> ModelDef:
    torch.manual_seed(seed)
    return ModelDef(
        name="lstm",
        module=LSTMClassifier(LSTM_VOCAB, 256, 512, 10).eval(),
        inputs=(InputSpec("tokens", (LSTM_SEQ,), dtype="int64", high=LSTM_VOCAB),),
        output_names=("logits",),
        task="classification",
        seed=seed,
    )
