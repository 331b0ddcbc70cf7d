import math

import pytest
import torch

from mlcomp.gpt import GPT, GPTConfig, bits_per_byte, decode_text, encode_text

SMALL = GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=16)


def net(seed=0, config=SMALL):
    torch.manual_seed(seed)
    return GPT(config).eval()


def test_config_is_validated():
    with pytest.raises(ValueError, match="multiple of n_head"):
        GPTConfig(n_embd=30, n_head=4)
    with pytest.raises(ValueError, match="n_layer"):
        GPTConfig(n_layer=0)
    with pytest.raises(ValueError, match="dropout"):
        GPTConfig(dropout=1.0)


def test_loss_at_initialization_is_near_uniform_and_head_is_tied():
    model = net()
    g = torch.Generator().manual_seed(1)
    x, y = torch.randint(0, 256, (2, 8, 16), generator=g)
    with torch.no_grad():
        _, loss = model(x, y)
    assert abs(float(loss) - math.log(256)) < 0.1
    assert model.head.weight is model.tok_emb.weight


def test_attention_is_causal():
    model = net()
    x = torch.randint(0, 256, (1, 16), generator=torch.Generator().manual_seed(2))
    y = x.clone()
    y[0, 10:] = (y[0, 10:] + 1) % 256  # change the future
    a, _ = model(x)
    b, _ = model(y)
    torch.testing.assert_close(a[:, :10], b[:, :10])
    assert not torch.allclose(a[:, 10:], b[:, 10:])


def test_the_kv_cache_gives_the_logits_of_a_full_pass():
    model = net()
    x = torch.randint(0, 256, (2, 12), generator=torch.Generator().manual_seed(3))
    full, _ = model(x)
    logits, cache = model(x[:, :5], cache=[])
    steps = [logits]
    for t in range(5, 12):
        logits, cache = model(x[:, t : t + 1], cache=cache)
        steps.append(logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="exceed the context"):
        model(torch.zeros(1, 5, dtype=torch.long), cache=cache)


def test_generation_with_and_without_the_cache_agrees_past_the_context():
    model = net()
    prompt = encode_text("To be")[None]
    a = model.generate(prompt, 30, temperature=0)  # 35 bytes: the window slides
    b = model.generate(prompt, 30, temperature=0, use_cache=False)
    assert a.shape == (1, 35) and torch.equal(a, b)
    g = torch.Generator().manual_seed(0)
    s1 = model.generate(prompt, 10, temperature=1.0, top_k=5, generator=g)
    g = torch.Generator().manual_seed(0)
    s2 = model.generate(
        prompt, 10, temperature=1.0, top_k=5, generator=g, use_cache=False
    )
    assert torch.equal(s1, s2)


def test_a_tiny_model_learns_a_repeating_text_and_bits_per_byte_falls():
    torch.manual_seed(0)
    model = GPT(SMALL)
    data = encode_text("abcabdabcabd" * 20)
    before = bits_per_byte(model, data)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    X = torch.stack([data[i : i + 16] for i in range(0, 200, 4)])
    Y = torch.stack([data[i + 1 : i + 17] for i in range(0, 200, 4)])
    model.train()
    for _ in range(150):
        _, loss = model(X, Y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = bits_per_byte(model, data)
    assert before > 7.5 and after < 1.0


def test_bits_per_byte_counts_every_prediction_once():
    model = net()
    data = torch.randint(0, 256, (50,), generator=torch.Generator().manual_seed(4))
    # by hand: windows of 17 bytes overlapping by one
    total = 0.0
    for s in range(0, 49, 16):
        piece = data[s : s + 17]
        logits, _ = model(piece[:-1][None])
        total += float(
            torch.nn.functional.cross_entropy(logits[0], piece[1:], reduction="sum")
        )
    assert (
        abs(bits_per_byte(model, data, batch_size=2) - total / 49 / math.log(2)) < 1e-9
    )
    with pytest.raises(ValueError, match="two bytes"):
        bits_per_byte(model, data[:1])


def test_bytes_round_trip():
    assert decode_text(encode_text("Œdipus, ‘hé’\n")) == "Œdipus, ‘hé’\n"
    assert encode_text(b"\x00\xff").tolist() == [0, 255]


def test_the_preallocated_cache_gives_the_logits_of_a_full_pass():
    from mlcomp.gpt import KVCache

    model = net()
    x = torch.randint(0, 256, (3, 16), generator=torch.Generator().manual_seed(4))
    full, _ = model(x)
    cache = KVCache(model.config, batch=3)
    steps = [model(x[:, :6], cache=cache)[0]]
    steps += [model(x[:, t : t + 1], cache=cache)[0] for t in range(6, 16)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-4)
    assert cache.length == 16
    with pytest.raises(ValueError, match="exceed the context"):
        model(x[:, :1], cache=cache)
    with pytest.raises(ValueError, match="holds 3 rows"):
        model(x[:2, :1], cache=KVCache(model.config, batch=3))
