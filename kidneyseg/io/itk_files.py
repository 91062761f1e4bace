"""NRRD and MetaImage (``.nrrd``, ``.nhdr``, ``.mha``, ``.mhd``) through SimpleITK; Slicer segmentation output.

SimpleITK holds an image as an index ``(i, j, k)`` with LPS ``origin``, ``spacing`` and a
``direction`` matrix; its numpy view is ``(k, j, i)``. :func:`sitk_affine` turns that into the
RAS affine of the numpy array (column ``a`` = numpy axis ``a``), so these files become canonical
:class:`~kidneyseg.io.volume.Volume` objects like NIfTI ones, and :func:`sitk_geometry` is its
exact inverse for writing.

:func:`save_seg_nrrd` writes a label map as a 3D Slicer segmentation (``.seg.nrrd``): one uint8
layer whose values are the labels, with each segment's name, colour, label value, extent and
SNOMED terminology (:data:`kidneyseg.io.segments.SEGMENTS`) in the header. Slicer opens it as a
segmentation; any NRRD reader (SimpleITK, pynrrd, ITK-SNAP) as a label map with the input's
exact geometry.

>>> vol = load_itk_file("ct.nrrd")                            # doctest: +SKIP
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import atomic_path, fail
from .segments import SEGMENTS
from .volume import LABEL_VALUES, Kind, Volume, check_affine, check_exists, checked_array, from_canonical, spatial_shape, to_canonical

#: File endings read through SimpleITK (lower case).
ITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")
#: The ending :func:`save_seg_nrrd` gives its files.
SEG_NRRD_SUFFIX = ".seg.nrrd"

_LPS = np.diag([-1.0, -1.0, 1.0])


def is_itk_name(path: os.PathLike | str) -> bool:
    """Whether a file name ends in one of :data:`ITK_SUFFIXES`."""
    return Path(path).name.lower().endswith(ITK_SUFFIXES)


def sitk_affine(image) -> np.ndarray:
    """The 4x4 RAS affine of ``sitk.GetArrayFromImage(image)`` (numpy axis ``a`` = ITK index ``2 - a``)."""
    spacing = np.array(image.GetSpacing(), float)
    direction = np.array(image.GetDirection(), float).reshape(3, 3)
    affine = np.eye(4)
    for a in range(3):
        affine[:3, a] = _LPS @ (direction[:, 2 - a] * spacing[2 - a])
    affine[:3, 3] = _LPS @ np.array(image.GetOrigin(), float)
    return affine


def sitk_geometry(affine: np.ndarray) -> tuple[tuple, tuple, tuple]:
    """``(spacing, direction, origin)`` for SimpleITK from a numpy array's RAS affine (inverse of :func:`sitk_affine`)."""
    affine = np.asarray(affine, float)
    cols = [_LPS @ affine[:3, 2 - d] for d in range(3)]
    spacing = tuple(float(np.linalg.norm(c)) for c in cols)
    direction = np.stack([c / s for c, s in zip(cols, spacing)], axis=1)
    return spacing, tuple(float(v) for v in direction.ravel()), tuple(float(v) for v in _LPS @ affine[:3, 3])


def load_itk_file(path: os.PathLike | str, kind: Kind = "image", label_values: Sequence[int] = LABEL_VALUES) -> Volume:
    """Read a NRRD or MetaImage file into a canonical :class:`Volume` (see :func:`kidneyseg.io.load_volume`)."""
    import SimpleITK as sitk

    path = Path(path)
    check_exists(path)
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise fail(path, f"not a readable NRRD/MetaImage file ({_first_line(exc)})") from None
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise fail(path, f"expected one value per voxel, got {image.GetNumberOfComponentsPerPixel()} (a vector image)")
    size = tuple(int(s) for s in reversed(image.GetSize()))
    if image.GetDimension() == 4 and size[0] == 1:
        image = image[:, :, :, 0]
        size = size[1:]
    spatial_shape(path, size)
    affine = sitk_affine(image)
    check_affine(path, affine)
    array = sitk.GetArrayFromImage(image)
    fmt = "nrrd" if path.name.lower().endswith((".nrrd", ".nhdr")) else "mha"
    return to_canonical(checked_array(path, array, kind, label_values), affine, str(path), None, format=fmt)


def save_seg_nrrd(labels: np.ndarray, path: os.PathLike | str, like: Volume) -> Path:
    """Write canonical (z, y, x) labels as a Slicer ``.seg.nrrd`` in ``like``'s file layout and geometry.

    The voxels are written in the source file's array order with its affine (for a NIfTI input:
    the same voxel grid a NIfTI output would have), gzip-compressed, atomically.
    """
    import SimpleITK as sitk

    if tuple(labels.shape) != tuple(like.array.shape):
        raise ValueError(f"labels shape {labels.shape} differs from the reference volume's {like.array.shape}")
    path = Path(path)
    if not path.name.lower().endswith(".nrrd"):
        raise fail(path, "output name must end in .nrrd (.seg.nrrd for a Slicer segmentation)")
    if like.source is None:
        out, affine = labels, like.affine
    else:
        out, affine = from_canonical(labels, like.source), like.source.affine
    out = np.ascontiguousarray(out, dtype=np.uint8)
    image = sitk.GetImageFromArray(out)
    spacing, direction, origin = sitk_geometry(affine)
    image.SetSpacing(spacing)
    image.SetDirection(direction)
    image.SetOrigin(origin)
    for key, value in _slicer_fields(out).items():
        image.SetMetaData(key, value)
    with atomic_path(path) as tmp:
        sitk.WriteImage(image, str(tmp), True)
    return path


def _slicer_fields(labels_kji: np.ndarray) -> dict[str, str]:
    """The header fields 3D Slicer reads from a ``.seg.nrrd`` (one shared label layer)."""
    from ..measure.components import bounding_box

    fields = {
        "Segmentation_MasterRepresentation": "Binary labelmap",
        "Segmentation_ContainedRepresentationNames": "Binary labelmap|",
        "Segmentation_ReferenceImageExtentOffset": "0 0 0",
    }
    outer = bounding_box(labels_kji)  # the foreground's box first: no full-size mask per segment
    for n, seg in enumerate(SEGMENTS):
        box = None if outer is None else bounding_box(labels_kji[outer] == seg.label)
        # extent in ITK index order (i, j, k) = numpy axes reversed; "0 -1 ..." for an empty segment
        extent = ("0 -1 0 -1 0 -1" if box is None else
                  " ".join(f"{outer[a].start + box[a].start} {outer[a].start + box[a].stop - 1}"
                           for a in (2, 1, 0)))
        fields.update({
            f"Segment{n}_ID": f"Segment_{seg.label}",
            f"Segment{n}_Name": seg.name,
            f"Segment{n}_NameAutoGenerated": "0",
            f"Segment{n}_Color": " ".join(f"{c / 255:.6f}" for c in seg.rgb),
            f"Segment{n}_ColorAutoGenerated": "0",
            f"Segment{n}_LabelValue": str(seg.label),
            f"Segment{n}_Layer": "0",
            f"Segment{n}_Extent": extent,
            f"Segment{n}_Tags": f"TerminologyEntry:{seg.slicer_terminology()}|",
        })
    return fields


def _first_line(exc: Exception) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[-1] if lines else type(exc).__name__


__all__ = ["ITK_SUFFIXES", "SEG_NRRD_SUFFIX", "is_itk_name", "load_itk_file", "save_seg_nrrd", "sitk_affine",
           "sitk_geometry"]
