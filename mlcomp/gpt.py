"""A small GPT over bytes: causal self-attention, pre-norm blocks, a KV cache.

The model of chapter 9. Its alphabet is the 256 byte values, so it can
assign a probability to any file, not only to Shakespeare: that is what
lets it serve as the model of an arithmetic coder (:mod:`mlcomp.coding`).
The architecture is the one of GPT-2 (Radford et al. 2019) at a small
scale: token and position embeddings, ``n_layer`` blocks of
``x + attn(ln(x))`` then ``x + mlp(ln(x))``, a final layer norm and a
linear head whose weight is the token embedding's (weight tying).

Shapes in comments: B batch, T time (positions), C channels (``n_embd``),
H heads, D = C / H per head, V vocabulary (256).

>>> net = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=16))
>>> x = torch.zeros(3, 16, dtype=torch.long)
>>> logits, loss = net(x, targets=x)
>>> logits.shape, loss.dim()
(torch.Size([3, 16, 256]), 0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

__all__ = [
    "GPTConfig",
    "GPT",
    "KVCache",
    "generate",
    "encode_text",
    "decode_text",
    "bits_per_byte",
]


@dataclass(frozen=True)
class GPTConfig:
    """The shape of a :class:`GPT`.

    >>> GPTConfig().n_embd // GPTConfig().n_head
    32
    """

    vocab_size: int = 256
    block_size: int = 256  # longest context, in bytes
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(
                    f"{name} must be a positive int, got {getattr(self, name)!r}"
                )
        if self.n_embd % self.n_head:
            raise ValueError(
                f"n_embd ({self.n_embd}) must be a multiple of n_head ({self.n_head})"
            )
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


class CausalSelfAttention(nn.Module):
    """Multi-head attention in which position t sees positions 0..t only."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head = config.n_head
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd)
        self.proj = nn.Linear(config.n_embd, config.n_embd)
        self.dropout = config.dropout

    def forward(
        self,
        x: torch.Tensor,
        cache: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """``x`` (B, T, C) -> (B, T, C), and the keys and values to cache.

        With ``cache`` (keys and values (B, H, S, D) of S earlier positions),
        the T new positions attend to those and to each other, causally.
        """
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)  # each (B, T, C)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
                   for t in (q, k, v))  # (B, H, T, D)  # fmt: skip
        if cache is not None and len(cache) == 3:  # a slot of a KVCache
            keys, values, start = cache
            keys[:, :, start : start + T] = k  # written in place
            values[:, :, start : start + T] = v
            k, v = keys[:, :, : start + T], values[:, :, : start + T]
        elif cache is not None:
            k = torch.cat([cache[0], k], dim=2)  # (B, H, S + T, D)
            v = torch.cat([cache[1], v], dim=2)
        S = k.shape[2] - T  # positions before the new ones
        if S == 0:
            mask = None
            causal = True
        elif T == 1:  # one new position sees every key: no mask at all
            mask = None
            causal = False
        else:  # new position i (absolute S + i) sees keys 0..S + i
            mask = torch.ones(T, S + T, dtype=torch.bool, device=x.device).tril(S)
            causal = False
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=causal,
            dropout_p=self.dropout if self.training else 0.0,
        )  # (B, H, T, D)  # fmt: skip
        y = y.transpose(1, 2).reshape(B, T, C)  # heads side by side again
        return self.proj(y), (k, v)


class MLP(nn.Module):
    """Position-wise feed-forward: C -> 4C -> GELU -> C."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.fc = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.proj = nn.Linear(4 * config.n_embd, config.n_embd)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.proj(F.gelu(self.fc(x))))  # (B, T, C)


class Block(nn.Module):
    """Pre-norm Transformer block: x + attn(ln1(x)), then + mlp(ln2(x))."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(config.n_embd)
        self.attn = CausalSelfAttention(config)
        self.ln2 = nn.LayerNorm(config.n_embd)
        self.mlp = MLP(config)

    def forward(self, x, cache=None):
        a, new_cache = self.attn(self.ln1(x), cache)
        x = x + a
        return x + self.mlp(self.ln2(x)), new_cache


class GPT(nn.Module):
    """A decoder-only Transformer language model over bytes.

    ``forward(idx, targets=None)`` returns the logits (B, T, V) of the next
    byte at every position and, with ``targets``, the mean cross-entropy in
    nats. :meth:`generate` samples with a KV cache.

    >>> _ = torch.manual_seed(0)
    >>> net = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=8))
    >>> net.generate(encode_text("ab")[None], 5, temperature=0).shape
    torch.Size([1, 7])
    """

    def __init__(self, config: GPTConfig | None = None):
        super().__init__()
        self.config = config = config or GPTConfig()
        self.tok_emb = nn.Embedding(config.vocab_size, config.n_embd)
        self.pos_emb = nn.Embedding(config.block_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList([Block(config) for _ in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(config.n_embd)
        self.head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.head.weight = self.tok_emb.weight  # weight tying
        # the tied matrix is stored once, as tok_emb.weight (safetensors
        # refuses shared tensors, and a file should not hold it twice)
        self.register_state_dict_post_hook(_drop_tied)
        self.register_load_state_dict_pre_hook(_restore_tied)
        self.apply(self._init)
        for name, p in self.named_parameters():  # GPT-2: scale the residual writes
            if name.endswith("proj.weight"):
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, 0.0, 0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        cache: list | None = None,
    ):
        """Logits (and the loss with ``targets``); with ``cache``, also the new cache.

        ``idx`` (B, T) holds byte values. ``cache`` (a list with one
        (keys, values) per block, or ``[]`` to start one) makes the call
        incremental: ``idx`` continues the cached positions.
        """
        B, T = idx.shape
        if isinstance(cache, KVCache):
            return self._forward_static(idx, cache)
        start = 0 if not cache else cache[0][0].shape[2]
        x = self._embed(idx, start)  # (B, T, C)
        new_cache = []
        for i, block in enumerate(self.blocks):
            x, kv = block(x, cache[i] if cache else None)
            new_cache.append(kv)
        logits = self.head(self.ln_f(x))  # (B, T, V)
        if cache is not None:
            return logits, new_cache
        if targets is None:
            return logits, None
        loss = F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)
        )
        return logits, loss

    def _embed(self, idx: torch.Tensor, start: int) -> torch.Tensor:
        """Byte and position embeddings of ``idx`` (B, T) at positions ``start..``."""
        T = idx.shape[1]
        if start + T > self.config.block_size:
            raise ValueError(
                f"{start + T} positions exceed the context of {self.config.block_size}"
            )
        pos = torch.arange(start, start + T, device=idx.device)
        return self.drop(self.tok_emb(idx) + self.pos_emb(pos))

    def _forward_static(self, idx, cache: KVCache):
        B, T = idx.shape
        start = cache.length
        if cache.buffer.shape[2] != B:
            raise ValueError(f"the cache holds {cache.buffer.shape[2]} rows, not {B}")
        x = self._embed(idx, start)  # (B, T, C)
        for i, block in enumerate(self.blocks):
            x, _ = block(x, (cache.buffer[i, 0], cache.buffer[i, 1], start))
        cache.length = start + T
        return self.head(self.ln_f(x)), cache

    def generate(
        self,
        prompt: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
        use_cache: bool = True,
    ) -> torch.Tensor:
        """Continue ``prompt`` (B, T) by ``max_new_tokens`` bytes: :func:`generate`."""
        return generate(
            self, prompt, max_new_tokens, temperature, top_k, generator, use_cache
        )


class KVCache:
    """Keys and values of every block, preallocated: ``buffer`` (L, 2, B, H, T, D).

    The list cache of :meth:`GPT.forward` grows by concatenation, copying
    every earlier key at every step; this one is written in place, so a
    step costs only its own position. ``model(idx, cache=KVCache(...))``
    fills positions ``length .. length + T`` and returns the same object.

    >>> net = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=8, block_size=4))
    >>> cache = KVCache(net.config, batch=3)
    >>> logits, cache = net(torch.zeros(3, 2, dtype=torch.long), cache=cache)
    >>> cache.length, tuple(cache.buffer.shape)
    (2, (1, 2, 3, 2, 4, 4))
    """

    def __init__(self, config: GPTConfig, batch: int):
        head = config.n_embd // config.n_head
        shape = (config.n_layer, 2, batch, config.n_head, config.block_size, head)
        self.buffer = torch.zeros(shape)
        self.length = 0


def _drop_tied(module, state_dict, prefix, local_metadata) -> None:
    state_dict.pop(prefix + "head.weight", None)


def _restore_tied(module, state_dict, prefix, *args) -> None:
    key = prefix + "tok_emb.weight"
    if key in state_dict:
        state_dict.setdefault(prefix + "head.weight", state_dict[key])


@torch.no_grad()
def generate(
    model,
    prompt: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
) -> torch.Tensor:
    """Continue ``prompt`` (B, T) by ``max_new_tokens`` bytes sampled from ``model``.

    ``model`` is a :class:`GPT` or anything with its call signature and
    ``config`` (:class:`mlcomp.lm.OnnxLM`).

    >>> _ = torch.manual_seed(0)
    >>> net = GPT(GPTConfig(n_layer=1, n_head=1, n_embd=8, block_size=8))
    >>> generate(net, encode_text("a")[None], 3, temperature=0).shape
    torch.Size([1, 4])

    ``temperature=0`` picks the most likely byte (greedy). With
    ``use_cache`` each step feeds only the new byte and reuses the keys
    and values of the earlier ones; without, it recomputes the whole
    context (the two give the same bytes). When the context is full,
    the oldest positions are dropped (and the cache rebuilt).
    """
    if max_new_tokens < 0 or temperature < 0:
        raise ValueError("max_new_tokens and temperature must be >= 0")
    was_training = model.training
    model.eval()
    out, cache = prompt, None
    for _ in range(max_new_tokens):
        window = out[:, -model.config.block_size :]
        if use_cache and cache is not None and out.shape[1] <= model.config.block_size:
            logits, cache = model(out[:, -1:], cache=cache)
        elif use_cache:
            logits, cache = model(window, cache=[])
        else:
            logits, _ = model(window)
        logits = logits[:, -1]  # (B, V)
        if temperature == 0:
            nxt = logits.argmax(dim=-1, keepdim=True)
        else:
            logits = logits / temperature
            if top_k is not None:
                kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, -1:]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            probs = torch.softmax(logits, dim=-1)
            nxt = torch.multinomial(probs, 1, generator=generator)
        out = torch.cat([out, nxt], dim=1)
        if out.shape[1] > model.config.block_size:
            cache = None  # the window slides: positions change, rebuild
    model.train(was_training)
    return out


def encode_text(text: str | bytes) -> torch.Tensor:
    """Bytes of ``text`` (UTF-8 for a str) as a 1-D long tensor.

    >>> encode_text("Hé").tolist()
    [72, 195, 169]
    """
    data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).long()


def decode_text(idx: torch.Tensor) -> str:
    """The inverse of :func:`encode_text` (invalid UTF-8 replaced).

    >>> decode_text(encode_text("Hé"))
    'Hé'
    """
    return bytes(idx.to(torch.uint8).tolist()).decode("utf-8", errors="replace")


@torch.no_grad()
def bits_per_byte(model: GPT, data: torch.Tensor, batch_size: int = 32) -> float:
    """Mean code length of ``data`` (1-D bytes) under ``model``, in bits per byte.

    The text is cut into windows of ``block_size + 1`` bytes that overlap by
    one, so every byte after the first is predicted once, from the bytes of
    its window before it (at most ``block_size``). For ASCII text a byte is a
    character, so this is bits per character.

    >>> net = GPT(GPTConfig(n_layer=1, n_head=1, n_embd=8, block_size=8))
    >>> round(bits_per_byte(net, torch.arange(100) % 256), 1)  # near uniform at init
    8.0
    """
    if data.dim() != 1 or len(data) < 2:
        raise ValueError("data must be a 1-D tensor of at least two bytes")
    was_training = model.training
    model.eval()
    n = model.config.block_size
    m = (len(data) - 1) // n  # full windows of n predictions
    pieces = []
    if m:
        X, Y = data[: m * n].view(m, n), data[1 : m * n + 1].view(m, n)
        pieces += [
            (X[i : i + batch_size], Y[i : i + batch_size])
            for i in range(0, m, batch_size)
        ]
    if len(data) - 1 > m * n:  # the last, shorter window
        pieces.append((data[m * n : -1][None], data[m * n + 1 :][None]))
    total = 0.0
    for x, y in pieces:
        logits, _ = model(x)
        total += float(
            F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum")
        )
    model.train(was_training)
    return total / (len(data) - 1) / math.log(2)
