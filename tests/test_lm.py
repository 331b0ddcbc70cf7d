import pytest
import torch

from mlcomp import cli, gpt, lm, textcode, zoo

TINY = lm.LMRecipe(n_layer=1, n_head=2, n_embd=16, block_size=16, steps=4,
                   eval_every=2, warmup=2)  # fmt: skip


def test_recipe_digest_tracks_what_makes_the_weights():
    a = lm.LMRecipe()
    assert a.digest() == lm.LMRecipe(max_val_bpc=1.0).digest()  # a check only
    assert a.digest() != lm.LMRecipe(steps=a.steps + 1).digest()
    student = lm.LMRecipe(n_embd=128, n_head=4, teacher=lm.TEACHER)
    assert student.digest() != lm.LMRecipe(n_embd=128, n_head=4).digest()
    with pytest.raises(ValueError, match="multiple of n_head"):
        lm.LMRecipe(n_embd=100, n_head=3)


def test_learning_rate_warms_up_then_decays_to_a_tenth():
    r = lm.LMRecipe(steps=100, warmup=10, lr=1.0)
    rates = [lm._learning_rate(r, s) for s in range(100)]
    assert rates[0] == pytest.approx(0.1) and rates[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(rates[10:], rates[11:], strict=False))
    assert rates[-1] == pytest.approx(0.1, abs=1e-3)


def test_training_is_reproducible_and_never_sees_the_held_out_works(tmp_path):
    a, info = lm.train_recipe(TINY, progress=False)
    b, _ = lm.train_recipe(TINY, progress=False)
    for (k, x), (_, y) in zip(
        a.state_dict().items(), b.state_dict().items(), strict=True
    ):
        assert torch.equal(x, y), k
    assert [p[0] for p in info["curve"]] == [2, 4]
    assert info["train_bytes"] == 4 * 32 * 16
    train, val = lm.corpus("train"), lm.corpus("val")
    assert val[:2000].numpy().tobytes() not in train.numpy().tobytes()


def test_the_zoo_caches_a_language_model_and_reloads_it(tmp_path):
    net = zoo.pretrained("tiny-lm", recipe=TINY, cache_dir=tmp_path, progress=False)
    again = zoo.pretrained("tiny-lm", recipe=TINY, cache_dir=tmp_path, progress=False)
    assert isinstance(again, gpt.GPT)
    assert textcode.model_digest(net) == textcode.model_digest(again)


def test_a_too_weak_model_is_an_error():
    with pytest.raises(RuntimeError, match="above the recipe's target"):
        lm.train_recipe(lm.LMRecipe(**{**TINY.__dict__, "max_val_bpc": 1.0}),
                        progress=False)  # fmt: skip


def test_mlc_file_round_trip_keeps_shape_and_nearly_the_predictions(tmp_path):
    torch.manual_seed(0)
    net = lm.LMRecipe(n_layer=2, n_head=2, n_embd=32, block_size=16, steps=1).build()
    table = lm.save(net, tmp_path / "m.mlc", bits=8)
    back = lm.load(tmp_path / "m.mlc")
    assert back.config == net.config
    assert back.head.weight is back.tok_emb.weight  # still tied
    x = torch.randint(0, 256, (2, 16))
    with torch.no_grad():
        assert float((back(x)[0] - net(x)[0]).abs().max()) < 0.05
    assert "gpt_config" in table.index
    with pytest.raises(ValueError, match="not the weights of an mlcomp GPT"):
        lm.from_state_dict({"x": torch.zeros(1)})
    with pytest.raises(ValueError, match=".mlc file"):
        lm.load(tmp_path / "m.safetensors")


def test_onnx_graphs_give_the_logits_and_generation_of_pytorch(tmp_path):
    torch.manual_seed(0)
    net = lm.LMRecipe(n_layer=2, n_head=2, n_embd=32, block_size=16, steps=1).build()
    paths = lm.export_onnx(net, tmp_path, quantize="dynamic")
    onnx = lm.OnnxLM(paths["prefill"], paths["step"], net.config, threads=1)
    x = torch.randint(0, 256, (3, 16))
    torch.testing.assert_close(onnx(x)[0], net(x)[0], atol=1e-5, rtol=1e-4)
    prompt = torch.randint(0, 256, (2, 3))
    assert torch.equal(gpt.generate(onnx, prompt, 12, temperature=0),
                       net.generate(prompt, 12, temperature=0))  # fmt: skip
    int8 = lm.OnnxLM(paths["prefill.int8"], paths["step.int8"], net.config, 1)
    assert paths["prefill.int8"].stat().st_size < paths["prefill"].stat().st_size / 2
    data = torch.randint(0, 256, (300,))
    assert abs(gpt.bits_per_byte(int8, data) - gpt.bits_per_byte(net, data)) < 0.05


def test_resolve_names_and_files(tmp_path):
    with pytest.raises(ValueError, match="unknown language model"):
        lm.resolve("gpt-shakespeare:mlcx")
    with pytest.raises(FileNotFoundError, match="no model file"):
        lm.resolve(str(tmp_path / "missing.mlc"))
    assert lm.TEACHER in lm.model_names()


def test_text_command_round_trip_and_refusals(tmp_path, capsys):
    torch.manual_seed(0)
    net = lm.LMRecipe(n_layer=1, n_head=2, n_embd=16, block_size=16, steps=1).build()
    model = tmp_path / "lm.mlc"
    lm.save(net, model, bits=8)
    src = tmp_path / "in.txt"
    src.write_bytes("any bytes at all: \x00\xff é\n".encode() * 20)
    coded, back = tmp_path / "in.mlt", tmp_path / "out.txt"
    assert cli.main(["text", "compress", str(src), "-o", str(coded), "--model",
                     str(model), "--quiet"]) == 0  # fmt: skip
    assert "bits per byte" in capsys.readouterr().out
    assert cli.main(["text", "decompress", str(coded), "-o", str(back), "--model",
                     str(model), "--quiet"]) == 0  # fmt: skip
    assert back.read_bytes() == src.read_bytes()
    other = tmp_path / "other.mlc"
    torch.manual_seed(1)
    lm.save(lm.LMRecipe(n_layer=1, n_head=2, n_embd=16, block_size=16,
                        steps=1).build(), other, bits=8)  # fmt: skip
    assert cli.main(["text", "decompress", str(coded), "-o", str(tmp_path / "x"),
                     "--model", str(other), "--quiet"]) == 1  # fmt: skip
    assert "coded with model 'lm.mlc'" in capsys.readouterr().err
    damaged = tmp_path / "bad.mlt"
    blob = bytearray(coded.read_bytes())
    blob[-9] ^= 0x40
    damaged.write_bytes(bytes(blob))
    assert cli.main(["text", "decompress", str(damaged), "-o", str(tmp_path / "y"),
                     "--model", str(model)]) == 1  # fmt: skip
    assert "CRC-32" in capsys.readouterr().err
    assert not (tmp_path / "y").exists()  # nothing half-written
    assert cli.main(["text", "decompress", str(src), "-o", str(tmp_path / "z")]) == 1
    assert "not a MLCT stream" in capsys.readouterr().err
    assert cli.main(["text", "compress", str(src), "-o", str(src)]) == 1
    assert "destroy" in capsys.readouterr().err


def test_a_low_rank_recipe_factorizes_its_base_and_fine_tunes(tmp_path, monkeypatch):
    monkeypatch.setitem(zoo.RECIPES, "tiny-base", TINY)
    svd = lm.LMRecipe(base="tiny-base", energy=0.5, steps=2, eval_every=2, warmup=1)
    assert svd.config() == TINY.config()
    assert svd.digest() != lm.LMRecipe(base="tiny-base", energy=0.6, steps=2,
                                       eval_every=2, warmup=1).digest()  # fmt: skip
    monkeypatch.setitem(zoo.RECIPES, "tiny-svd", svd)
    net = zoo.pretrained("tiny-svd", cache_dir=tmp_path, progress=False)
    kinds = {
        type(m).__name__ for n, m in net.named_modules() if n.startswith("blocks.")
    }
    assert "LowRankLinear" in kinds
    again = zoo.pretrained("tiny-svd", cache_dir=tmp_path, progress=False)
    assert textcode.model_digest(net) == textcode.model_digest(again)
    lm.save(net, tmp_path / "svd.mlc", bits=8)
    back = lm.load(tmp_path / "svd.mlc")
    assert {type(m).__name__ for m in back.modules()} >= {"LowRankLinear"}
    x = torch.randint(0, 256, (2, 16))
    with torch.no_grad():
        assert float((back(x)[0] - net(x)[0]).abs().max()) < 0.05
    with pytest.raises(ValueError, match="both base and energy"):
        lm.LMRecipe(base="tiny-base")


def test_claims_retrain_with_the_shorter_budget(monkeypatch):
    monkeypatch.setenv(zoo.SEED_VARIABLE, "1")
    r = zoo.recipe_for(lm.TEACHER)
    shipped = lm.RECIPES[lm.TEACHER]
    assert (r.steps, r.seed) == (shipped.claims_steps, 1)
    assert r.max_val_bpc == shipped.claims_max_val_bpc > shipped.max_val_bpc
    monkeypatch.delenv(zoo.SEED_VARIABLE)
    assert zoo.recipe_for(lm.TEACHER) == lm.RECIPES[lm.TEACHER]
    assert lm.LMRecipe(claims_steps=5).digest() == lm.LMRecipe().digest()


def test_prequential_code_learns_and_checks_its_blocks():
    r = lm.LMRecipe(n_layer=1, n_head=2, n_embd=32, block_size=16, steps=60,
                    batch_size=8, warmup=5, lr=1e-2)  # fmt: skip
    text = b"the cat sat on the mat. " * 60
    table = lm.prequential(text, [256, 512], r)
    assert table["bytes"].sum() == len(text)
    assert table["bits per byte"].iloc[0] == 8.0
    assert table["bits per byte"].iloc[-1] < 4  # the repeated sentence is learned
    with pytest.raises(ValueError, match="increase strictly"):
        lm.prequential(text, [512, 256], r)
    with pytest.raises(ValueError, match="longer than block_size"):
        lm.prequential(text, [10], r)


def test_a_student_distils_from_its_teacher(tmp_path, monkeypatch):
    monkeypatch.setitem(zoo.RECIPES, "tiny-teacher", TINY)
    student = lm.LMRecipe(n_layer=1, n_head=1, n_embd=8, block_size=16, steps=3,
                          eval_every=3, warmup=1, teacher="tiny-teacher",
                          temperature=2.0)  # fmt: skip
    net, info = lm.train_recipe(student, progress=False, cache_dir=tmp_path)
    assert net.config.n_embd == 8 and len(info["curve"]) == 1
    assert (
        student.digest()
        != lm.LMRecipe(**{**student.__dict__, "temperature": 1.0}).digest()
    )
    wrong = lm.LMRecipe(**{**student.__dict__, "block_size": 8})
    with pytest.raises(ValueError, match="teacher's block_size"):
        lm.train_recipe(wrong, progress=False, cache_dir=tmp_path)


def test_calibration_windows_come_from_the_training_works_only():
    batches = lm.calibration_batches(10, 4, 32, seed=3)
    assert [tuple(b.shape) for b in batches] == [(4, 32), (4, 32), (2, 32)]
    assert all(b.dtype == torch.int64 for b in batches)
    train = bytes(lm.corpus("train").tolist())
    val = bytes(lm.corpus("val").tolist())
    for row in torch.cat(batches):
        window = bytes(row.tolist())
        assert window in train and window not in val
    again = lm.calibration_batches(10, 4, 32, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(batches, again, strict=True))
    assert not torch.equal(batches[0], lm.calibration_batches(10, 4, 32, seed=4)[0])
    with pytest.raises(ValueError, match="must be >= 1"):
        lm.calibration_batches(0)


def test_shipped_budget_is_false_under_the_claims_check(monkeypatch):
    monkeypatch.delenv(zoo.SEED_VARIABLE, raising=False)
    assert lm.shipped_budget()
    monkeypatch.setenv(zoo.SEED_VARIABLE, "1")
    assert not lm.shipped_budget()


def test_two_part_code_is_the_file_plus_the_coded_text(tmp_path):
    torch.manual_seed(0)
    net = TINY.build()
    text = b"to be, or not to be, that is the question. " * 20
    parts = lm.two_part_code(net, 6, {"text": text}, tmp_path)
    lm.save(net, tmp_path / "same.mlc", bits=6)
    assert parts["model bytes"] == (tmp_path / "same.mlc").stat().st_size
    bits, n = textcode.code_length(lm.load(tmp_path / "same.mlc"), text)
    assert n == len(text) and parts["text data bytes"] == pytest.approx(bits / 8)
    sampled = lm.two_part_code(net, 6, {"text": text}, tmp_path, every={"text": 2})
    assert sampled["text data bytes"] == pytest.approx(bits / 8, rel=0.1)
    assert not list(tmp_path.glob("two-part-*"))  # the model file is not left behind
