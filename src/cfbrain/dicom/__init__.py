"""DICOM header index, axial filter, pseudonymised export."""
