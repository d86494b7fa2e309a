"""Study stage: study YAMLs expanded into runs (plan), launched one process each (runner), summarised in tables
(tables) and a report with plots (report), and published as a Hub dataset (publish)."""
