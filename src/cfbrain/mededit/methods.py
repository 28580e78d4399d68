"""Run one editing method of thesis 000 over a set of triplets, batched, and store the counterfactuals.

Method names (``parse_method``) are ``{base}[_box][_k{kernel}][_u{resample}]``:

* bases: ``palette``, ``naive_repaint``, ``sdedit``, ``mededit`` (:mod:`cfbrain.diffusion.samplers`);
* ``_box``: condition on the bounding box of the lesion mask instead of the mask (thesis §4.1; needs the
  denoisers trained with ``box_masks=True``); MedEdit's kernel then defaults to k = 20;
* ``_k{n}``, ``_u{n}``: MedEdit's dilation kernel (default 25) and resampling steps (default 4; naive
  RePaint's default is 3), for the ablations (Tables 5.2-5.3, 5.6-5.7).

MedEdit's kernel ``k`` is in pixels of the thesis's 128 x 128 slices, so it covers the same anatomy at any
slice size: on S x S slices the dilation uses ``round(k · S / 128)`` pixels (:func:`pixel_kernel`; k = 25 is
12 pixels at 64 px). Unscaled, k = 25 would span 40 % of a 64 px slice and MedEdit would regenerate half the
brain around a small lesion.

``palette`` uses the Palette denoiser, every other base the MedEdit denoiser, each trained on the
conditioning the method uses: ``eps_models`` keys ``"mededit"``, ``"palette"`` (lesion masks) and
``"mededit_box"``, ``"palette_box"`` (boxes; :class:`MethodSpec.network`). SDEdit's encoding ratio is an
experiment parameter (0.2 strokes, 0.6 tumours). Priors go from [0, 1] to [-1, 1] and back through
:mod:`cfbrain.preprocess.intensity`.

Results (:class:`CounterfactualSet`, .npz via :func:`save_counterfactuals`): ``prior``, ``counterfactual``
float32 (N, H, W) in [0, 1], ``difference = counterfactual - prior`` in [-1, 1], the conditioning
``mask`` and the prior's ``brain_mask`` uint8, the triplet names, the method and the network calls made.
Image ``i`` of a run with seed ``s`` draws its sampler noise from :func:`image_seeds` (``SeedSequence([s, i])``),
so a result does not depend on the batch size and runs with different seeds share no noise.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cfbrain.mededit.triplets import Triplets
from cfbrain.diffusion import samplers
from cfbrain.diffusion.masks import mededit_inpainting_mask
from cfbrain.diffusion.schedule import NoiseSchedule
from cfbrain.preprocess.intensity import diffusion_to_unit, unit_to_diffusion
from cfbrain.preprocess.npz import read_npz, write_npz

log = logging.getLogger(__name__)

BASE_METHODS = ("palette", "naive_repaint", "sdedit", "mededit")
"""In the thesis tables' row order."""
MEDEDIT_KERNEL, MEDEDIT_BOX_KERNEL, MEDEDIT_RESAMPLE, NAIVE_RESAMPLE = 25, 20, 4, 3
ABLATION_KERNELS = (10, 15, 20, 25)
ABLATION_RESAMPLE_STEPS = (1, 2, 3, 4)
REFERENCE_SIZE = 128
"""Slice side (pixels) in which the thesis gives MedEdit's kernel sizes."""
COUNTERFACTUALS_FORMAT = "cfbrain-counterfactuals/1"
_NAME = re.compile(r"(?P<base>palette|naive_repaint|sdedit|mededit)(?P<box>_box)?(?:_k(?P<k>\d+))?(?:_u(?P<u>\d+))?")


@dataclass(frozen=True)
class MethodSpec:
    """One editing configuration: base method, box conditioning, MedEdit kernel and resampling steps
    (None where the base has no such parameter)."""

    name: str
    base: str
    box: bool
    kernel_size: int | None
    resample_steps: int | None

    @property
    def network(self) -> str:
        """Key of the denoiser it needs in ``eps_models``: ``{mededit,palette}[_box]``."""
        return ("palette" if self.base == "palette" else "mededit") + ("_box" if self.box else "")


def parse_method(name: str) -> MethodSpec:
    """The :class:`MethodSpec` of a method name (module docstring).

    Raises:
        ValueError: for an unknown name, or a kernel/resampling suffix on a base without that parameter.
    """
    match = _NAME.fullmatch(name)
    if match is None:
        raise ValueError(f"unknown method {name!r}; expected {{{','.join(BASE_METHODS)}}}[_box][_k<n>][_u<n>]")
    base, box = match["base"], bool(match["box"])
    if (match["k"] and base != "mededit") or (match["u"] and base not in ("mededit", "naive_repaint")):
        raise ValueError(f"{name!r}: only mededit takes _k, only mededit and naive_repaint take _u")
    kernel = resample = None
    if base == "mededit":
        kernel = int(match["k"]) if match["k"] else (MEDEDIT_BOX_KERNEL if box else MEDEDIT_KERNEL)
    if base in ("mededit", "naive_repaint"):
        resample = int(match["u"]) if match["u"] else (MEDEDIT_RESAMPLE if base == "mededit" else NAIVE_RESAMPLE)
    return MethodSpec(name=name, base=base, box=box, kernel_size=kernel, resample_steps=resample)


def ablation_methods() -> dict[str, dict[int, str]]:
    """Method name of each ablation setting: ``{"kernel": {k: name}, "resample": {u: name}}`` (k with U = 4,
    U with k = 25; the default setting is plain ``mededit``)."""
    default = parse_method("mededit")
    return {
        "kernel": {k: "mededit" if k == default.kernel_size else f"mededit_k{k}" for k in ABLATION_KERNELS},
        "resample": {u: "mededit" if u == default.resample_steps else f"mededit_u{u}"
                     for u in ABLATION_RESAMPLE_STEPS},
    }


def pixel_kernel(kernel_size: int, image_side: int) -> int:
    """MedEdit's dilation kernel in pixels of an ``image_side``-pixel slice, for ``kernel_size`` given in
    pixels of the thesis's 128-pixel slices (module docstring); at least 1."""
    return max(1, round(kernel_size * image_side / REFERENCE_SIZE))


def editable_region(spec: MethodSpec | str, mask: np.ndarray, brain_mask: np.ndarray) -> np.ndarray:
    """bool (N, H, W): the pixels a method's sampler may change, for conditioning masks and brain masks
    (N, H, W): naïve RePaint and Palette the mask (both keep the input outside it), MedEdit the mask dilated
    by its (scaled) kernel inside the brain, SDEdit the whole image (it regenerates it)."""
    spec = parse_method(spec) if isinstance(spec, str) else spec
    if spec.base in ("naive_repaint", "palette"):
        return np.asarray(mask) > 0
    if spec.base == "mededit":
        kernel = pixel_kernel(spec.kernel_size, np.shape(mask)[-1])
        region = mededit_inpainting_mask(np.asarray(mask, np.float32), np.asarray(brain_mask, np.float32), kernel)
        return np.asarray(region) > 0
    return np.ones(np.shape(mask), bool)


@dataclass(frozen=True)
class CounterfactualSet:
    """Counterfactuals of one method (module docstring)."""

    method: str
    prior_scan: np.ndarray
    mask_scan: np.ndarray
    prior: np.ndarray
    counterfactual: np.ndarray
    mask: np.ndarray
    brain_mask: np.ndarray
    evaluations: int

    @property
    def difference(self) -> np.ndarray:
        return self.counterfactual - self.prior


def image_seeds(seed: int, start: int, stop: int) -> list[int]:
    """Sampler seeds of images ``start..stop-1`` of a run with seed ``seed``: ``SeedSequence([seed, i])``."""
    return [int(np.random.SeedSequence([seed, i]).generate_state(1)[0]) for i in range(start, stop)]


def _edit_batch(spec: MethodSpec, eps_model: samplers.EpsModel, prior: torch.Tensor, mask: torch.Tensor,
                brain: torch.Tensor, seeds: list[int], schedule: NoiseSchedule, stride: int,
                sdedit_ratio: float, clip_x0: bool) -> samplers.SamplerResult:
    """One sampler call on a batch in [-1, 1] (B, 1, H, W) with masks (B, 1, H, W)."""
    common = {"schedule": schedule, "stride": stride, "seeds": seeds, "clip_x0": clip_x0}
    if spec.base == "mededit":
        kernel = pixel_kernel(spec.kernel_size, prior.shape[-1])
        return samplers.mededit(eps_model, prior, mask, brain, kernel_size=kernel,
                                resample_steps=spec.resample_steps, **common)
    if spec.base == "naive_repaint":
        return samplers.naive_repaint(eps_model, prior, mask, brain, resample_steps=spec.resample_steps, **common)
    if spec.base == "sdedit":
        return samplers.sdedit(eps_model, prior, mask, brain, ratio=sdedit_ratio, **common)
    return samplers.palette(eps_model, prior, mask, **common)


def run_method(spec: MethodSpec | str, eps_models: Mapping[str, samplers.EpsModel], triplets: Triplets, *,
               sdedit_ratio: float = 0.2, schedule: NoiseSchedule | None = None, stride: int = 1,
               batch_size: int = 16, seed: int = 0, clip_x0: bool = False,
               device: str | torch.device = "cpu") -> CounterfactualSet:
    """Counterfactuals of every triplet with one method (module docstring), ``batch_size`` images per
    sampler call on ``device`` (where the denoiser must live); ``clip_x0`` as the samplers' (off: eq. 3.1)."""
    spec = parse_method(spec) if isinstance(spec, str) else spec
    schedule = schedule or NoiseSchedule()
    if spec.network not in eps_models:
        raise KeyError(f"{spec.name} needs the {spec.network!r} denoiser; got {sorted(eps_models)}")
    eps_model = eps_models[spec.network]
    masks = triplets.pathology_mask(spec.box)
    outputs, evaluations = [], 0
    log.info("%s: %d triplets, batch %d, stride %d, device %s", spec.name, len(triplets), batch_size, stride, device)
    for start in range(0, len(triplets), batch_size):
        stop = min(start + batch_size, len(triplets))

        def tensor(array: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.asarray(array[start:stop], np.float32)[:, None]).to(device)

        result = _edit_batch(spec, eps_model, unit_to_diffusion(tensor(triplets.prior)), tensor(masks),
                             tensor(triplets.brain_mask), image_seeds(seed, start, stop), schedule, stride,
                             sdedit_ratio, clip_x0)
        outputs.append(diffusion_to_unit(result.images)[:, 0].float().cpu().numpy())
        evaluations += result.evaluations
    height, width = triplets.prior.shape[1:]
    counterfactual = np.concatenate(outputs) if outputs else np.zeros((0, height, width), np.float32)
    return CounterfactualSet(method=spec.name, prior_scan=triplets.prior_scan, mask_scan=triplets.mask_scan,
                             prior=triplets.prior.astype(np.float32), counterfactual=counterfactual.astype(np.float32),
                             mask=masks.astype(np.uint8), brain_mask=triplets.brain_mask.astype(np.uint8),
                             evaluations=evaluations)


def save_counterfactuals(path: str | Path, result: CounterfactualSet) -> None:
    """Write a :class:`CounterfactualSet` as .npz (keys: its fields, ``difference`` and ``format``)."""
    write_npz(path, {"format": np.str_(COUNTERFACTUALS_FORMAT), "method": np.str_(result.method),
                     "prior_scan": result.prior_scan.astype(str), "mask_scan": result.mask_scan.astype(str),
                     "prior": result.prior, "counterfactual": result.counterfactual, "mask": result.mask,
                     "brain_mask": result.brain_mask, "difference": result.difference.astype(np.float32),
                     "evaluations": np.int64(result.evaluations)})


def load_counterfactuals(path: str | Path) -> CounterfactualSet:
    """Read a file written by :func:`save_counterfactuals`."""
    arrays = read_npz(path, COUNTERFACTUALS_FORMAT)
    return CounterfactualSet(method=str(arrays["method"]), prior_scan=arrays["prior_scan"],
                             mask_scan=arrays["mask_scan"], prior=arrays["prior"],
                             counterfactual=arrays["counterfactual"], mask=arrays["mask"],
                             brain_mask=arrays["brain_mask"], evaluations=int(arrays["evaluations"]))
