"""Audio reading and features, against soundfile and librosa."""

import numpy as np
import pytest
import torch

from mlcomp import audio

librosa = pytest.importorskip("librosa")
soundfile = pytest.importorskip("soundfile")

RNG = np.random.default_rng(0)


@pytest.mark.parametrize(
    "subtype", ["PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"]
)
@pytest.mark.parametrize("channels", [1, 2])
def test_read_wav_matches_soundfile_for_every_pcm_and_float_format(
    tmp_path, subtype, channels
):
    x = np.clip(RNG.normal(0, 0.3, (999, channels)), -1, 0.999)
    path = tmp_path / "x.wav"
    soundfile.write(path, x, 22050, subtype=subtype)
    ours, rate = audio.read_wav(path)
    theirs, their_rate = soundfile.read(path, dtype="float32", always_2d=True)
    assert rate == their_rate == 22050 and ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, atol=1e-7)


def test_extensible_wav_and_odd_chunks(tmp_path):
    path = tmp_path / "ext.wav"
    x = RNG.normal(0, 0.2, (500, 3)).clip(-1, 1)  # 3 channels: WAVE_FORMAT_EXTENSIBLE
    soundfile.write(path, x, 8000, subtype="PCM_16")
    assert audio.read_wav(path)[0].shape == (500, 3)


@pytest.mark.parametrize(
    "content, match",
    [
        (b"", "not a WAV file"),
        (b"ID3\x03" + bytes(100), "not a WAV file"),
        (b"RIFF\x04\x00\x00\x00WAVE", "no format chunk"),
    ],
)
def test_what_is_not_audio_is_one_clear_error(tmp_path, content, match):
    path = tmp_path / "bad.wav"
    path.write_bytes(content)
    with pytest.raises(audio.AudioError, match=match):
        audio.read_wav(path)


def test_compressed_silent_and_missing_files_are_refused(tmp_path):
    path = tmp_path / "adpcm.wav"
    soundfile.write(path, np.zeros(800), 8000, subtype="IMA_ADPCM")
    with pytest.raises(audio.AudioError, match="not supported"):
        audio.read_wav(path)
    silent = tmp_path / "silent.wav"
    audio.write_wav(silent, np.zeros(16000), 16000)
    with pytest.raises(audio.AudioError, match="silent"):
        audio.prepare(silent)
    with pytest.raises(audio.AudioError, match="no such file"):
        audio.read_wav(tmp_path / "none.wav")


def test_resampling_keeps_tones_and_removes_what_cannot_be_held():
    t = np.arange(44100) / 44100
    kept = audio.resample(np.sin(2 * np.pi * 1000 * t), 44100)
    spectrum = np.abs(np.fft.rfft(kept))
    assert np.argmax(spectrum) == 1000  # 1 Hz bins over one second
    high = audio.resample(np.sin(2 * np.pi * 10_000 * t), 44100)  # above 8 kHz
    level_db = 20 * np.log10(np.sqrt(np.mean(high[200:-200] ** 2)) / np.sqrt(0.5))
    assert level_db < -50


def test_loudest_window_finds_the_word():
    x = np.zeros(48000, np.float32)
    x[30000:34000] = RNG.normal(0, 0.5, 4000)
    window = audio.loudest_window(x)
    assert len(window) == 16000 and np.sum(window**2) == pytest.approx(np.sum(x**2))


def test_mel_filterbank_equals_librosa_slaney():
    for n_mels, n_fft, rate, fmin, fmax in [(40, 512, 16000, 20, 7600),
                                            (64, 1024, 22050, 0, 11025)]:  # fmt: skip
        ours = audio.mel_filterbank(n_mels, n_fft, rate, fmin, fmax).numpy()
        theirs = librosa.filters.mel(sr=rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin,
                                     fmax=fmax, htk=False, norm="slaney")  # fmt: skip
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-7)


def test_log_mel_and_mfcc_equal_librosa():
    x = RNG.normal(0, 0.1, 16000).astype(np.float32)
    x[4000:8000] += 0.5 * np.sin(2 * np.pi * 700 * np.arange(4000) / 16000)
    ours = audio.log_mel(x).numpy()
    power = librosa.feature.melspectrogram(
        y=x, sr=16000, n_fft=512, hop_length=160, win_length=480, window="hann",
        center=True, pad_mode="reflect", power=2.0, n_mels=40, fmin=20, fmax=7600,
    )  # fmt: skip
    theirs = np.maximum(librosa.power_to_db(power, ref=1.0, amin=1e-10, top_db=None),
                        -100.0)  # fmt: skip
    np.testing.assert_allclose(ours, theirs, atol=1e-3)  # dB: float32 STFT vs numpy
    ours_mfcc = audio.mfcc(x).numpy()
    theirs_mfcc = librosa.feature.mfcc(S=theirs, n_mfcc=10, dct_type=2, norm="ortho")
    np.testing.assert_allclose(ours_mfcc, theirs_mfcc, atol=1e-2)
    batch = audio.log_mel(torch.from_numpy(np.stack([x, x])))
    assert batch.shape == (2, 40, 101) and torch.equal(batch[0], batch[1])
