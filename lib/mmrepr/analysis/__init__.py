"""Stage 5: tables, significance tests, plots and the HTML report."""
