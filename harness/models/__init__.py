"""Model adapters, registered by name. Registration imports nothing heavy: each adapter module (and torch,
transformers, ...) is imported only when that model is created (see medbench.registry)."""

from medbench.registry import register_model

register_model(
    "prior",
    "medbench.models.baselines:PriorBaseline",
    "blind baseline: most frequent training answer for the question (captions: most frequent caption)",
)
register_model("yes", "medbench.models.baselines:YesBaseline", 'blind baseline: always answers "yes"')
