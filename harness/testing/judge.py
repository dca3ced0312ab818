"""A tiny local LLM judge built offline: a 1-layer Llama causal LM whose next token depends only on the current
token, for testing ``--judge hf:<folder>`` (:mod:`medbench.judges.local`).

With the attention and MLP outputs zeroed, the residual stream is the token's (one-hot) embedding, so the
model is a bigram table: ``lm_head`` maps each token to its scripted successor. After the chat template's
``<assistant>`` token it emits ``reply`` (one added token holding the whole text) and then ``</s>``. Real
transformers loading, tokenisation, chat templating, left-padded batched ``generate`` and decoding all run;
only the weights are hand-set, so the output is known in advance.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: The judge's vocabulary besides its special tokens and chat markers: any other word is ``<unk>``.
WORDS = ["hello", "Score:", "Reasoning:", "the", "ground", "truth"]
#: The judge's chat template: each user turn after ``<user>``, then ``<assistant>`` to open the reply.
CHAT_TEMPLATE = (
    "{% for m in messages %}<user> {{ m['content'] }} {% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}"
)


def build_tiny_judge(path: Path, reply: str, *, chat_template: bool = True) -> Path:
    """Save the judge (model and tokenizer) into ``path`` and return it: after ``<assistant>`` (or, without a
    chat template, after any unknown word) it generates ``reply``, then stops. Its generation config asks for
    sampling, as many checkpoints' do: a judge must decode it greedily anyway."""
    import torch
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    vocab = {tok: i for i, tok in enumerate(specials + WORDS)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    tokenizer.add_tokens([AddedToken(t, normalized=False, special=False) for t in ("<user>", "<assistant>")])
    tokenizer.add_tokens([AddedToken(reply, normalized=False, special=False)])
    if chat_template:
        tokenizer.chat_template = CHAT_TEMPLATE
    size = len(tokenizer)
    ids: dict[str, Any] = {tok: tokenizer.convert_tokens_to_ids(tok) for tok in ("<assistant>", "<unk>", "</s>", reply)}

    config = LlamaConfig(
        vocab_size=size,
        hidden_size=max(16, size),
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        hidden = config.hidden_size
        model.model.embed_tokens.weight.zero_()
        model.model.embed_tokens.weight[:, :size] = torch.eye(size)  # token i -> basis vector i
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        successor = {i: ids["</s>"] for i in range(size)}
        successor[ids["<assistant>" if chat_template else "<unk>"]] = ids[reply]
        head = torch.zeros(size, hidden)
        for token, nxt in successor.items():
            head[nxt, token] = 10.0
        model.lm_head.weight.copy_(head)
    model.generation_config.do_sample = True  # a sampling checkpoint: the judge must decode greedily anyway
    model.generation_config.temperature = 0.7
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
