"""Synthetic keyword-spotting data: voices split, deterministic, cached, augmented."""

import shutil

import numpy as np
import pytest

from mlcomp import speech

pytestmark = pytest.mark.skipif(
    shutil.which("espeak-ng") is None or shutil.which("text2wave") is None,
    reason="needs espeak-ng and festival (make apt)",
)


def test_voices_are_split_by_variant_never_by_clip():
    variants = speech.espeak_variants()
    splits = {v: speech.voice_split(v) for v in variants}
    assert set(splits.values()) == {"train", "val", "test"}
    share = sum(s == "train" for s in splits.values()) / len(variants)
    assert 0.6 < share < 0.8
    plans = {s: speech._plan(s, 2, 4, 0) for s in ("train", "val", "test")}
    heard = {s: {voice.variant for _, voice, _, _ in plan} for s, plan in plans.items()}
    assert not heard["train"] & heard["test"] and not heard["train"] & heard["val"]
    festival = speech._plan("festival", 2, 4, 0)
    assert {voice.engine for _, voice, _, _ in festival} == {"festival"}


def test_synthesis_is_deterministic_and_one_second_at_16khz():
    voice = speech.Voice("espeak", "en-gb-scotland", "m3")
    a = speech.synthesize("left", voice, rate=140, pitch=40)
    b = speech.synthesize("left", voice, rate=140, pitch=40)
    assert a.shape == (16000,) and np.array_equal(a, b)
    c = speech.synthesize("left", voice, rate=200, pitch=40)
    assert not np.array_equal(a, c)  # the rate changes the clip
    kal = speech.synthesize("stop", speech.Voice("festival", "kal_diphone"))
    assert kal.shape == (16000,) and np.abs(kal).max() > 0.05


@pytest.mark.parametrize("colour, slope", [("white", 0), ("pink", -1), ("brown", -2)])
def test_noise_colours_have_their_spectral_slopes(colour, slope):
    x = speech.noise(2**16, colour, np.random.default_rng(0))
    power = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(len(x))
    band = (f > 0.001) & (f < 0.4)
    fitted = np.polyfit(np.log(f[band]), np.log(power[band]), 1)[0]
    assert fitted == pytest.approx(slope, abs=0.1)
    assert np.sqrt(np.mean(x**2)) == pytest.approx(1.0)


def test_augment_is_seeded_and_its_snr_sets_the_noise():
    clip = speech.synthesize("go", speech.Voice("espeak", "en-us", "f2"))
    babble = np.round(np.stack([clip, clip[::-1]]) * 32767).astype(np.int16)
    a = speech.augment(clip, np.random.default_rng(3), babble)
    b = speech.augment(clip, np.random.default_rng(3), babble)
    assert a.shape == (16000,) and np.array_equal(a, b) and np.isfinite(a).all()
    assert not np.array_equal(a, clip) and np.abs(a).max() <= 1.0
    # the same draws but the SNR: the difference is the noise, 40 dB apart
    quiet = speech.augment(clip, np.random.default_rng(4), snr_db=(40, 40))
    loud = speech.augment(clip, np.random.default_rng(4), snr_db=(0, 0))
    signal = np.mean(quiet**2)
    assert np.mean((loud - quiet) ** 2) == pytest.approx(signal, rel=0.2)


def test_load_caches_with_a_checksum_and_regenerates_a_damaged_file(tmp_path):
    kwargs = {"accents_per_voice": 1, "unknown_per_voice": 1, "silence_fraction": 0.1}
    first = speech.load("val", cache_dir=tmp_path, **kwargs)
    files = sorted(tmp_path.glob("*.npz"))
    assert len(files) == 1 and len(first) > 100
    assert set(first.label_names()) == set(speech.LABELS)
    again = speech.load("val", cache_dir=tmp_path, **kwargs)
    assert np.array_equal(first.clips, again.clips) and first.voices == again.voices
    files[0].write_bytes(files[0].read_bytes()[:-10])  # damaged: made again
    fixed = speech.load("val", cache_dir=tmp_path, **kwargs)
    assert np.array_equal(first.clips, fixed.clips)
    with pytest.raises(ValueError, match="split must be one of"):
        speech.generate("dev")
