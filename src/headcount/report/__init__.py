"""The report: a study's tables -> figures, headline findings, HTML and Markdown.

Modules, from the bottom up: `format` (thresholds, numbers read from table cells, text
formatting); `aggregate` (curves averaged over seeds and other summaries that findings,
figures and sections share); `render` (the document and its Markdown/HTML); `canvas`
(figure canvases and saving); `findings`, `figures` and `sections` (the reference study's
headline findings, figures and sections); `companion` (the companion studies' sections and
findings, one module each); `appendix` (the closing sections); `assemble` (`write_report`:
puts them together); `run` (runs a study, or the demo, and writes its report).
"""
