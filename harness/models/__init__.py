"""Model adapters, registered by name. Registration imports nothing heavy: each adapter module (and torch,
transformers, ...) is imported only when that model is created (see medbench.registry). Third-party adapters
register through the ``medbench.models`` entry-point group."""

from medbench.registry import register_model

register_model("llama32", "medbench.models.hf:llama32", "meta-llama/Llama-3.2-11B-Vision-Instruct, zero-shot")
register_model(
    "llama32med",
    "medbench.models.hf:llama32med",
    "LLaMA 3.2 Vision + a LoRA adapter (--model-arg llama32med.adapter=PATH or MEDBENCH_LLAMA32MED_ADAPTER)",
)
register_model("qwen25vl", "medbench.models.hf:qwen25vl", "Qwen/Qwen2.5-VL-7B-Instruct")
register_model("gemma3", "medbench.models.hf:gemma3", "google/gemma-3-4b-it")
register_model("llava", "medbench.models.hf:llava", "llava-hf/llava-1.5-7b-hf")
register_model(
    "hf:",
    "medbench.models.hf:from_spec",
    "any image-text-to-text model: hf:<hub-id-or-path>[+lora:<adapter-path>] (family from its config)",
    prefix=True,
)
register_model(
    "openai:",
    "medbench.models.openai_compat:OpenAICompatModel",
    "any OpenAI-compatible endpoint (vLLM, SGLang, hosted): openai:<model>, --model-arg <name>.base_url=URL",
    prefix=True,
)
register_model(
    "prior",
    "medbench.models.baselines:PriorBaseline",
    "blind baseline: most frequent training answer for the question (captions: most frequent caption)",
)
register_model("yes", "medbench.models.baselines:YesBaseline", 'blind baseline: always answers "yes"')
