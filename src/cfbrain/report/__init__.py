"""What `snakemake --report` shows: result tables as HTML pages (the report displays HTML, not markdown)."""
from cfbrain.report.tables import markdown_html

__all__ = ["markdown_html"]
