"""LLM engines behind one interface (`base.Engine`) and the resumable request ledger.

Backends import their heavy dependencies lazily: `local` (llama.cpp, the embedded CPU default),
`openai` (any OpenAI-compatible server, over httpx), `vllm` (in-process, GPU).
"""
