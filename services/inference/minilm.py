"""all-MiniLM-L6-v2 as int8 ONNX on onnxruntime, with the model's own WordPiece tokenizer.

The sentence-transformers pipeline, without torch: WordPiece with [CLS]/[SEP],
truncation at 256 tokens, mean pooling over the attention mask, L2 normalisation.
This class is synchronous and in-process; the service calls it off the event
loop, and the benchmark calls it directly as the baseline.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from services.inference.domain import Embedding
from services.inference.model_files import MINILM_ONNX, MINILM_TOKENIZER

MODEL_NAME = "all-MiniLM-L6-v2"
DIMENSIONS = 384
# sentence-transformers' max_seq_length for this model, special tokens included.
MAX_INPUT_TOKENS = 256


class MiniLMEmbedder:
    """Loads the verified model files; `embed` and `count_tokens` are thread-safe."""

    def __init__(self, threads: int = 2, chunk_size: int = 32) -> None:
        # Imported here so that importing the service does not load onnxruntime.
        import onnxruntime
        from tokenizers import Tokenizer

        model_path = MINILM_ONNX.locate()
        tokenizer_path = MINILM_TOKENIZER.locate()
        self.chunk_size = chunk_size
        self._tokenizer = Tokenizer.from_file(str(tokenizer_path))
        self._tokenizer.enable_truncation(MAX_INPUT_TOKENS)
        # The shipped tokenizer.json pads everything to a fixed 128 tokens; padding to the
        # longest input of each batch makes short texts about 5x faster.
        self._tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        self._counter = Tokenizer.from_file(str(tokenizer_path))
        self._counter.no_truncation()
        self._counter.no_padding()
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Spinning worker threads collapse throughput (measured 4-6x) when other processes
        # share the cores, as they do on a 2-core host running the whole stack.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = onnxruntime.InferenceSession(
            str(model_path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._input_names = {item.name for item in self._session.get_inputs()}
        # One model call at a time: two concurrent runs would fight over the same cores.
        self._lock = threading.Lock()

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """WordPiece tokens per text, without special tokens and without truncation."""
        return [len(encoding.ids) for encoding in self._counter.encode_batch(list(texts), add_special_tokens=False)]

    def embed(self, texts: Sequence[str]) -> list[Embedding]:
        """One L2-normalised 384-dimensional vector per text, in order."""
        if not texts:
            return []
        # Sorting by length before chunking keeps padding (wasted model work) small.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        results: list[Embedding | None] = [None] * len(texts)
        for start in range(0, len(order), self.chunk_size):
            chunk = order[start : start + self.chunk_size]
            for index, embedding in zip(chunk, self._embed_chunk([texts[i] for i in chunk]), strict=True):
                results[index] = embedding
        return [item for item in results if item is not None]

    def _embed_chunk(self, texts: list[str]) -> list[Embedding]:
        encodings = self._tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._input_names:
            feeds["token_type_ids"] = np.array([e.type_ids for e in encodings], dtype=np.int64)
        with self._lock:
            hidden = self._session.run(None, feeds)[0]
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        vectors = pooled / np.clip(norms, 1e-12, None)
        counts = mask.sum(axis=1)
        return [
            Embedding(values=vectors[i].tolist(), token_count=int(counts[i]), truncated=bool(encodings[i].overflowing))
            for i in range(len(texts))
        ]
