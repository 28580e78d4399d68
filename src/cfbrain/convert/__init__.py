"""DICOM -> NIfTI with dcm2niix and the post-conversion exclusion rules."""
