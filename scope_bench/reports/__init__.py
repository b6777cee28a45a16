"""Paper-style tables (Markdown, LaTeX) and plots from run dirs; see report.write_report."""
