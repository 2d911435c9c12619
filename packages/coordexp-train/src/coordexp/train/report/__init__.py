"""Static visual reports of an evaluation: overlays, training curves, metrics (``coordexp report``)."""

from coordexp.train.report.build import ReportFiles, build_report, select_sample

__all__ = ["ReportFiles", "build_report", "select_sample"]
