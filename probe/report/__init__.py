"""Reports: self-contained HTML pages that open offline.

- `html`: escaping, the stylesheet, the page shell, the inlined Vega bundle, atomic writing;
- `arrange`: a study result validated and arranged as (cell, [quantile,] seed, step) arrays;
- `intervals`: a variable's confidence interval (`<name>_ci`) found, named and drawn;
- `charts`: the Altair charts of a study page;
- `page`: `write_report`, one study result's page (its verdict handed in by the caller);
- `index`: `write_index`, every study's page and an index with one verdict per study;
- `analysis`: the page of `probe analyze`.
"""
from probe.report.html import file_name, write_page
from probe.report.index import write_index
from probe.report.page import write_report

__all__ = ["file_name", "write_index", "write_page", "write_report"]
