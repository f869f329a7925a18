"""Continuous batching for the real engine: SmolLM2's layers run over a slot KV cache.

transformers' generate() pads a batch to its longest prompt, runs every row until the longest
answer ends, grows its KV cache by concatenation at every step and asks SDPA for one-token
attention, which on CPU costs as much as the matmuls. Here each prompt is prefilled alone (no
padding; the prefix every prompt of a call shares, such as the chat template and the system
prompt, is computed once and copied), decode steps run every live row at once against a
preallocated cache, a finished row leaves at once and a waiting row takes its slot. The model's
own modules (norms, projections, MLP, rotary table) do the work, so custom weights laid over
the base model are used as they are. benchmarks/bench_real_engine.py has the measurements.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

# Per-token KV is 30 layers x 2 x 3 heads x 64 x 2 bytes = 23 KB in bf16 for SmolLM2-135M:
# 16k positions (batch x (prompt + answer)) is ~380 MB, as much as generate() held at batch 32.
KV_POSITIONS_BUDGET = 16384


@dataclass
class DecodeRow:
    """One request in flight: its prompt ids, limits, and what it has generated so far."""

    prompt: list[int]
    max_tokens: int
    stop_sequences: tuple[str, ...] = ()
    tokens: list[int] = field(default_factory=list)
    reason: str | None = None
    length: int = 0  # generated tokens kept, EOS excluded


class SlotCache:
    """Keys and values of `slots` sequences, each filled from position 0 up to its own length."""

    def __init__(self, layers: int, slots: int, kv_heads: int, capacity: int, head_dim: int, dtype: Any):
        shape = (slots, kv_heads, capacity, head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype) for _ in range(layers)]
        self.values = [torch.zeros(shape, dtype=dtype) for _ in range(layers)]
        self.lengths = [0] * slots

    def move(self, src: int, dst: int) -> None:
        """Copy slot `src` into slot `dst` (keeps the live slots contiguous)."""
        n = self.lengths[src]
        for k, v in zip(self.keys, self.values):
            k[dst, :, :n] = k[src, :, :n]
            v[dst, :, :n] = v[src, :, :n]
        self.lengths[dst] = n


class SmolLM2Runner:
    """The forward pass of a transformers Llama model (SmolLM2) over a SlotCache."""

    def __init__(self, model: Any):
        config = model.config
        if config.model_type != "llama" or getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
            raise ValueError(f"the slot runner implements plain Llama layers, not {config.model_type!r}")
        self.model = model
        self.layers = model.model.layers
        self.heads = config.num_attention_heads
        self.kv_heads = config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        self.dtype = next(model.parameters()).dtype
        self._rotary: tuple[Any, Any] | None = None

    def cache(self, slots: int, capacity: int) -> SlotCache:
        return SlotCache(len(self.layers), slots, self.kv_heads, capacity, self.head_dim, self.dtype)

    def _cos_sin(self, positions: Any) -> tuple[Any, Any]:
        """Rotary cos/sin for `positions` (any shape), read from a table built once per length."""
        needed = int(positions.max()) + 1
        if self._rotary is None or self._rotary[0].shape[0] < needed:
            size = max(needed, 2048)
            probe = torch.zeros(1, dtype=self.dtype)
            # The model's own rotary module computes the table, position by position, exactly
            # as it would inside its forward.
            cos, sin = self.model.model.rotary_emb(probe, torch.arange(size)[None])
            self._rotary = (cos[0], sin[0])
        cos, sin = self._rotary
        return cos[positions], sin[positions]

    def prefill(self, cache: SlotCache, slot: int, ids: Sequence[int], start: int = 0) -> Any:
        """Run `ids` at positions start.. of `slot` (positions <start already cached); last logits."""
        n = len(ids)
        end = start + n
        x = self.model.model.embed_tokens(torch.tensor([ids]))
        cos, sin = self._cos_sin(torch.arange(start, end)[None])
        # Queries at start+i see keys 0..start+i. With nothing cached this is plain causal.
        mask = None if start == 0 else torch.ones(n, end, dtype=torch.bool).tril(start)
        for layer, keys, values in zip(self.layers, cache.keys, cache.values):
            attn = layer.self_attn
            h = layer.input_layernorm(x)
            q = attn.q_proj(h).view(1, n, self.heads, self.head_dim).transpose(1, 2)
            k = attn.k_proj(h).view(1, n, self.kv_heads, self.head_dim).transpose(1, 2)
            v = attn.v_proj(h).view(1, n, self.kv_heads, self.head_dim).transpose(1, 2)
            q, k = apply_rotary_pos_emb(q, k, cos, sin)
            keys[slot, :, start:end] = k[0]
            values[slot, :, start:end] = v[0]
            out = torch.nn.functional.scaled_dot_product_attention(
                q, keys[slot : slot + 1, :, :end], values[slot : slot + 1, :, :end], attn_mask=mask,
                is_causal=mask is None, scale=attn.scaling, enable_gqa=True)
            x = x + attn.o_proj(out.transpose(1, 2).reshape(1, n, -1))
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        cache.lengths[slot] = end
        return self.model.lm_head(self.model.model.norm(x[:, -1]))[0]

    def decode(self, cache: SlotCache, tokens: Sequence[int]) -> Any:
        """One step for slots 0..len(tokens)-1: feed each slot its token; (n, vocab) logits."""
        n = len(tokens)
        lengths = torch.tensor(cache.lengths[:n])
        span = int(lengths.max()) + 1
        x = self.model.model.embed_tokens(torch.tensor(tokens))[:, None]  # (n, 1, hidden)
        cos, sin = self._cos_sin(lengths[:, None])
        # Slot i holds lengths[i] keys; its new key goes at lengths[i], the rest of the span is
        # other slots' room and is masked out.
        visible = torch.arange(span)[None] <= lengths[:, None]
        bias = torch.zeros(n, span).masked_fill_(~visible, float("-inf"))[:, None, None]
        rows = torch.arange(n)
        groups = self.heads // self.kv_heads
        for layer, keys, values in zip(self.layers, cache.keys, cache.values):
            attn = layer.self_attn
            h = layer.input_layernorm(x)
            q = attn.q_proj(h).view(n, 1, self.heads, self.head_dim).transpose(1, 2)
            k = attn.k_proj(h).view(n, 1, self.kv_heads, self.head_dim).transpose(1, 2)
            v = attn.v_proj(h).view(n, 1, self.kv_heads, self.head_dim).transpose(1, 2)
            q, k = apply_rotary_pos_emb(q, k, cos, sin)
            keys[rows, :, lengths] = k[:, :, 0]
            values[rows, :, lengths] = v[:, :, 0]
            # Grouped-query attention as two batched matmuls: query head h reads KV head
            # h // groups, as transformers' repeat_kv does. Softmax in fp32, like eager attention.
            # The cache slices are views (no copy): bmm takes their strides as they are.
            pairs = n * self.kv_heads
            k_span = keys[:n, :, :span].reshape(pairs, span, self.head_dim)
            v_span = values[:n, :, :span].reshape(pairs, span, self.head_dim)
            scores = torch.bmm(q.reshape(pairs, groups, self.head_dim), k_span.transpose(1, 2))
            scores = scores.float().view(n, self.kv_heads, groups, span) * attn.scaling
            probs = torch.softmax(scores + bias, dim=-1).to(self.dtype)
            out = torch.bmm(probs.view(pairs, groups, span), v_span)  # (n * kv_heads, groups, head_dim)
            x = x + attn.o_proj(out.reshape(n, 1, -1))
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        for i in range(n):
            cache.lengths[i] += 1
        return self.model.lm_head(self.model.model.norm(x[:, 0]))


def common_prefix(prompts: Sequence[Sequence[int]]) -> int:
    """Length of the token prefix every prompt shares, leaving each at least one token of its own."""
    first = prompts[0]
    n = min(len(p) for p in prompts) - 1
    for p in prompts[1:]:
        i = 0
        while i < n and p[i] == first[i]:
            i += 1
        n = i
    return max(n, 0)


class TokenChooser:
    """Next-token choice as transformers' generate() makes it: repetition penalty on every token
    seen (prompt and answer), then greedy, or temperature and top-p sampling."""

    def __init__(self, *, slots: int, vocab: int, penalty: float, temperature: float, top_p: float,
                 seed: int):
        from transformers.generation.logits_process import TemperatureLogitsWarper, TopPLogitsWarper

        self.penalty = penalty
        self.seen = torch.zeros(slots, vocab, dtype=torch.bool) if penalty != 1.0 else None
        self.warpers: list[Any] = []
        if temperature > 0:
            self.warpers.append(TemperatureLogitsWarper(temperature))
            if 0 < top_p < 1:
                self.warpers.append(TopPLogitsWarper(top_p))
            self.generator = torch.Generator().manual_seed(seed)

    def start(self, slot: int, prompt: Sequence[int]) -> None:
        if self.seen is not None:
            self.seen[slot] = False
            self.seen[slot, torch.tensor(prompt)] = True

    def move(self, src: int, dst: int) -> None:
        if self.seen is not None:
            self.seen[dst] = self.seen[src]

    def choose(self, logits: Any, slots: Any = None) -> list[int]:
        """Tokens from (n, vocab) logits of `slots` (a tensor of slot indices; default 0..n-1)."""
        scores = logits.float()
        n = scores.shape[0]
        if slots is None:
            slots = torch.arange(n)
        if self.seen is not None:
            seen = self.seen[slots]
            # Same rule as RepetitionPenaltyLogitsProcessor: shrink a seen token's logit.
            penalized = torch.where(scores < 0, scores * self.penalty, scores / self.penalty)
            scores = torch.where(seen, penalized, scores)
        if not self.warpers:
            chosen = scores.argmax(dim=-1)
        else:
            for warp in self.warpers:
                scores = warp(None, scores)
            chosen = torch.multinomial(torch.softmax(scores, dim=-1), 1, generator=self.generator)[:, 0]
        if self.seen is not None:
            self.seen[slots, chosen] = True
        return chosen.tolist()


def run_rows(runner: SmolLM2Runner, rows: list[DecodeRow], *, slots: int, chooser_args: dict[str, Any],
             advance: Callable[[DecodeRow, int], None]) -> None:
    """Generate every row to its end, `slots` at a time, a waiting row joining as one ends.

    `advance(row, token)` appends a token to the row and sets row.reason once the row is done."""
    if not rows:
        return
    capacity = max(len(r.prompt) + r.max_tokens for r in rows)
    slots = max(1, min(slots, len(rows), KV_POSITIONS_BUDGET // capacity))
    cache = runner.cache(slots, capacity)
    vocab = runner.model.config.vocab_size
    chooser = TokenChooser(slots=slots, vocab=vocab, **chooser_args)
    shared = common_prefix([r.prompt for r in rows]) if len(rows) > 1 else 0
    prefix: tuple[list[Any], list[Any]] | None = None
    if shared:
        runner.prefill(cache, 0, rows[0].prompt[:shared])
        prefix = ([k[0, :, :shared].clone() for k in cache.keys], [v[0, :, :shared].clone() for v in cache.values])
    # Similar prompt lengths side by side keep the attention span of a decode step tight.
    waiting = sorted(rows, key=lambda r: len(r.prompt), reverse=True)
    live: list[DecodeRow] = []
    while waiting or live:
        while waiting and len(live) < slots:
            row, slot = waiting.pop(), len(live)
            start = 0
            if prefix is not None:
                for layer, (k, v) in enumerate(zip(*prefix)):
                    cache.keys[layer][slot, :, :shared] = k
                    cache.values[layer][slot, :, :shared] = v
                start = shared
            chooser.start(slot, row.prompt)
            logits = runner.prefill(cache, slot, row.prompt[start:], start)
            advance(row, chooser.choose(logits[None], torch.tensor([slot]))[0])
            if row.reason is None:
                live.append(row)
        if not live:
            continue
        tokens = chooser.choose(runner.decode(cache, [r.tokens[-1] for r in live]))
        for row, token in zip(live, tokens):
            advance(row, token)
        _compact(live, cache, chooser)


def _compact(live: list[DecodeRow], cache: SlotCache, chooser: TokenChooser) -> None:
    """Drop finished rows, moving the last live slot into each hole so slots 0..n-1 stay live."""
    i = 0
    while i < len(live):
        if live[i].reason is None:
            i += 1
            continue
        last = len(live) - 1
        if i != last:
            cache.move(last, i)
            chooser.move(last, i)
            live[i] = live[last]
        live.pop()
