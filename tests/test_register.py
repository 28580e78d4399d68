"""Template -> CT registration: SimpleITK accuracy on a synthetic head, FLIRT command and
matrix conventions, failures, backend dispatch, template choice and the midline."""
from __future__ import annotations

import stat

import nibabel as nib
import numpy as np
import pytest
from fsl.data.image import Image
from fsl.transform.flirt import readFlirt, writeFlirt
from nilearn.datasets import load_mni152_template
from scipy import ndimage
from scipy.spatial.transform import Rotation

from cfbrain.register import (InvalidImage, RegistrationFailed, SimpleITKSettings, TemplateChoiceError,
                              choose_template, flirt_to_world, midline_in_ct, read_template_to_ct,
                              register_template_to_ct, resolve_backend, world_to_flirt, write_template,
                              write_template_to_ct)
from cfbrain.register.fsl_backend import flirt_command
from cfbrain.register.midline import midline_from_affines
from cfbrain.register.templates import parse_templates

BRAIN_CENTRE_RAS = np.array([0.0, -18.0, 10.0])
CUBE_CORNERS_MM = np.array([[x, y, z] for x in (-30, 30) for y in (-30, 30) for z in (-30, 30)], dtype=float)
LANDMARKS_RAS = np.vstack([BRAIN_CENTRE_RAS, BRAIN_CENTRE_RAS + CUBE_CORNERS_MM])


# ---------------------------------------------------------------- synthetic data
def save_nifti(data: np.ndarray, affine: np.ndarray, path) -> str:
    image = nib.Nifti1Image(np.asarray(data, dtype=np.float32), affine)
    image.set_sform(affine, code=1)
    image.set_qform(affine, code=1)
    nib.save(image, str(path))
    return str(path)


def pseudo_ct_head(pad_mm: float = 24.0):
    """(hu (X, Y, Z) float32, voxel -> RAS affine): the 2 mm nilearn MNI152 brain in HU-like
    values (CSF 8, grey 40, white 28) inside a CSF rim (2 mm), skull (7 mm, 800 HU) and
    scalp (4 mm, 30 HU) grown from the brain mask by a distance transform; air -1000."""
    template = load_mni152_template(resolution=2)
    pad = int(pad_mm / 2)
    t1 = np.pad(template.get_fdata(dtype=np.float32), pad)
    affine = template.affine.copy()
    affine[:3, 3] -= pad * 2.0
    brain = ndimage.binary_fill_holes(ndimage.gaussian_filter(t1, 1.0) > 0.15)
    depth_mm = ndimage.distance_transform_edt(~brain) * 2.0
    hu = np.full(t1.shape, -1000.0, np.float32)
    hu[brain] = np.interp(t1[brain], [0.0, 0.3, 0.6, 0.9, 1.0], [8, 8, 40, 28, 28])
    for (inner, outer), value in {(0, 2): 8.0, (2, 9): 800.0, (9, 13): 30.0}.items():
        hu[(depth_mm > inner) & (depth_mm <= outer)] = value
    return hu, affine


def known_template_to_ct(rot_deg=(8.0, -6.0, 7.0), scale=(1.06, 0.94, 1.05), shift_mm=(12.0, -10.0, 8.0)):
    """(4, 4) template RAS -> CT RAS: scale, then rotate (x, y, z Euler), about the brain
    centre, then shift."""
    linear = Rotation.from_euler("xyz", rot_deg, degrees=True).as_matrix() @ np.diag(scale)
    affine = np.eye(4)
    affine[:3, :3] = linear
    affine[:3, 3] = BRAIN_CENTRE_RAS + np.asarray(shift_mm) - linear @ BRAIN_CENTRE_RAS
    return affine


def las_grid(spacing_mm, shape, centre_ras=BRAIN_CENTRE_RAS) -> np.ndarray:
    """Voxel -> RAS affine of a grid stored LAS (i runs to the patient's left) centred on
    ``centre_ras``, like dcm2niix output."""
    affine = np.diag([-spacing_mm[0], spacing_mm[1], spacing_mm[2], 1.0])
    affine[:3, 3] = centre_ras - affine[:3, :3] @ ((np.array(shape) - 1) / 2.0)
    return affine


def render_ct(hu, hu_affine, template_to_ct, ct_affine, shape, noise_hu=3.0, seed=0) -> np.ndarray:
    """The head seen by a CT of grid (``ct_affine``, ``shape``) through ``template_to_ct``
    (trilinear, scipy), plus Gaussian noise (HU)."""
    index = np.indices(shape).reshape(3, -1).T.astype(np.float64)
    to_head_voxel = np.linalg.inv(hu_affine) @ np.linalg.inv(template_to_ct) @ ct_affine
    source = index @ to_head_voxel[:3, :3].T + to_head_voxel[:3, 3]
    data = ndimage.map_coordinates(hu, source.T, order=1, cval=-1000.0).reshape(shape)
    return (data + np.random.default_rng(seed).normal(0.0, noise_hu, shape)).astype(np.float32)


def landmark_errors_mm(estimated: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """(9,) CT-space distance (mm) between two template -> CT mappings of the landmarks."""
    def apply(affine):
        return LANDMARKS_RAS @ affine[:3, :3].T + affine[:3, 3]
    return np.linalg.norm(apply(estimated) - apply(truth), axis=1)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("register")


@pytest.fixture(scope="module")
def template_path(work):
    return str(write_template("nilearn:mni152_2mm", work / "template.nii.gz"))


@pytest.fixture(scope="module")
def synthetic_ct(work):
    """(ct path, true template -> CT RAS affine) on a 3 mm LAS grid of 72 x 84 x 66."""
    hu, hu_affine = pseudo_ct_head()
    truth = known_template_to_ct()
    shape = (72, 84, 66)
    ct_affine = las_grid((3.0, 3.0, 3.0), shape)
    ct = render_ct(hu, hu_affine, truth, ct_affine, shape)
    return save_nifti(ct, ct_affine, work / "ct.nii.gz"), truth


@pytest.fixture(scope="module")
def registered(work, synthetic_ct, template_path):
    ct_path, truth = synthetic_ct
    result = register_template_to_ct(ct_path, template_path, work / "out" / "scan.mat",
                                     work / "out" / "scan_template_in_ct.nii.gz", backend="simpleitk", threads=1)
    return result, ct_path, truth


# ---------------------------------------------------------------- SimpleITK backend
def test_simpleitk_recovers_known_transform(registered, template_path):
    result, ct_path, truth = registered
    recovered = read_template_to_ct(result.matrix_path, template_path, ct_path)
    errors = landmark_errors_mm(recovered, truth)
    print(f"landmark error mean {errors.mean():.2f} mm, max {errors.max():.2f} mm, {result.seconds:.1f} s")
    assert errors.mean() < 2.0
    assert errors.max() < 3.0


def test_simpleitk_outputs(registered):
    result, ct_path, _ = registered
    assert result.backend == "simpleitk"
    assert result.converged and result.iterations > 0 and result.metric_value < 0 and result.seconds > 0
    assert "Step too small" in result.stop_condition
    ct, template_in_ct = nib.load(ct_path), nib.load(result.template_in_ct_path)
    assert template_in_ct.shape == ct.shape
    np.testing.assert_allclose(template_in_ct.affine, ct.affine, atol=1e-5)
    assert template_in_ct.get_fdata().max() > 0.5
    assert set(result.as_row()) >= {"backend", "metric_value", "iterations", "converged", "stop_condition", "seconds"}


def test_simpleitk_is_deterministic(registered, work, template_path):
    result, ct_path, _ = registered
    again = register_template_to_ct(ct_path, template_path, work / "again" / "scan.mat",
                                    work / "again" / "t.nii.gz", backend="simpleitk", threads=1)
    assert np.array_equal(readFlirt(str(again.matrix_path)), readFlirt(str(result.matrix_path)))
    assert again.metric_value == result.metric_value


def test_iteration_limit_is_a_failure_to_converge(synthetic_ct, template_path, tmp_path):
    with pytest.raises(RegistrationFailed) as failure:
        register_template_to_ct(synthetic_ct[0], template_path, tmp_path / "n.mat", tmp_path / "n.nii.gz",
                                backend="simpleitk", settings=SimpleITKSettings(max_iterations=2))
    assert failure.value.reason == "not_converged" and "Maximum number of iterations" in failure.value.detail
    assert not (tmp_path / "n.mat").exists()


def test_blank_ct_fails(work, template_path):
    blank = save_nifti(np.full((32, 32, 12), 40.0), las_grid((6.0, 6.0, 12.0), (32, 32, 12)), work / "blank.nii.gz")
    with pytest.raises(RegistrationFailed) as failure:
        register_template_to_ct(blank, template_path, work / "blank.mat", work / "blank_t.nii.gz", backend="simpleitk")
    assert failure.value.reason == "blank_ct"
    assert not (work / "blank.mat").exists()


def test_ct_without_skull_fails(work, template_path):
    noise = np.random.default_rng(1).uniform(0.0, 100.0, (32, 32, 12))
    path = save_nifti(noise, las_grid((6.0, 6.0, 12.0), (32, 32, 12)), work / "noise.nii.gz")
    with pytest.raises(RegistrationFailed) as failure:
        register_template_to_ct(path, template_path, work / "noise.mat", work / "noise_t.nii.gz", backend="simpleitk")
    assert failure.value.reason == "no_intracranial_region"


def with_nan(shape) -> np.ndarray:
    data = np.ones(shape)
    data[3, 4, 5] = np.nan
    return data


@pytest.mark.parametrize("data, message", [
    (np.zeros((16, 16)), "3-D"),
    (np.zeros((16, 16, 2)), "voxels per axis"),
    (with_nan((16, 16, 8)), "NaN"),
])
def test_invalid_ct_fails_clearly(work, template_path, data, message):
    path = save_nifti(data, np.diag([2.0, 2.0, 2.0, 1.0]), work / "invalid.nii.gz")
    with pytest.raises(RegistrationFailed, match=message) as failure:
        register_template_to_ct(path, template_path, work / "x.mat", work / "x.nii.gz", backend="simpleitk")
    assert failure.value.reason == "invalid_ct"


def test_invalid_template_is_a_configuration_error(work, synthetic_ct):
    bad_template = save_nifti(np.full((16, 16, 16), np.nan), np.eye(4), work / "bad_template.nii.gz")
    with pytest.raises(InvalidImage, match="template"):
        register_template_to_ct(synthetic_ct[0], bad_template, work / "y.mat", work / "y.nii.gz", backend="simpleitk")


def test_settings_reject_wall_clock_seed():
    with pytest.raises(ValueError, match="seed"):
        SimpleITKSettings(seed=0)


# ---------------------------------------------------------------- FSL backend
@pytest.fixture
def fake_fsl(tmp_path, monkeypatch):
    """FSLDIR pointing at a folder whose bin/flirt is a stand-in script (``script`` body)."""
    def install(script: str = "exit 0"):
        flirt = tmp_path / "fsl" / "bin" / "flirt"
        flirt.parent.mkdir(parents=True, exist_ok=True)
        flirt.write_text("#!/bin/sh\n" + script + "\n")
        flirt.chmod(flirt.stat().st_mode | stat.S_IXUSR)
        monkeypatch.setenv("FSLDIR", str(tmp_path / "fsl"))
        return flirt
    return install


def test_flirt_command(fake_fsl):
    flirt = fake_fsl()
    command = flirt_command("template.nii.gz", "ct.nii.gz", "scan.mat", "scan_template_in_ct.nii.gz")
    assert command[0] == str(flirt)
    options = dict(zip(command[1::2], command[2::2]))
    assert options == {"-in": "template.nii.gz", "-ref": "ct.nii.gz", "-omat": "scan.mat",
                       "-out": "scan_template_in_ct.nii.gz", "-cost": "corratio", "-dof": "12"}


STAND_IN_FLIRT = """while [ $# -gt 0 ]; do
  case "$1" in
    -ref) ref="$2"; shift;;
    -omat) omat="$2"; shift;;
    -out) out="$2"; shift;;
  esac; shift
done
echo "1 0 0 0" > "$omat"; echo "0 1 0 0" >> "$omat"; echo "0 0 1 0" >> "$omat"; echo "0 0 0 1" >> "$omat"
cp "$ref" "$out"
echo 'final cost 0.1'"""


def register_with_flirt(ct_path, template_path, folder, **kwargs):
    return register_template_to_ct(ct_path, template_path, folder / "scan.mat", folder / "scan_t.nii.gz", **kwargs)


def test_auto_backend_runs_flirt_when_fsldir_is_set(fake_fsl, synthetic_ct, template_path, tmp_path):
    fake_fsl(STAND_IN_FLIRT)
    result = register_with_flirt(synthetic_ct[0], template_path, tmp_path)
    assert result.backend == "fsl" and result.converged and result.metric_value is None
    assert "final cost" in result.stop_condition
    np.testing.assert_array_equal(readFlirt(str(tmp_path / "scan.mat")), np.eye(4))


def test_flirt_failure_is_a_registration_failure(fake_fsl, synthetic_ct, template_path, tmp_path):
    fake_fsl(STAND_IN_FLIRT + '\necho "flirt: cannot read input" >&2; exit 1')
    with pytest.raises(RegistrationFailed) as failure:
        register_with_flirt(synthetic_ct[0], template_path, tmp_path, backend="fsl")
    assert failure.value.reason == "backend_error" and "cannot read input" in failure.value.detail
    assert not (tmp_path / "scan.mat").exists() and not (tmp_path / "scan_t.nii.gz").exists()


def test_flirt_mirror_matrix_is_degenerate(fake_fsl, synthetic_ct, template_path, tmp_path):
    fake_fsl(STAND_IN_FLIRT.replace('echo "1 0 0 0"', 'echo "-1 0 0 0"'))
    with pytest.raises(RegistrationFailed) as failure:
        register_with_flirt(synthetic_ct[0], template_path, tmp_path, backend="fsl")
    assert failure.value.reason == "degenerate_transform"
    assert not (tmp_path / "scan.mat").exists() and not (tmp_path / "scan_t.nii.gz").exists()


@pytest.mark.filterwarnings("ignore:loadtxt")
def test_flirt_empty_matrix_is_a_registration_failure(fake_fsl, synthetic_ct, template_path, tmp_path):
    fake_fsl(STAND_IN_FLIRT.replace('echo "0 0 0 1" >> "$omat"', ': > "$omat"'))
    with pytest.raises(RegistrationFailed, match="malformed") as failure:
        register_with_flirt(synthetic_ct[0], template_path, tmp_path, backend="fsl")
    assert failure.value.reason == "backend_error"


def test_backend_dispatch():
    assert resolve_backend("auto", {"FSLDIR": "/opt/fsl"}) == "fsl"
    assert resolve_backend("auto", {}) == "simpleitk"
    assert resolve_backend("auto", {"FSLDIR": ""}) == "simpleitk"
    assert resolve_backend("simpleitk", {"FSLDIR": "/opt/fsl"}) == "simpleitk"
    assert resolve_backend("fsl", {}) == "fsl"
    with pytest.raises(ValueError):
        resolve_backend("ants", {})


# ---------------------------------------------------------------- FLIRT matrix conventions
@pytest.fixture
def image_pair(tmp_path):
    """(template, CT) fslpy images: RAS 2 mm (positive determinant, FSL flips x) and LAS
    0.5 x 0.5 x 5 mm (negative determinant, no flip)."""
    template = save_nifti(np.zeros((20, 24, 18)), np.array(
        [[2.0, 0, 0, -20], [0, 2.0, 0, -24], [0, 0, 2.0, -18], [0, 0, 0, 1]]), tmp_path / "tpl.nii.gz")
    ct_affine = las_grid((0.5, 0.5, 5.0), (64, 64, 10), np.zeros(3))
    ct = save_nifti(np.zeros((64, 64, 10)), ct_affine, tmp_path / "ct.nii.gz")
    return Image(template), Image(ct)


def test_matrix_round_trip(image_pair, tmp_path):
    template, ct = image_pair
    world = known_template_to_ct()
    path = tmp_path / "round.mat"
    writeFlirt(world_to_flirt(world, template, ct), str(path))
    np.testing.assert_allclose(flirt_to_world(readFlirt(str(path)), template, ct), world, atol=1e-9)


def test_hand_made_flirt_matrix(tmp_path):
    # source LAS 2 mm: world x = 100 - 2i = 100 - fsl_x; reference LAS 1 mm: world x = 50 - fsl_x, y = fsl_y - 10
    source = Image(save_nifti(np.zeros((10, 10, 10)), np.array(
        [[-2.0, 0, 0, 100], [0, 2, 0, 0], [0, 0, 2, 0], [0, 0, 0, 1]]), tmp_path / "src.nii.gz"))
    reference = Image(save_nifti(np.zeros((20, 20, 20)), np.array(
        [[-1.0, 0, 0, 50], [0, 1, 0, -10], [0, 0, 1, 0], [0, 0, 0, 1]]), tmp_path / "ref.nii.gz"))
    flirt = np.array([[1.5, 0, 0, 3], [0, 1.5, 0, 4], [0, 0, 1.5, 5], [0, 0, 0, 1]])
    expected = np.array([[1.5, 0, 0, -103], [0, 1.5, 0, -6], [0, 0, 1.5, 5], [0, 0, 0, 1]])
    np.testing.assert_allclose(flirt_to_world(flirt, source, reference), expected, atol=1e-9)
    # a RAS source is x-flipped in FSL coordinates: fsl_x = (9 - i) * 2 = 18 - world x
    ras_source = Image(save_nifti(np.zeros((10, 10, 10)), np.diag([2.0, 2.0, 2.0, 1.0]), tmp_path / "ras.nii.gz"))
    shift = np.eye(4)
    shift[:3, 3] = [32.0, -10.0, 0.0]
    np.testing.assert_allclose(flirt_to_world(np.eye(4), ras_source, reference), shift, atol=1e-9)


def test_sitk_lps_transform_to_world_ras():
    import SimpleITK as sitk

    from cfbrain.register.flirt_matrix import moving_to_fixed_ras, sitk_fixed_to_moving_lps

    truth = known_template_to_ct()
    lps_from_ras = np.diag([-1.0, -1.0, 1.0, 1.0])
    fixed_to_moving_lps = lps_from_ras @ np.linalg.inv(truth) @ lps_from_ras
    transform = sitk.AffineTransform(3)
    transform.SetCenter([5.0, -7.0, 3.0])
    linear = fixed_to_moving_lps[:3, :3]
    transform.SetMatrix(linear.ravel().tolist())
    transform.SetTranslation((fixed_to_moving_lps[:3, 3] - [5.0, -7.0, 3.0] + linear @ [5.0, -7.0, 3.0]).tolist())
    np.testing.assert_allclose(sitk_fixed_to_moving_lps(transform), fixed_to_moving_lps, atol=1e-9)
    np.testing.assert_allclose(moving_to_fixed_ras(sitk_fixed_to_moving_lps(transform)), truth, atol=1e-9)
    ct_point_lps = np.array([10.0, 20.0, 30.0])
    template_point_lps = np.array(transform.TransformPoint(ct_point_lps.tolist()))
    template_point_ras = template_point_lps * [-1, -1, 1]
    np.testing.assert_allclose(truth[:3, :3] @ template_point_ras + truth[:3, 3], ct_point_lps * [-1, -1, 1], atol=1e-9)


# ---------------------------------------------------------------- templates
THESIS_TEMPLATES = [{"max_age": 72, "path": "young.nii.gz"}, {"min_age": 73, "path": "old.nii.gz"}]


def test_choose_template_thesis_split():
    assert choose_template(72, THESIS_TEMPLATES) == "young.nii.gz"
    assert choose_template(73, THESIS_TEMPLATES) == "old.nii.gz"
    assert choose_template(18, THESIS_TEMPLATES) == "young.nii.gz"
    with pytest.raises(TemplateChoiceError, match="72.5"):
        choose_template(72.5, THESIS_TEMPLATES)
    with pytest.raises(TemplateChoiceError, match="age unknown"):
        choose_template(None, THESIS_TEMPLATES)


def test_default_template_serves_every_age():
    assert choose_template(None, [{"path": "nilearn:mni152"}]) == "nilearn:mni152"
    assert choose_template(95, [{"path": "nilearn:mni152"}]) == "nilearn:mni152"


@pytest.mark.parametrize("entries, message", [
    ([{"max_age": 72, "path": "a"}, {"min_age": 75, "path": "b"}], "no template"),
    ([{"max_age": 72, "path": "a"}, {"min_age": 70, "path": "b"}], "overlap"),
    ([{"min_age": 80, "max_age": 70, "path": "a"}], "min_age > max_age"),
    ([{"age": 70, "path": "a"}], "needs 'path'"),
    ([], "empty"),
])
def test_template_list_errors(entries, message):
    with pytest.raises(TemplateChoiceError, match=message):
        parse_templates(entries)


def test_write_builtin_template(tmp_path):
    path = write_template("nilearn:mni152_2mm", tmp_path / "mni.nii.gz")
    assert nib.load(str(path)).shape == (99, 117, 95)
    with pytest.raises(TemplateChoiceError):
        write_template("nilearn:colin27", tmp_path / "x.nii.gz")


# ---------------------------------------------------------------- midline
MIDLINE_CT_SHAPE = (64, 64, 10)
MIDLINE_CT_AFFINE = las_grid((0.5, 0.5, 5.0), MIDLINE_CT_SHAPE, np.array([3.0, 4.0, 0.0]))


def _world_x_to_lr_index(x_mm: np.ndarray) -> np.ndarray:
    return (MIDLINE_CT_AFFINE[0, 3] - x_mm) / 0.5  # LAS: world x = x0 - 0.5 i


def test_midline_for_turned_and_shifted_head():
    theta, shift_x = np.radians(10.0), 12.0
    template_to_ct = np.eye(4)
    template_to_ct[:3, :3] = Rotation.from_euler("z", theta).as_matrix()
    template_to_ct[0, 3] = shift_x
    midline = midline_from_affines(template_to_ct, MIDLINE_CT_AFFINE, MIDLINE_CT_SHAPE)
    assert (midline.lr_axis, midline.ap_axis, midline.slice_axis) == (0, 1, 2)
    centre_row_y = MIDLINE_CT_AFFINE[1, 3] + 0.5 * (MIDLINE_CT_SHAPE[1] - 1) / 2
    expected = _world_x_to_lr_index(np.full(10, shift_x - centre_row_y * np.tan(theta)))
    np.testing.assert_allclose(midline.lr_index, expected, atol=1e-9)


def test_midline_for_tilted_head_moves_with_slice():
    phi = np.radians(8.0)
    template_to_ct = np.eye(4)
    template_to_ct[:3, :3] = Rotation.from_euler("y", phi).as_matrix()
    midline = midline_from_affines(template_to_ct, MIDLINE_CT_AFFINE, MIDLINE_CT_SHAPE)
    slice_z = MIDLINE_CT_AFFINE[2, 3] + 5.0 * np.arange(10)
    np.testing.assert_allclose(midline.lr_index, _world_x_to_lr_index(slice_z * np.tan(phi)), atol=1e-9)
    right_of_plane = np.array([midline.lr_index[5] - 2.0, 31.5, 5.0, 1.0])  # LAS: lower i = patient right
    assert midline.plane_voxel @ right_of_plane > 0


def test_midline_from_files(tmp_path):
    template = save_nifti(np.zeros((20, 24, 18)), np.diag([2.0, 2.0, 2.0, 1.0]), tmp_path / "tpl.nii.gz")
    ct = save_nifti(np.zeros(MIDLINE_CT_SHAPE), MIDLINE_CT_AFFINE, tmp_path / "ct.nii.gz")
    template_to_ct = known_template_to_ct()
    matrix = write_template_to_ct(template_to_ct, template, ct, tmp_path / "scan.mat")
    from_files = midline_in_ct(matrix, template, ct)
    direct = midline_from_affines(template_to_ct, MIDLINE_CT_AFFINE, MIDLINE_CT_SHAPE)
    np.testing.assert_allclose(from_files.lr_index, direct.lr_index, atol=1e-6)
    np.testing.assert_allclose(from_files.plane_voxel, direct.plane_voxel, atol=1e-9)

