"""The paper's two-stage LoRA/QLoRA training recipe. Not built yet: see the project's training issue."""
