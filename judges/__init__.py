"""LLM judges (the paper's DeepSeek 1-5 caption judge, an open-answer equivalence judge). Not built yet: see the
project's issue on LLM judges. Importing this package is cheap and safe."""
