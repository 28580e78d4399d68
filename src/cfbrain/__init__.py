"""cfbrain: clinical brain scans to counterfactual-imaging results."""
__version__ = "0.1.0"
