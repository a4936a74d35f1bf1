"""The report: a study's tables -> figures, headline findings, HTML and Markdown.

`assemble` builds the report from the tables; `aggregate` groups and summarises curves;
`findings`, `figures` and `sections` hold the reference study's parts and `companion` the
companion studies'; `render` writes HTML/Markdown; `format` formats numbers and text;
`run` runs a study (or the demo) and writes its report.
"""
