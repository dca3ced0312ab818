"""The paper's two-stage LoRA/QLoRA training recipe (in progress: typed configs, LoRA placement presets with exact
counts, the label-masking collator; the recipe itself is the next part of the training issue)."""
