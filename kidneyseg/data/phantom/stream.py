"""NIfTI in and out for painting at native size: a label read without copies, an image written
slab by slab, compressed with ISA-L's gzip (``isal``), renamed into place only when complete.

Memory: the label stays in the file's layout (nibabel's array, 1 byte per voxel for uint8), the
image is assembled in the file's layout as int16 (2 bytes per voxel), and only ``slab`` slices are
worked on in float32 at a time: painting the 1059 x 512 x 512 KiTS19 case peaked at 1.41 GiB
for the whole ``kidneyseg phantom`` process tree (measured, docs/data.md).

Compression (measured, docs/data.md): gzip level 1 through ``isal.igzip`` is ~3x faster than
zlib's level 1 (nibabel's default) at the same ratio on noisy int16 CT, and the files are plain
gzip that every NIfTI reader opens.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
from isal import igzip
from nibabel import orientations as nio

from ...errors import atomic_path, fail
from ...io import CANONICAL_AXCODES, read_header

#: gzip level of written files (1: fastest; higher levels gain ~3% size at several times the time).
COMPRESSLEVEL = 1


class LabelFile:
    """A label map read for painting: the canonical (z, y, x) view of the file's array, no copy.

    Attributes:
        path: the file. array: canonical view (any memory order). spacing: (z, y, x) mm.
        affine, header: the file's own, for writing an image on the same grid.
        ornt: nibabel orientation transform file -> canonical.
    """

    def __init__(self, path: os.PathLike | str):
        self.path = Path(path)
        info = read_header(self.path)  # existence, NIfTI, 3D, affine checks (one-line errors)
        try:
            img = nib.load(str(self.path))
            data = np.asanyarray(img.dataobj)
        except Exception as exc:  # nibabel raises assorted errors on corrupt data
            raise fail(self.path, f"corrupt or truncated voxel data ({type(exc).__name__}: {exc})") from None
        data = data.reshape(data.shape[:3])
        if np.issubdtype(data.dtype, np.floating):
            if not np.all(np.isfinite(data)) or not np.array_equal(np.rint(data), data):
                raise fail(self.path, "label map has NaN, Inf or non-integer values; expected 0, 1, 2 (3: cyst)")
            data = data.astype(np.uint8)
        lo, hi = int(data.min()), int(data.max())
        if lo < 0 or hi > 3:
            raise fail(self.path, f"label values must be in {{0, 1, 2, 3}}, found values in {lo}..{hi}")
        if data.dtype != np.uint8:
            data = data.astype(np.uint8)
        self.affine = np.asarray(img.affine, float)
        self.header = img.header.copy()
        self.ornt = nio.ornt_transform(nio.io_orientation(self.affine), nio.axcodes2ornt(CANONICAL_AXCODES))
        self.file_array = data
        self.array = nio.apply_orientation(data, self.ornt)
        self.spacing = info.spacing
        if tuple(self.array.shape) != tuple(info.shape):
            raise fail(self.path, f"canonical shape {self.array.shape} differs from the header's {info.shape}")


def _assign(dst: np.ndarray, src: np.ndarray, block: int = 16) -> None:
    """``dst[...] = src`` in blocks along x, so that a transposing copy stays in cache (~4x faster)."""
    for x0 in range(0, src.shape[2], block):
        dst[:, :, x0:x0 + block] = src[:, :, x0:x0 + block]


def write_nifti(path: os.PathLike | str, file_array: np.ndarray, affine: np.ndarray, header=None) -> Path:
    """Write ``file_array`` (the file's own axes) as gzip NIfTI with ``affine``/``header``, atomically."""
    path = Path(path)
    header = header.copy() if header is not None else nib.Nifti1Header()
    header.set_data_dtype(file_array.dtype)
    img = nib.Nifti1Image(file_array, affine, header=header)
    img.header.set_slope_inter(1.0, 0.0)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as raw, igzip.IGzipFile(filename="", mode="wb", compresslevel=COMPRESSLEVEL,
                                                     fileobj=raw, mtime=0) as gz:
            img.to_file_map({"image": nib.FileHolder(fileobj=gz)})
    return path


def write_painted(path: os.PathLike | str, render, canonical_shape, affine: np.ndarray, header=None,
                  ornt: np.ndarray | None = None, slab: int = 24, progress=None) -> Path:
    """Render an int16 image slab by slab into the file's layout and write it (see :func:`write_nifti`).

    Args:
        render: ``render(z0, z1) -> (z1 - z0, y, x) int16`` in the canonical layout.
        canonical_shape: (z, y, x) voxels. affine, header: the output file's.
        ornt: nibabel orientation transform file -> canonical (``None``: the file is canonical).
        slab: slices per call of ``render``. progress: called with the slices done so far.
    """
    if ornt is None:
        ornt = np.array([[0, 1], [1, 1], [2, 1]], float)
    inverse = nio.ornt_transform(nio.axcodes2ornt(CANONICAL_AXCODES), nio.io_orientation(affine))
    file_shape = nio.apply_orientation(np.empty(canonical_shape, bool), inverse).shape
    out = np.empty(file_shape, np.int16, order="F")   # NIfTI stores the first axis fastest
    canon = nio.apply_orientation(out, ornt)
    nz = canonical_shape[0]
    for z0 in range(0, nz, slab):
        z1 = min(nz, z0 + slab)
        _assign(canon[z0:z1], render(z0, z1))
        if progress is not None:
            progress(z1)
    return write_nifti(path, out, affine, header)


def copy_atomic(src: os.PathLike | str, dst: os.PathLike | str) -> Path:
    """Copy a file so that ``dst`` appears complete or not at all."""
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
    return Path(dst)
