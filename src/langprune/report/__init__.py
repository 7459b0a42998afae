"""Tables, heatmaps and the paper comparison, made from the tidy metrics CSV.

``tables.write_tables`` (paper Tables 1, 2, 4 layouts + paper comparison),
``figures.write_figures`` (calibration x evaluation heatmaps) and
``figures.write_summary`` (how often the target language is the best calibration).
"""
