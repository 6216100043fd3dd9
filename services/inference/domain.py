"""The inference service's own types, independent of gRPC and of any backend."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field


class Task(enum.Enum):
    EMBEDDING = "embedding"
    GENERATION = "generation"
    RERANK = "rerank"


class Role(enum.Enum):
    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"


class FinishReason(enum.Enum):
    STOP = "stop"
    LENGTH = "length"


@dataclass(frozen=True)
class ModelInfo:
    name: str
    task: Task
    dimensions: int
    max_input_tokens: int
    backend: str
    description: str
    is_default: bool = True


@dataclass(frozen=True)
class Embedding:
    values: Sequence[float]
    token_count: int
    truncated: bool


@dataclass(frozen=True)
class ChatMessage:
    role: Role | None  # None when the client left it unset; the core rejects it
    content: str


@dataclass(frozen=True)
class SamplingOptions:
    """Validated generation settings; None means the model's default."""

    max_tokens: int
    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None


@dataclass(frozen=True)
class Delta:
    """A piece of generated text."""

    text: str


@dataclass(frozen=True)
class Done:
    """The end of a generation."""

    finish_reason: FinishReason
    input_tokens: int
    output_tokens: int


GenerationEvent = Delta | Done


@dataclass
class Generation:
    """A whole answer, gathered from a stream of events."""

    model: str
    text: str = ""
    done: Done | None = field(default=None)
