"""Band-limited (Fourier) interpolation onto the corner-aligned grid."""
from typing import Sequence

import numpy as np


def fourier_upsample(image: np.ndarray, factors: Sequence[int]) -> np.ndarray:
    """Band-limited (k-space zero-padding) interpolation of ``image`` by whole ``factors`` per array axis onto the
    corner-aligned grid; float32. An even-length axis's Nyquist coefficient is split between ±Nyquist so the
    result is real."""
    result = np.asarray(image, dtype=np.complex64)
    for axis, factor in enumerate(int(f) for f in factors):
        if factor == 1:
            continue
        length = result.shape[axis]
        spectrum = np.moveaxis(np.fft.fft(result, axis=axis), axis, 0)
        frequencies = np.fft.fftfreq(length, d=1.0 / length)  # integers; the Nyquist one (even length) is −length/2
        shift = 0.5 / factor - 0.5
        spectrum = spectrum * np.exp(2j * np.pi * frequencies * shift / length).reshape(-1, 1, 1).astype(np.complex64)
        padded = np.zeros((length * factor,) + spectrum.shape[1:], dtype=np.complex64)
        positive = (length + 1) // 2  # frequencies 0 … ceil(length / 2) − 1
        padded[:positive] = spectrum[:positive]
        negative = length // 2        # frequencies −floor(length / 2) … −1
        padded[-negative:] = spectrum[-negative:]
        if length % 2 == 0:
            nyquist = np.fft.fft(np.moveaxis(result, axis, 0), axis=0)[length // 2]
            padded[-negative] = 0.5 * nyquist * np.exp(-1j * np.pi * shift)
            padded[length // 2] = 0.5 * nyquist * np.exp(1j * np.pi * shift)
        result = np.moveaxis(np.fft.ifft(padded, axis=0) * factor, 0, axis)
    return np.ascontiguousarray(result.real, dtype=np.float32)
