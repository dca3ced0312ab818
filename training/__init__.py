"""The paper's two-stage LoRA/QLoRA training recipe: typed configs (:mod:`.config`), training data from the task
plugins (:mod:`.data`), LoRA placement presets (:mod:`.presets`), the label-masking collator (:mod:`.collate`), the
recipe with checkpoints and resume (:mod:`.recipe`, :mod:`.checkpoint`) and its run card (:mod:`.runcard`)."""
