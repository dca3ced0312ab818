"""LLM judges: the paper's Appendix D caption judge (1-5) and an open-answer equivalence judge, through any
OpenAI-compatible endpoint (:mod:`.client`) or a local transformers model (:mod:`.local`), with a SQLite judgement
cache (:mod:`.cache`) and failures recorded, never scored. See docs/judges.md. Importing this package is cheap."""
