"""nnU-Net v2 (the thesis's segmenter) as the Dice backend, instead of the built-in MONAI UNet.

nnU-Net is not a dependency: users who have it train a 2-D model themselves, then point the config at it.

1. ``snakemake results/{dataset}/nnunet/raw`` (rule ``nnunet_dataset``, :func:`export_training_set`) writes the
   training split in nnU-Net's raw layout: ``imagesTr/{case}_0000.nii.gz`` (float32 [0, 1], shape (H, W, 1),
   identity affine: nnU-Net treats a one-slice volume as 2-D), ``labelsTr/{case}.nii.gz`` (0 background,
   1 lesion) and ``dataset.json``. Copy it to ``$nnUNet_raw/Dataset<ID>_<name>`` and run
   ``nnUNetv2_plan_and_preprocess -d <ID>`` and ``nnUNetv2_train <ID> 2d <fold>``.
2. Set ``mededit.segmenter.backend: nnunet`` and ``mededit.segmenter.nnunet.model_folder`` to the trained
   ``nnUNetTrainer__nnUNetPlans__2d`` folder. Scoring then calls :func:`nnunet_segment`: every counterfactual
   is exported as above, ``nnUNetv2_predict_from_modelfolder`` predicts (:func:`predict_command`) and the
   masks are read back (any label > 0 is lesion, as BraTS subregions are fused). nnU-Net keeps the input
   geometry, so the masks come back in the images' pixel order.
"""
from __future__ import annotations

import json
import logging
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from cfbrain.settings import from_mapping

log = logging.getLogger(__name__)

PREDICT_EXECUTABLE = "nnUNetv2_predict_from_modelfolder"


@dataclass(frozen=True)
class NnUNetSettings:
    """A trained nnU-Net v2 model: its folder (with ``fold_X`` subfolders), the folds to ensemble, the checkpoint
    file name, whether to skip mirroring test-time augmentation, and the prediction executable."""

    model_folder: str
    folds: tuple[int, ...] = (0,)
    checkpoint: str = "checkpoint_final.pth"
    disable_tta: bool = False
    executable: str = PREDICT_EXECUTABLE

    @classmethod
    def from_mapping(cls, values: Mapping) -> NnUNetSettings:
        return from_mapping(cls, values, "nnunet")


def case_ids(method: str, n: int) -> list[str]:
    """nnU-Net case identifiers ``{method}_{index:04d}`` of a method's N counterfactuals."""
    return [f"{method}_{index:04d}" for index in range(n)]


def _write_plane(plane: np.ndarray, path: Path) -> None:
    nib.Nifti1Image(plane[:, :, None], np.eye(4)).to_filename(path)


def export_for_nnunet(images: np.ndarray, ids: Sequence[str], folder: str | Path) -> list[Path]:
    """Write images (N, H, W) in [0, 1] as nnU-Net inputs ``{id}_0000.nii.gz``; returns the paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if len(ids) != len(images):
        raise ValueError(f"{len(ids)} case ids for {len(images)} images")
    paths = []
    for case, image in zip(ids, np.asarray(images, np.float32)):
        path = folder / f"{case}_0000.nii.gz"
        _write_plane(image, path)
        paths.append(path)
    return paths


def export_training_set(images: np.ndarray, masks: np.ndarray, ids: Sequence[str], folder: str | Path,
                        name: str) -> Path:
    """nnU-Net v2 raw dataset of images (N, H, W) in [0, 1] and lesion masks (N, H, W) (nonzero = lesion):
    ``imagesTr``, ``labelsTr`` and ``dataset.json`` (channel "MRI", labels background 0 / lesion 1) under
    ``folder``. Returns the path of ``dataset.json``."""
    folder = Path(folder)
    if len(masks) != len(images):
        raise ValueError(f"{len(masks)} masks for {len(images)} images")
    export_for_nnunet(images, ids, folder / "imagesTr")
    (folder / "labelsTr").mkdir(parents=True, exist_ok=True)
    for case, mask in zip(ids, np.asarray(masks)):
        _write_plane((mask > 0).astype(np.uint8), folder / "labelsTr" / f"{case}.nii.gz")
    description = {"name": name, "channel_names": {"0": "MRI"}, "labels": {"background": 0, "lesion": 1},
                   "numTraining": len(ids), "file_ending": ".nii.gz"}
    path = folder / "dataset.json"
    path.write_text(json.dumps(description, indent=2) + "\n")
    return path


def read_predicted_masks(folder: str | Path, ids: Sequence[str]) -> np.ndarray:
    """Predicted masks ``{id}.nii.gz`` of ``folder`` as uint8 (N, H, W) in {0, 1}, in the order of ``ids``.

    Raises:
        FileNotFoundError: if a case has no prediction.
    """
    masks = []
    for case in ids:
        path = Path(folder) / f"{case}.nii.gz"
        if not path.is_file():
            raise FileNotFoundError(f"no nnU-Net prediction {path}")
        data = np.asarray(nib.load(path).dataobj)
        masks.append((data.reshape(data.shape[:2]) > 0).astype(np.uint8))
    return np.stack(masks)


def predict_command(settings: NnUNetSettings, input_folder: Path, output_folder: Path, device: str) -> list[str]:
    """The ``nnUNetv2_predict_from_modelfolder`` call that segments every ``*_0000.nii.gz`` of
    ``input_folder`` into ``output_folder`` on ``device`` ("cuda", "cpu" or "mps")."""
    command = [settings.executable, "-i", str(input_folder), "-o", str(output_folder), "-m", settings.model_folder,
               "-f", *map(str, settings.folds), "-chk", settings.checkpoint, "-device", device]
    return command + (["--disable_tta"] if settings.disable_tta else [])


def nnunet_segment(images: np.ndarray, settings: NnUNetSettings, device: str = "cpu") -> np.ndarray:
    """Lesion masks uint8 (N, H, W) of images (N, H, W) in [0, 1] by the trained nnU-Net (module docstring).

    Raises:
        FileNotFoundError: if the executable or the model folder is missing.
        RuntimeError: if nnU-Net fails (with the tail of its output).
    """
    if shutil.which(settings.executable) is None:
        raise FileNotFoundError(f"{settings.executable} is not on PATH: install nnU-Net v2 (pip install nnunetv2) "
                                "or set mededit.segmenter.backend to monai")
    if not Path(settings.model_folder).is_dir():
        raise FileNotFoundError(f"nnU-Net model folder {settings.model_folder} does not exist")
    ids = case_ids("counterfactual", len(images))
    with tempfile.TemporaryDirectory(prefix="cfbrain-nnunet-") as work:
        inputs, outputs = Path(work) / "in", Path(work) / "out"
        export_for_nnunet(images, ids, inputs)
        command = predict_command(settings, inputs, outputs, device)
        log.info("nnU-Net: %s", " ".join(command))
        run = subprocess.run(command, capture_output=True, text=True)
        if run.returncode != 0:
            raise RuntimeError(f"{settings.executable} exited with {run.returncode}: "
                               f"{(run.stderr or run.stdout)[-2000:]}")
        return read_predicted_masks(outputs, ids)
