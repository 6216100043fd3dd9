"""The inference service (`strata.inference.v1.InferenceService`, default port 50051).

Local models shipped in PyPI packages by default (all-MiniLM-L6-v2 int8 ONNX for
embeddings and rerank, SmolLM2-135M-Instruct GGUF on llama.cpp for generation), or
any OpenAI-compatible HTTP server with STRATA_INFERENCE_BACKEND=openai.

    python -m services.inference
"""
